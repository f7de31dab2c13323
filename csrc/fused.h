// The fused LeNet block's pieces that every device's kernel shares (composite.cpp defines them): lenet_ext's
// own conv operators called through the dispatcher, so each device runs its own conv kernel, and the
// composite body (conv, ATen's sigmoid, lenet_ext's avg_pool2d) that devices without a fused pass run.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace lenet_ext {
namespace fused {

using MaybeTensor = std::optional<at::Tensor>;
using Grads = std::tuple<MaybeTensor, MaybeTensor, MaybeTensor>;

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const MaybeTensor& bias,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

Grads conv2d_backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                      std::array<bool, 3> mask);

std::tuple<at::Tensor, at::Tensor> forward_composite(const at::Tensor& input, const at::Tensor& weight,
                                                     const MaybeTensor& bias, at::IntArrayRef stride,
                                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                                     int64_t groups, at::IntArrayRef pool);

Grads backward_composite(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& act, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool, std::array<bool, 3> mask);

}  // namespace fused
}  // namespace lenet_ext
