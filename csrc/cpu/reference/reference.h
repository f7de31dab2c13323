// The reference algorithms (cpu/reference/conv2d.cpp, pool2d.cpp): each operator's definition as plain
// loops, for a reader to start from and for the tests to hold the fast kernels to. Each function is a
// whole CPU operator, with the operator's own schema: it runs the operator's checker (checks.h), computes,
// and returns its results in the dtype and memory format the fast kernel returns.
// lenet_ext.backends.conv_algorithm("reference") and pool_algorithm("reference") send every pass of the
// CPU operators here (cpu/conv2d.cpp, cpu/pool2d.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace lenet_ext {

at::Tensor conv2d_forward_reference(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups);

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_reference(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
    c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask);

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                                c10::IntArrayRef dilation, bool ceil_mode);

at::Tensor max_pool2d_forward_values_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                                               c10::IntArrayRef dilation, bool ceil_mode);

at::Tensor max_pool2d_backward_reference(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                                         c10::IntArrayRef dilation, bool ceil_mode);

at::Tensor avg_pool2d_forward_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                        c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                                        bool count_include_pad, std::optional<int64_t> divisor_override);

at::Tensor avg_pool2d_backward_reference(const at::Tensor& grad_output, const at::Tensor& input,
                                         c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                         c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                         std::optional<int64_t> divisor_override);

}  // namespace lenet_ext
