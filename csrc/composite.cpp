// The kernels every device shares (CompositeExplicitAutograd), and the root's one registration block:
//   * the fused block's composite (conv2d_sigmoid_avgpool2d and its backward): lenet_ext's own conv
//     operators, ATen's sigmoid and lenet_ext's avg_pool2d, each called through the dispatcher so each
//     device runs its own kernels. A device with a fused pass registers it for its own key (cpu/fused.cpp;
//     cuda/fused.cu, which falls back to this composite until its pass is verified);
//   * the private query _accepts_dtype, which reads checks.h's dtype tables for the fake kernels.
// The block's conv calls and the composite are declared in fused.h.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"
#include "fused.h"

namespace lenet_ext {
namespace fused {

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const MaybeTensor& bias,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lenet_ext::conv2d_forward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const MaybeTensor&,
                                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>();
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

Grads conv2d_backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                      std::array<bool, 3> mask) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("lenet_ext::conv2d_backward", "")
          .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                       at::IntArrayRef, int64_t, std::array<bool, 3>)>();
  return op.call(grad, input, weight, stride, padding, dilation, groups, mask);
}

namespace {

at::Tensor avg_pool2d_forward(const at::Tensor& x, at::IntArrayRef pool) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lenet_ext::avg_pool2d_forward", "")
                             .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                               bool, bool, std::optional<int64_t>)>();
  return op.call(x, pool, pool, {0, 0}, false, true, std::nullopt);
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef pool) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("lenet_ext::avg_pool2d_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                            bool, bool, std::optional<int64_t>)>();
  return op.call(grad, x, pool, pool, {0, 0}, false, true, std::nullopt);
}

}  // namespace

// The composite: any device, and the CPU for dtypes its fused pass does not cover.
std::tuple<at::Tensor, at::Tensor> forward_composite(const at::Tensor& input, const at::Tensor& weight,
                                                     const MaybeTensor& bias, at::IntArrayRef stride,
                                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                                     int64_t groups, at::IntArrayRef pool) {
  const at::Tensor z = conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  check_fused_pool(pool, z);
  at::Tensor act = at::sigmoid(z);
  return {avg_pool2d_forward(act, pool), act};
}

Grads backward_composite(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& act, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool, std::array<bool, 3> mask) {
  check_fused_grad(grad, act, pool);
  const at::Tensor g_act = avg_pool2d_backward(grad, act, pool);
  return conv2d_backward(g_act * act * (1 - act), input, weight, stride, padding, dilation, groups, mask);
}

}  // namespace fused

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("conv2d_sigmoid_avgpool2d", &fused::forward_composite);
  m.impl("conv2d_sigmoid_avgpool2d_backward", &fused::backward_composite);
  m.impl("_accepts_dtype", &accepts_dtype);
}

}  // namespace lenet_ext
