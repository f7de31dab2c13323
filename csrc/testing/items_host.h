// The host runner of the CUDA kernels' work items: the same item code the GPU runs (pool2d_items.h,
// conv2d_items.h), looped over on the CPU, so tests check its index arithmetic on machines without a GPU.
// Its GPU twin is cuda/items.cuh; both take the same two kinds of work:
//
//   run(op, n)               item op(i) for every i < n, each independent of the others;
//   run.block_sums(op, n)    for each block b < n, every thread t < Op::kThreads computes Op::kValues
//                            partial sums (op.thread_sums), the block adds them up, and op.store(b, r, s)
//                            writes sum r. The GPU adds within warps, then across them; the host adds
//                            thread after thread. Both orders are fixed, so each runner is deterministic.
//
// What only a GPU can check is the launch itself: grid, stream, device memory, and the GPU's order of
// the block sums.
#pragma once

#include <cstdint>

namespace lenet_ext {

struct HostRunner {
  bool int64_index = false;  // force the int64 items, to test their code on small tensors

  template <typename Op>
  void operator()(const Op& op, int64_t n) const {
    using index_t = typename Op::index_type;
    for (int64_t i = 0; i < n; ++i) {
      op(static_cast<index_t>(i));
    }
  }

  template <typename Op>
  void block_sums(const Op& op, int64_t blocks) const {
    using index_t = typename Op::index_type;
    using acc = typename Op::acc_type;
    for (int64_t b = 0; b < blocks; ++b) {
      acc total[Op::kValues] = {};
      for (int t = 0; t < Op::kThreads; ++t) {
        acc part[Op::kValues];
        op.thread_sums(static_cast<index_t>(b), t, part);
        for (int r = 0; r < Op::kValues; ++r) {
          total[r] += part[r];
        }
      }
      for (int r = 0; r < Op::kValues; ++r) {
        op.store(static_cast<index_t>(b), r, total[r]);
      }
    }
  }
};

}  // namespace lenet_ext
