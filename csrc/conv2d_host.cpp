// The CUDA conv2d algorithm setting, and the private operator that runs the direct CUDA kernels' work
// items (conv2d_items.h) on the host, so tests check their index arithmetic without a GPU.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <atomic>
#include <optional>
#include <tuple>

#include "conv2d_items.h"
#include "items_host.h"

namespace lenet_ext {

namespace {

std::atomic<int> g_cuda_conv_algorithm{static_cast<int>(conv::CudaAlgorithm::kAuto)};

int64_t set_cuda_conv_algorithm(int64_t algorithm) {
  TORCH_CHECK(algorithm >= -1 && algorithm <= 3,
              "lenet_ext._set_cuda_conv_algorithm: expected -1, 0, 1, 2 or 3, got ", algorithm);
  return algorithm < 0 ? g_cuda_conv_algorithm.load() : g_cuda_conv_algorithm.exchange(static_cast<int>(algorithm));
}

}  // namespace

conv::CudaAlgorithm conv::cuda_conv_algorithm() {
  return static_cast<CudaAlgorithm>(g_cuda_conv_algorithm.load());
}

namespace {

// The direct CUDA kernels' forward, input gradient and weight gradient, computed on CPU tensors by their
// own work items. Operands and results must not be empty.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_conv2d_direct_on_host(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& grad_output, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, bool int64_index) {
  constexpr const char* name = "lenet_ext._cuda_conv2d_direct_on_host";
  TORCH_CHECK(input.device().is_cpu(), name, ": expected CPU tensors");
  const Conv2dParams p = check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  TORCH_CHECK(input.numel() > 0 && weight.numel() > 0 && grad_output.numel() > 0, name,
              ": expected tensors with elements");
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), go = grad_output.contiguous();
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  at::Tensor out = at::empty(grad_output.sizes(), x.options());
  at::Tensor gx = at::empty(x.sizes(), x.options()), gw = at::empty(w.sizes(), w.options());
  const HostRunner run{int64_index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), name, [&] {
    with_index_type(!int64_index && conv::fits_int32(p), [&](auto index_zero) {
      using index_t = decltype(index_zero);
      conv::direct_forward<scalar_t, index_t>(run, x, w, b ? &*b : nullptr, out, p);
      conv::direct_grad_input<scalar_t, index_t>(run, go, w, gx, p);
      conv::direct_grad_weight<scalar_t, index_t>(run, go, x, gw, p);
    });
  });
  return {out, gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_cuda_conv_algorithm", &set_cuda_conv_algorithm);
  m.impl("_cuda_conv2d_direct_on_host", &cuda_conv2d_direct_on_host);
}

}  // namespace lenet_ext
