// The GPU runner of the CUDA kernels' work items (pool2d_items.h, conv2d_items.h). Its host twin, and
// what the two kinds of work mean, are in testing/items_host.h.
//
//   run(op, n)              one thread per item, in a grid-stride loop;
//   run.block_sums(op, n)   one thread block of Op::kThreads per block of work; each thread's kValues
//                           sums are added within its warp (shuffles, a fixed tree), the warps' totals
//                           in shared memory in warp order: no atomics, deterministic.
#pragma once

#include <limits>

#include "cuda/launch.cuh"

namespace lenet_ext {
namespace cuda {

template <typename Op, typename index_t>
__global__ void run_items_kernel(Op op, index_t n) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    op(i);
  }
}

constexpr int kWarp = 32;

template <typename Op>
__global__ void __launch_bounds__(Op::kThreads) run_block_sums_kernel(Op op) {
  using acc = typename Op::acc_type;
  using index_t = typename Op::index_type;
  static_assert(Op::kThreads % kWarp == 0, "whole warps per block");
  constexpr int kWarps = Op::kThreads / kWarp;
  __shared__ acc warp_sums[kWarps][Op::kValues];

  const index_t block = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  acc part[Op::kValues];
  op.thread_sums(block, tid, part);
#pragma unroll
  for (int r = 0; r < Op::kValues; ++r) {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      part[r] += __shfl_down_sync(0xffffffffu, part[r], offset);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < Op::kValues; ++r) {
      warp_sums[warp][r] = part[r];
    }
  }
  __syncthreads();
  for (int r = tid; r < Op::kValues; r += Op::kThreads) {
    acc total = 0;
    for (int w = 0; w < kWarps; ++w) {
      total += warp_sums[w][r];
    }
    op.store(block, r, total);
  }
}

}  // namespace cuda

struct CudaRunner {
  bool int64_index = false;  // int64 only where int32 could overflow

  template <typename Op>
  void operator()(const Op& op, int64_t n) const {
    using index_t = typename Op::index_type;
    if (n <= 0) {
      return;  // a grid of no blocks is a launch error
    }
    cuda::run_items_kernel<Op, index_t>
        <<<cuda::grid_for(n), cuda::kBlock, 0, cuda::current_stream()>>>(op, static_cast<index_t>(n));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename Op>
  void block_sums(const Op& op, int64_t blocks) const {
    if (blocks <= 0) {
      return;
    }
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "lenet_ext: the problem needs ", blocks,
                " thread blocks, more than CUDA's grid allows");
    cuda::run_block_sums_kernel<Op>
        <<<static_cast<unsigned int>(blocks), Op::kThreads, 0, cuda::current_stream()>>>(op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace lenet_ext
