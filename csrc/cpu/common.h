// Helpers shared by the CPU kernels: the dtype they compute in, and how a batch is split across threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

namespace lenet_ext {

// A dense copy in `fmt` (or the tensor itself) in the dtype the kernels compute in: the 16-bit floats
// are computed in float32.
// (Tests first, then converts: a small layer's call should not go through the dispatcher for nothing.)
inline at::Tensor to_compute(const at::Tensor& t, at::MemoryFormat fmt = at::MemoryFormat::Contiguous) {
  const auto dt = t.scalar_type();
  if (dt == at::kBFloat16 || dt == at::kHalf) {
    return t.to(at::kFloat).contiguous(fmt);
  }
  return t.contiguous(fmt);
}

// A result computed in to_compute's dtype, as t.to(dtype, fmt): itself when that aliases (the same
// test as ATen's to_will_alias), without the dispatcher.
inline at::Tensor as_result(const at::Tensor& t, at::ScalarType dtype, at::MemoryFormat fmt) {
  if (t.scalar_type() == dtype && t.suggest_memory_format() == fmt) {
    return t;
  }
  return t.to(dtype, false, false, fmt);
}

// Calls f(std::integral_constant<int, V>{}) for the V among Vs that equals v, else with 0, meaning "any
// value, read at run time": how a loop gets its common small values (a stride of 1 or 2, a window 2
// wide) as compile-time constants, the cases it vectorises.
template <int... Vs, typename F>
void with_constant_or_any(int64_t v, const F& f) {
  bool called = false;
  ((!called && v == Vs ? (f(std::integral_constant<int, Vs>{}), called = true) : false), ...);
  if (!called) {
    f(std::integral_constant<int, 0>{});
  }
}

// Worker threads start without the calling thread's thread-local dispatch state. The caller is inside
// an operator's kernel, below autograd; a worker that calls ATen holds one of these to be there too.
struct BelowAutograd {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autograd_dispatch_keyset_with_ADInplaceOrView};
};

// Runs worker() on each of the threads; the workers take items [0, n) one at a time from a shared counter
// (queue.pop), so a thread that runs slower (a bigger item, or a core shared with another machine's
// load) takes fewer, where a static split would make every thread wait for the slowest. Each worker sets
// up its own buffers once. Only for independent items: which thread computes an item must not change
// its result.
class WorkQueue {
 public:
  explicit WorkQueue(int64_t n) : n_(n) {}
  bool pop(int64_t& item) {
    item = next_.fetch_add(1, std::memory_order_relaxed);
    return item < n_;
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t n_;
};

template <typename F>
void run_workers(int64_t items, const F& worker) {
  const int64_t workers = std::min<int64_t>(items, at::in_parallel_region() ? 1 : at::get_num_threads());
  if (workers <= 1) {
    worker();
    return;
  }
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) { worker(); });
}

// The batch is cut into fixed slices, about four per thread, when there are at least as many images as
// threads; otherwise it is one slice and the work inside each image uses the threads. Threads take slices
// from a queue (see WorkQueue), so a slower thread takes fewer. A kernel that keeps one partial sum per
// slice passes its size, which caps the slices at 64 MiB of partials (but never below one per thread).
// A kernel whose unit of work spans several images (im2col's blocks of columns) passes how many as
// `min_size`, so that no slice is narrower than one unit: on small maps (ResNet's 7 x 7) one image per
// slice would cut a 252-column matrix product into four of 63. Slices depend only on the batch size and
// the thread count, and partials are merged in slice order, so results are bitwise reproducible for a
// given thread count.
struct BatchSlices {
  int64_t size;   // images per slice
  int64_t count;  // slices

  explicit BatchSlices(int64_t batch, int64_t partial_bytes = 0, int64_t min_size = 1) {
    const int64_t threads = at::get_num_threads();
    int64_t wanted = 1;
    if (batch >= threads && threads > 1 && !at::in_parallel_region()) {
      constexpr int64_t kPartialBudget = int64_t{64} << 20;
      const int64_t cap = partial_bytes > 0 ? std::max(threads, kPartialBudget / partial_bytes) : 4 * threads;
      wanted = std::min({batch, 4 * threads, cap});
    }
    size = std::max<int64_t>({1, min_size, (batch + wanted - 1) / wanted});
    count = std::max<int64_t>(1, (batch + size - 1) / size);
  }
};

// Calls f(slice, n0, n1) for each slice [n0, n1) of the batch, on the threads when there is more than one,
// each of them BelowAutograd for the ATen calls the kernels make there.
template <typename F>
void for_each_batch_slice(int64_t batch, const BatchSlices& slices, const F& f) {
  if (batch == 0) {
    return;
  }
  if (slices.count == 1) {
    f(int64_t{0}, int64_t{0}, batch);
    return;
  }
  WorkQueue queue(slices.count);
  run_workers(slices.count, [&] {
    const BelowAutograd below_autograd;
    for (int64_t s; queue.pop(s);) {
      f(s, s * slices.size, std::min(batch, (s + 1) * slices.size));
    }
  });
}

}  // namespace lenet_ext
