// Fresh buffers for the CPU kernels' results.
//
// A result the kernel writes in full (an output, a gradient, a scratch buffer) is allocated by at::empty
// and first touched by the kernel. On Linux, the first touch of each 4 KiB page is a page fault in
// which the kernel zeroes the page: for a 51 MB map (16 x 64 x 112 x 112 floats) that is about 12,500
// faults, and they cost an allocating copy (x.clone()) 27-34 ms against 9 ms for a copy into a buffer
// already touched (Intel Xeon VM, 2 threads, torch 2.13). Advised as transparent huge pages before the
// first touch, the same buffer faults 2 MiB at a time: the allocating copy took 15 ms. torch's own
// allocator does the same when THP_MEM_ALLOC_ENABLE=1 is set (c10/core/alloc_cpu.cpp); we advise only
// the buffers we allocate and fill ourselves.
//
// The advice is a hint: where the kernel has no transparent huge pages (or they are "never"), nothing
// changes. lenet_ext.backends.huge_pages("off") turns it off (cpu/settings.h).
#pragma once

#include <ATen/ATen.h>

namespace lenet_ext {
namespace cpu {

// Advises the whole huge pages inside t's bytes, if t is large enough to hold one and the setting is on.
void advise_huge_pages(const at::Tensor& t);

// at::empty, advised before its first touch: for buffers the caller then writes in full.
inline at::Tensor empty_fresh(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t);
  return t;
}

// at::zeros as empty_fresh, then zeroed (the zeroing is the first touch).
inline at::Tensor zeros_fresh(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return empty_fresh(sizes, options).zero_();
}

}  // namespace cpu
}  // namespace lenet_ext
