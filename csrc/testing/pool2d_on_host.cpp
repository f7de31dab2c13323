// The test operator that runs the CUDA pooling operators' bodies and work items on the host
// (cuda/pool2d_items.h), so tests check their index arithmetic without a GPU.
#include <ATen/core/Tensor.h>

#include "cuda/pool2d_bodies.h"
#include "testing/host_ops.h"
#include "testing/items_host.h"

namespace lenet_ext {
namespace testing {

// The CUDA pooling operator named `op`, computed on CPU tensors by its own work items (pool2d_items.h).
// Returns (output or input gradient, indices for max_pool2d_forward).
std::tuple<at::Tensor, std::optional<at::Tensor>> cuda_pool2d_on_host(
    c10::string_view op,
    const at::Tensor& input,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& indices,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode,
    bool count_include_pad,
    std::optional<int64_t> divisor_override,
    bool native_nhwc,
    bool int64_index,
    bool planar_runs) {
  constexpr const char* name = "lenet_ext_testing.cuda_pool2d_on_host";
  TORCH_CHECK(input.device().is_cpu(), name, ": expected CPU tensors");
  const HostRunner run{int64_index};
  const pool::Kernels kernels{native_nhwc, planar_runs};
  auto needs = [&](const std::optional<at::Tensor>& t, const char* what) -> const at::Tensor& {
    TORCH_CHECK(t.has_value(), name, ": ", op, " needs ", what);
    return *t;
  };
  if (op == "max_pool2d_forward" || op == "max_pool2d_forward_values") {
    const bool with_indices = op == "max_pool2d_forward";
    auto [out, ind] = pool::max_pool2d_forward_impl(run, with_indices, input, kernel_size, stride, padding,
                                                    dilation, ceil_mode, kernels);
    return {out, with_indices ? std::optional<at::Tensor>(ind) : std::nullopt};
  }
  if (op == "max_pool2d_backward") {
    return {pool::max_pool2d_backward_impl(run, needs(grad_output, "grad_output"), input, needs(indices, "indices"),
                                           kernel_size, stride, padding, dilation, ceil_mode, kernels),
            std::nullopt};
  }
  if (op == "avg_pool2d_forward") {
    return {pool::avg_pool2d_forward_impl(run, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                          divisor_override, kernels),
            std::nullopt};
  }
  TORCH_CHECK(op == "avg_pool2d_backward", name, ": unknown pooling operator '", op, "'");
  return {pool::avg_pool2d_backward_impl(run, needs(grad_output, "grad_output"), input, kernel_size, stride, padding,
                                         ceil_mode, count_include_pad, divisor_override, kernels),
          std::nullopt};
}

}  // namespace testing
}  // namespace lenet_ext
