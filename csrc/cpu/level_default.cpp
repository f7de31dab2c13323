// The tile kernels at the build's baseline level: SSE2 on x86-64, NEON on aarch64, portable vector
// code elsewhere. Every CPU that runs the extension runs this level.
#define LENET_CPU_LEVEL isa_default
#define LENET_CPU_LEVEL_ENUM Level::kDefault
#define LENET_CPU_LEVEL_SHAPE kDefaultShape
#include "cpu/tiles.h"

namespace lenet_ext {
namespace cpu {

const LevelKernels& kernels_default() {
  static constexpr LevelKernels k{Level::kDefault, "default", kDefaultShape, isa_default::table<float>(),
                                  isa_default::table<double>()};
  return k;
}

}  // namespace cpu
}  // namespace lenet_ext
