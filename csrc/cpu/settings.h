// The CPU settings that lenet_ext.backends wraps (the schemas are in csrc/ops.cpp; cpu/settings.cpp
// registers them). Each set(-1) reads the setting, set(v) changes it; each returns the previous value.
#pragma once

#include <cstdint>

namespace lenet_ext {
namespace cpu {

// cpu/conv2d.cpp: the forced conv algorithm (0 auto, 1 direct, 2 im2col, 3 winograd, 4 reference),
// and whether new shapes time their candidates (lenet_ext.backends.conv_algorithm, .autotune).
int64_t set_conv_algorithm(int64_t algorithm);
int64_t set_conv_benchmark(int64_t enabled);

// cpu/pool2d.cpp: the forced pooling algorithm (0 auto, 1 reference), every pass
// (lenet_ext.backends.pool_algorithm).
int64_t set_pool_algorithm(int64_t algorithm);

// cpu/dispatch.cpp: the instruction-set level the tile kernels run at, and whether this CPU runs a level
// (lenet_ext.backends.cpu_isa).
int64_t set_cpu_isa(int64_t level);
bool cpu_isa_supported(int64_t level);

// cpu/memory.cpp: whether fresh result buffers are advised as transparent huge pages (0 on, 1 off)
// (lenet_ext.backends.huge_pages).
int64_t set_huge_pages(int64_t choice);

}  // namespace cpu
}  // namespace lenet_ext
