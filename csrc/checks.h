// What each operator accepts, in one place. The CPU kernels, the CUDA kernels and the host emulation
// of the CUDA pooling kernels call one checker per operator before touching memory, and the fake
// kernels (lenet_ext/ops/fake.py) read the dtype tables through the private operator _accepts_dtype, so
// every path accepts the same inputs and words its errors the same way.
//
// The Python layer (lenet_ext/functional.py) raises torch's own user-facing errors first; these checks
// are the second line, so that no call reaching the dispatcher directly can crash or overflow.
//
// Every message starts with the operator's schema name ("conv2d_forward: ..."), whichever device
// raised it. A dtype no kernel computes gets torch's NotImplementedError wording,
//   "<operator>" not implemented for '<dtype>'.
//
//   operator                     rank                 dtypes                       result layout
//   conv2d_forward, _backward    4 (input, weight)    float32, float64, float16,   conv2d_memory_format
//                                                     bfloat16
//   max_pool2d_forward(_values)  4                    the floats, and uint8, int8, pool_output_format
//                                                     int16, int32, int64
//   max_pool2d_backward          4                    the floats                   pool_output_format
//   avg_pool2d_forward, _backward 4                   the floats                   pool_output_format
// functional.py adds the batch dimension of a 3D input before calling any operator.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "shape.h"

namespace lenet_ext {

// --------------------------------------------------------------------------------------- convolution
enum class ConvOp { Forward, Backward };

const char* conv_op_name(ConvOp op);

// The same on every device: the four floating types (the 16-bit ones are accumulated in float32).
bool conv_accepts_dtype(at::ScalarType dtype);

// conv2d_forward's arguments: input N x C x H x W and weight O x C/groups x KH x KW of one dtype and
// device, an optional bias of O elements, `padding` as (top, bottom, left, right).
Conv2dParams check_conv2d_forward(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups);

// conv2d_backward's: the forward's, and grad_output of the output's size, dtype and device.
Conv2dParams check_conv2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups);

// The memory format torch's own convolution gives its output and its input and weight gradients:
// channels_last when the input or the weight suggests it (at::native's thnn_conv_use_channels_last and
// mkldnn_conv_use_channels_last on the CPU), except float64 on CUDA (cudnn_conv_suggest_memory_format).
// The kernels compute in their own layout; the operators return their results in this one.
// lenet_ext/ops/fake.py's _conv_memory_format mirrors it for the fake kernels.
at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight);

// ------------------------------------------------------------------------------------------- pooling
enum class PoolOp { MaxForward, MaxForwardValues, MaxBackward, AvgForward, AvgBackward };

const char* pool_op_name(PoolOp op);

// torch's max_pool2d takes the integer types too; no other pooling operator does.
bool pool_accepts_dtype(PoolOp op, at::ScalarType dtype);

// Any strides are accepted. An input whose strides torch's suggest_memory_format reads as channels_last
// (dense or not) gives channels_last results; every other input gives contiguous ones. lenet_ext/ops/fake.py's
// _pool_format mirrors it.
at::MemoryFormat pool_output_format(const at::Tensor& input);

// True when operator `op` (a conv or pooling schema name) takes `dtype`: the private _accepts_dtype
// (registered in composite.cpp), which the fake kernels in lenet_ext/ops/fake.py read.
bool accepts_dtype(c10::string_view op, at::ScalarType dtype);

// max_pool2d_forward and max_pool2d_forward_values (op says which).
Pool2dParams check_max_pool2d_forward(
    PoolOp op,
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode);

// The forward's arguments, grad_output as above, and int64 indices of the output's size on the
// input's device.
Pool2dParams check_max_pool2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& indices,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode);

// max_pool2d_backward's indices are checked as the kernels read them (a pass of its own would cost as much
// as the scatter): each must be a flat position h * W + w in the input plane. A kernel reports the first
// one that is not (`valid` false) here, in one wording.
void check_max_index(bool valid, int64_t index, const Pool2dParams& p);

struct AvgPool2dParams {
  Pool2dParams pool;
  int64_t divisor_override;  // 0 for none (an explicit 0 is torch's error)
};

AvgPool2dParams check_avg_pool2d_forward(
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    bool ceil_mode,
    const std::optional<int64_t>& divisor_override);

AvgPool2dParams check_avg_pool2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    bool ceil_mode,
    const std::optional<int64_t>& divisor_override);

// ---------------------------------------------------------------- the fused conv -> sigmoid -> pool
// Its convolution is conv2d_forward/backward, checked there. Its own rules: pool_size is two positive
// ints no larger than the conv output; the backward's grad_output is the pooled activation's size and
// dtype.
void check_fused_pool(c10::IntArrayRef pool_size, const at::Tensor& activation);
void check_fused_grad(const at::Tensor& grad_output, const at::Tensor& activation, c10::IntArrayRef pool_size);

}  // namespace lenet_ext
