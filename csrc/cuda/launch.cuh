// The CUDA launch recipe every lenet_ext kernel follows, in one place:
//
//   * the op entry point takes a c10::cuda::CUDAGuard on its input's device;
//   * it returns early when the output is empty (a zero-sized grid is a launch error);
//   * grids are ceil_div(work, block), capped, and kernels walk their work with a grid-stride loop, so
//     any int64 amount of work is covered;
//   * kernels launch on the current stream (c10::cuda::getCurrentCUDAStream), never the default one;
//   * C10_CUDA_KERNEL_LAUNCH_CHECK() follows every <<<>>>.
//
// Index width: kernels are templated on index_t. int32 is used when every tensor and every window
// sum fits comfortably (fits_int32), because 64-bit division is several times slower on the GPU;
// otherwise int64, so sizes past 2^31 stay correct.
//
// This header is for .cu files only; it avoids ATen/cuda/CUDAContext.h (see DESIGN.md).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "shape.h"

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

// Half types are computed in float; float and double in themselves.
template <typename scalar_t>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename scalar_t>
using acc_t = typename Acc<scalar_t>::type;

// True when int32 index math is safe: every value (tensor numels, window sums) is below 2^30, which
// leaves headroom for the sum or difference of two of them.
inline bool fits_int32(std::initializer_list<int64_t> values) {
  constexpr int64_t limit = int64_t{1} << 30;
  return std::all_of(values.begin(), values.end(), [](int64_t v) { return v >= 0 && v < limit; });
}

// The largest value a window's arithmetic can reach in one dimension: input plus both paddings, plus
// the whole dilated kernel, plus one stride.
inline int64_t window_reach(const Window2d& w, int i) {
  return w.in[i] + w.pad[i] + w.pad_end[i] + (w.kernel[i] - 1) * w.dilation[i] + w.stride[i] + w.out[i];
}

// Calls f(index_t{}) with int32_t when `small`, else int64_t; f is a generic lambda.
template <typename F>
void dispatch_index(bool small, const F& f) {
  if (small) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

// min/max for either index type, on host and device alike.
template <typename T>
C10_HOST_DEVICE inline T imin(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
C10_HOST_DEVICE inline T imax(T a, T b) {
  return a > b ? a : b;
}

}  // namespace cuda
}  // namespace lenet_ext
