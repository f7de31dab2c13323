// The lenet_ext_testing operators' C++ entry points (testing/ops.cpp declares their schemas and registers
// them): each is defined in the testing/ file its comment names. None is part of lenet_ext's API.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace lenet_ext {
namespace testing {

using MaybeTensor = std::optional<at::Tensor>;

// testing/shape_probes.cpp: shape.h's index math for one spatial dimension.
int64_t probe_window_output_size(int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                                 int64_t dilation, bool ceil_mode);
std::vector<int64_t> probe_valid_outputs(int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                                         int64_t stride, int64_t dilation, bool ceil_mode, int64_t tap_index);

// testing/families_in_use.cpp: the opt-in CUDA families the settings take now.
std::vector<std::string> cuda_families_in_use();

// testing/conv2d_on_host.cpp: the CUDA conv kernels' work items, gathers and stores on CPU tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_conv2d_direct_on_host(
    const at::Tensor& input, const at::Tensor& weight, const MaybeTensor& bias, const at::Tensor& grad_output,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, bool int64_index);
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_conv2d_gemm_on_host(
    const at::Tensor& input, const at::Tensor& weight, const MaybeTensor& bias, const at::Tensor& grad_output,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, bool phased,
    bool int64_index);

// testing/pool2d_on_host.cpp: a CUDA pooling operator's body and work items on CPU tensors.
std::tuple<at::Tensor, MaybeTensor> cuda_pool2d_on_host(
    c10::string_view op, const at::Tensor& input, const MaybeTensor& grad_output, const MaybeTensor& indices,
    c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override, bool native_nhwc,
    bool int64_index, bool planar_runs);

// testing/fused_on_host.cpp: the CUDA fused block's work items on CPU tensors.
std::tuple<at::Tensor, at::Tensor, MaybeTensor, MaybeTensor, MaybeTensor> cuda_fused_on_host(
    const at::Tensor& input, const at::Tensor& weight, const MaybeTensor& bias, const at::Tensor& grad_output,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
    c10::IntArrayRef pool, bool int64_index);

}  // namespace testing
}  // namespace lenet_ext
