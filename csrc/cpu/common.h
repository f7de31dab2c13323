// Helpers shared by the CPU kernels: dtype policy and how a batch is split across threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace lenet_ext {

// float32 and float64 are computed as they are; bfloat16 is computed in float32. Anything else gets
// the NotImplementedError that torch's own dtype dispatch raises, naming the kernel.
inline void check_cpu_floating(const char* kernel, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_NOT_IMPLEMENTED(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16, "\"", kernel,
                              "\" not implemented for '", c10::toString(dt), "'");
}

// A contiguous NCHW copy (or the tensor itself) in the dtype the kernels compute in.
inline at::Tensor to_compute(const at::Tensor& t) {
  const auto dt = t.scalar_type() == at::kBFloat16 ? at::kFloat : t.scalar_type();
  return t.to(dt).contiguous();
}

// The batch is cut into fixed slices, one per thread, when there are at least as many images as
// threads; otherwise it is one slice and the work inside each image uses the threads. Slices depend
// only on the batch size and thread count, so per-slice reductions merge deterministically.
inline int64_t batch_slice_size(int64_t batch) {
  const int64_t threads = at::get_num_threads();
  const int64_t slices = batch >= threads && !at::in_parallel_region() ? threads : 1;
  return std::max<int64_t>(1, (batch + slices - 1) / slices);
}

inline int64_t batch_slice_count(int64_t batch) {
  const int64_t size = batch_slice_size(batch);
  return std::max<int64_t>(1, (batch + size - 1) / size);
}

inline int64_t batch_slice_of(int64_t first_image, int64_t batch) {
  return first_image / batch_slice_size(batch);
}

// Calls f(n0, n1) for each slice [n0, n1) of the batch, in parallel when there is more than one.
template <typename F>
void for_each_batch_slice(int64_t batch, const F& f) {
  const int64_t size = batch_slice_size(batch);
  const int64_t slices = batch_slice_count(batch);
  if (batch == 0) {
    return;
  }
  if (slices == 1) {
    f(0, batch);
    return;
  }
  at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      f(s * size, std::min(batch, (s + 1) * size));
    }
  });
}

}  // namespace lenet_ext
