// Helpers shared by the CPU kernels: dtype policy and how a batch is split across threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>

namespace lenet_ext {

// The NotImplementedError that torch's own dtype dispatch raises for a dtype a kernel does not compute,
// naming the kernel.
inline void check_dtype_supported(const char* kernel, const at::Tensor& t, bool supported) {
  TORCH_CHECK_NOT_IMPLEMENTED(supported, "\"", kernel, "\" not implemented for '", c10::toString(t.scalar_type()),
                              "'");
}

// Convolution computes float32 and float64 as they are and bfloat16 in float32.
inline void check_cpu_floating(const char* kernel, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  check_dtype_supported(kernel, t, dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16);
}

// A dense copy in `fmt` (or the tensor itself) in the dtype the kernels compute in: the 16-bit floats
// are computed in float32.
inline at::Tensor to_compute(const at::Tensor& t, at::MemoryFormat fmt = at::MemoryFormat::Contiguous) {
  const auto dt = t.scalar_type();
  return t.to(dt == at::kBFloat16 || dt == at::kHalf ? at::kFloat : dt).contiguous(fmt);
}

// The batch is cut into fixed slices, one per thread, when there are at least as many images as
// threads; otherwise it is one slice and the work inside each image uses the threads. Slices depend
// only on the batch size and thread count, so per-slice reductions merge deterministically.
struct BatchSlices {
  int64_t size;   // images per slice
  int64_t count;  // slices

  explicit BatchSlices(int64_t batch) {
    const int64_t threads = at::get_num_threads();
    const int64_t wanted = batch >= threads && !at::in_parallel_region() ? threads : 1;
    size = std::max<int64_t>(1, (batch + wanted - 1) / wanted);
    count = std::max<int64_t>(1, (batch + size - 1) / size);
  }
};

// Calls f(slice, n0, n1) for each slice [n0, n1) of the batch, in parallel when there is more than one.
// The calling thread is below autograd (we are inside an operator's kernel); its worker threads start
// without that thread-local state, so the guard restores it for the ATen calls the kernels make there.
template <typename F>
void for_each_batch_slice(int64_t batch, const BatchSlices& slices, const F& f) {
  if (batch == 0) {
    return;
  }
  if (slices.count == 1) {
    f(int64_t{0}, int64_t{0}, batch);
    return;
  }
  at::parallel_for(0, slices.count, 1, [&](int64_t s0, int64_t s1) {
    c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
    for (int64_t s = s0; s < s1; ++s) {
      f(s, s * slices.size, std::min(batch, (s + 1) * slices.size));
    }
  });
}

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

}  // namespace lenet_ext
