// Output-size and index math shared by every kernel (CPU and CUDA), plus the host-side validation
// that turns raw operator arguments into a checked parameter struct.
//
// One spatial dimension of a sliding window has
//   n      input length
//   p0, p1 padding before and after (conv's padding='same' can make them differ)
//   k      kernel length, d dilation (the window covers d*(k-1)+1 input positions)
//   s      stride
// and output length   floor((n + p0 + p1 - d*(k-1) - 1) / s) + 1.
// Pooling's ceil_mode rounds the division up instead, but drops a last window that would start in the
// right padding: it must start inside the input or the left padding (torch's rule).
//
// Every size and index is int64. The Params structs below are only built by the make_* functions,
// which reject every value whose arithmetic could overflow, so kernels may use plain int64 math.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>

namespace lenet_ext {

// floor(a / b) for b > 0 and any sign of a.
C10_HOST_DEVICE inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}

// Output length of one dimension (see the top of this file). May be <= 0: callers report that.
C10_HOST_DEVICE inline int64_t window_output_size(
    int64_t n, int64_t p0, int64_t p1, int64_t k, int64_t s, int64_t d, bool ceil_mode) {
  const int64_t span = n + p0 + p1 - d * (k - 1) - 1;
  int64_t out = (ceil_mode ? ceil_div(span, s) : floor_div(span, s)) + 1;
  if (ceil_mode && out > 0 && (out - 1) * s >= n + p0) {
    --out;  // the last window would start in the right padding
  }
  return out;
}

// For the kernel tap at offset `tap` (= kernel index * dilation), the outputs o in [lo, hi) read a real
// input position i = o*s - p0 + tap in [0, n); every other output reads padding. Kernels use this to
// split each row into a branch-free interior and zero-filled borders.
struct Range {
  int64_t lo;
  int64_t hi;
};

C10_HOST_DEVICE inline Range valid_outputs(int64_t n, int64_t p0, int64_t tap, int64_t s, int64_t out) {
  int64_t lo = ceil_div(p0 - tap, s);
  int64_t hi = floor_div(n - 1 + p0 - tap, s) + 1;
  lo = lo < 0 ? 0 : (lo > out ? out : lo);  // 0 <= lo <= hi <= out, even when no output is valid
  hi = hi > out ? out : (hi < lo ? lo : hi);
  return {lo, hi};
}

// Everything a 2D sliding-window kernel needs, checked. Index 0 is height, 1 is width.
struct Window2d {
  int64_t in[2];       // input H, W
  int64_t out[2];      // output H, W
  int64_t kernel[2];
  int64_t stride[2];
  int64_t pad[2];      // padding before (top, left); padding after only shapes `out`
  int64_t pad_end[2];  // padding after (bottom, right)
  int64_t dilation[2];
};

// The largest size we accept for any single argument: far above any real tensor, and small enough
// that sums and products of two of them fit in int64. Strides are exempt: o*s stays below the padded
// input size for every output index o.
constexpr int64_t kMaxWindowArg = int64_t{1} << 40;

// Validates one sliding-window configuration and computes its output size.
// `op` names the operator in messages.
Window2d make_window2d(
    const char* op,
    const std::array<int64_t, 2>& in,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef pad_begin,
    c10::IntArrayRef pad_end,
    c10::IntArrayRef dilation,
    bool ceil_mode);

// Convolution: N x C x H x W input, O x C/groups x KH x KW weight.
struct Conv2dParams {
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t groups;
  Window2d win;
};

// `padding` is (top, bottom, left, right).
Conv2dParams make_conv2d_params(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups);

// Pooling: N x C x H x W input (3D input is handled by the caller as N = 1), one output plane per
// input plane.
struct Pool2dParams {
  int64_t batch;
  int64_t channels;
  Window2d win;
};

Pool2dParams make_pool2d_params(
    const char* op,
    const at::Tensor& input,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode);

// Checks that `grad` has the given sizes (the forward's output) and `like`'s dtype and device.
void check_grad_output(const char* op, const at::Tensor& grad, c10::IntArrayRef sizes, const at::Tensor& like);

// The memory format torch's own convolution gives its output and its input and weight gradients:
// channels_last when the input or the weight suggests it (at::native's thnn_conv_use_channels_last and
// mkldnn_conv_use_channels_last on the CPU), except float64 on CUDA (cudnn_conv_suggest_memory_format).
// The kernels compute in their own layout; the operators return their results in this one.
// lenet_ext/ops.py's _conv_memory_format mirrors it for the fake kernels.
at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight);

// ------------------------------------------------------------- what the pooling operators accept
// One table for the CPU kernels, the CUDA kernels and the fake kernels (ops.py reads it through the
// private operator _pool2d_accepts), so that every path accepts the same inputs:
//   rank    4 (N, C, H, W) for every tensor argument; functional.py adds the batch dimension of a 3D input;
//   layout  any strides; a channels_last input that is not also contiguous gives channels_last results,
//           every other input gives contiguous ones (pool_output_format);
//   dtype   float32, float64, float16, bfloat16; the max forwards also the integer types torch's
//           max_pool2d takes (uint8, int8, int16, int32, int64); no backward takes integers.
// Anything else is rejected before any memory is touched: a rank with a RuntimeError, a dtype with
// torch's NotImplementedError wording ("<op>" not implemented for '<dtype>').
enum class PoolOp { MaxForward, MaxForwardValues, MaxBackward, AvgForward, AvgBackward };

// The operator's schema name, which the messages use on every device.
const char* pool_op_name(PoolOp op);

bool pool_accepts_dtype(PoolOp op, at::ScalarType dtype);

// Rank, then dtype.
void check_pool_input(PoolOp op, const at::Tensor& input);

at::MemoryFormat pool_output_format(const at::Tensor& input);

// max_pool2d_backward's indices: int64, the output's sizes, the input's device.
void check_max_indices(const char* op, const at::Tensor& indices, c10::IntArrayRef sizes, const at::Tensor& input);

// avg_pool2d's divisor_override as the kernels take it: 0 for none; an explicit 0 is torch's error.
int64_t pool_divisor(const char* op, const std::optional<int64_t>& divisor_override);

// Which CUDA kernels pool a channels_last input (lenet_ext.backends.cuda_pool_layout): false, the
// default, copies it to NCHW for the planar kernels and the result back; true runs the channels_last
// kernels on it as it is. Process-wide; read once per call.
bool cuda_pool_native_nhwc();

}  // namespace lenet_ext
