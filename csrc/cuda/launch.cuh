// The CUDA launch recipe every lenet_ext kernel follows, in one place:
//
//   * the op entry point takes a c10::cuda::CUDAGuard on its input's device;
//   * it returns early when the output is empty (a zero-sized grid is a launch error);
//   * grids are ceil_div(work, block), capped, and kernels walk their work with a grid-stride loop, so
//     any int64 amount of work is covered;
//   * kernels launch on the current stream (c10::cuda::getCurrentCUDAStream), never the default one;
//   * C10_CUDA_KERNEL_LAUNCH_CHECK() follows every <<<>>>.
//
// Index width, accumulation type and the kernels' geometry: geom.h.
//
// This header is for .cu files only. It avoids ATen/cuda/CUDAContext.h, which pulls in cuSPARSE and cuBLAS
// headers that some CUDA toolkits lack; the c10/cuda headers below are all a launch needs.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

#include "cuda/geom.h"

namespace lenet_ext {
namespace cuda {

// One block size for the elementwise-style kernels (pooling, reductions): 8 warps.
constexpr int kBlock = 256;

// Grid-stride loops cover the rest; more blocks than this only add scheduling overhead.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

inline unsigned int grid_for(int64_t work, int block = kBlock) {
  return static_cast<unsigned int>(std::min(ceil_div(work, block), kMaxBlocks));
}

inline cudaStream_t current_stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

}  // namespace cuda
}  // namespace lenet_ext
