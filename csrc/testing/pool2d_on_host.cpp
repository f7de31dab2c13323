// Process-wide pooling settings, and the private operator that runs the CUDA pooling kernels' work
// items on the host (pool2d_items.h), so tests check their index arithmetic without a GPU.
#include <torch/library.h>

#include "cuda/families.h"
#include "testing/items_host.h"
#include "cuda/pool2d_items.h"
#include "setting.h"

namespace lenet_ext {

namespace {

// 0: auto (the default: cuda/families.h), 1: planar kernels, 2: native channels_last kernels.
Setting g_cuda_pool_layout{"_set_cuda_pool_layout", 3};
// 0: auto (the default: cuda/families.h), 1: one output per planar forward item, 2: runs of pool::kRun
// outputs.
Setting g_cuda_pool_planar{"_set_cuda_pool_planar", 3};

int64_t set_cuda_pool_layout(int64_t layout) {
  return g_cuda_pool_layout.set(layout);
}

int64_t set_cuda_pool_planar(int64_t planar) {
  return g_cuda_pool_planar.set(planar);
}

}  // namespace

pool::Kernels pool::cuda_pool_kernels() {
  using cuda_families::Family;
  const int layout = g_cuda_pool_layout.get(), planar = g_cuda_pool_planar.get();
  return {cuda_families::takes(Family::kPoolNhwc, layout == 2, layout == 0),
          cuda_families::takes(Family::kPoolRuns, planar == 2, planar == 0)};
}

namespace {

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
  constexpr const char* name = "lenet_ext._cuda_pool2d_on_host";
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

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_cuda_pool_layout", &set_cuda_pool_layout);
  m.impl("_set_cuda_pool_planar", &set_cuda_pool_planar);
  m.impl("_cuda_pool2d_on_host", &cuda_pool2d_on_host);
}

}  // namespace lenet_ext
