// conv2d's reference: the convolution as the sum that defines it, in plain loops. Read this first; the
// fast kernels (cpu/conv2d*.cpp) compute the same sums, reordered to keep vector registers busy.
//
// Output element (n, o, oh, ow) is a sum over the taps of one window:
//
//   y[n, o, oh, ow] = b[o] + sum over c < C/groups, i < KH, j < KW of
//                     x[n, g*C/groups + c, oh*sh - top + i*dh, ow*sw - left + j*dw] * w[o, c, i, j]
//
// where g = o / (O/groups) is o's group: an output channel sees only its group's input channels. A tap
// that lands in the padding reads a zero, so its term is left out. The output has as many rows as there
// are window positions, floor((H + top + bottom - dh*(KH-1) - 1) / sh) + 1 (and the same for columns);
// check_conv2d_* compute it once (window_output_size, shape.h).
//
// Each product x * w is one term of one output, so the gradients are those terms read the other way:
//   dx[n, g*C/groups + c, ih, iw] += dy[n, o, oh, ow] * w[o, c, i, j]
//   dw[o, c, i, j]                += dy[n, o, oh, ow] * x[n, g*C/groups + c, ih, iw]
//   db[o]                         += dy[n, o, oh, ow]
// One loop nest, for_each_term, visits every term; each pass says what it does with it.
//
// Sums run in that loop order on one thread, in at::opmath_type (float for float16 and bfloat16), rounded
// once at the end: the result is the same bit for bit on every CPU level and thread count. Inputs are read
// as contiguous NCHW in their own dtype; results come back in the layout torch's convolution gives
// (conv2d_memory_format, checks.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "checks.h"
#include "cpu/common.h"
#include "cpu/reference/reference.h"

namespace lenet_ext {
namespace {

// Calls term(y_at, x_at, w_at) for every term of every output, in order: the flat positions in the
// contiguous output, input and weight of dy (or y), x and w. A flat NCHW position is ((n*C + c)*H + h)*W + w.
template <typename Term>
void for_each_term(const Conv2dParams& p, const Term& term) {
  const Window2d& win = p.win;
  const int64_t C = p.in_channels, O = p.out_channels, Cg = p.in_per_group(), Og = p.out_per_group();
  const int64_t H = win.in[0], W = win.in[1], OH = win.out[0], OW = win.out[1];
  const int64_t KH = win.kernel[0], KW = win.kernel[1];
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t o = 0; o < O; ++o) {
      const int64_t g = o / Og;
      for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t y_at = ((n * O + o) * OH + oh) * OW + ow;  // (n, o, oh, ow) is one output element
          for (int64_t c = 0; c < Cg; ++c) {
            for (int64_t i = 0; i < KH; ++i) {
              const int64_t ih = oh * win.stride[0] - win.pad[0] + i * win.dilation[0];
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t iw = ow * win.stride[1] - win.pad[1] + j * win.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                  continue;  // the padding: a zero term
                }
                term(y_at, ((n * C + g * Cg + c) * H + ih) * W + iw, ((o * Cg + c) * KH + i) * KW + j);
              }
            }
          }
        }
      }
    }
  }
}

// A zeroed accumulator of `sizes` in scalar_t's opmath type.
template <typename scalar_t>
at::Tensor accumulator(c10::IntArrayRef sizes) {
  return at::zeros(sizes, c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value);
}

template <typename scalar_t>
at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   const Conv2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  at::Tensor y = accumulator<scalar_t>({p.batch, p.out_channels, p.win.out[0], p.win.out[1]});
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  acc_t* yd = y.mutable_data_ptr<acc_t>();
  if (bias) {  // each sum starts from its channel's bias
    const at::Tensor b = bias->contiguous();
    const scalar_t* bd = b.const_data_ptr<scalar_t>();
    const int64_t plane = p.win.out[0] * p.win.out[1];
    for (int64_t k = 0; k < y.numel(); ++k) {
      yd[k] = acc_t(bd[(k / plane) % p.out_channels]);  // output k is in channel (k / plane) % O
    }
  }
  for_each_term(p, [&](int64_t y_at, int64_t x_at, int64_t w_at) { yd[y_at] += acc_t(xd[x_at]) * acc_t(wd[w_at]); });
  return y;
}

template <typename scalar_t>
at::Tensor grad_input(const at::Tensor& dy, const at::Tensor& weight, const Conv2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor w = weight.contiguous();
  at::Tensor dx = accumulator<scalar_t>({p.batch, p.in_channels, p.win.in[0], p.win.in[1]});
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  acc_t* dxd = dx.mutable_data_ptr<acc_t>();
  for_each_term(p, [&](int64_t y_at, int64_t x_at, int64_t w_at) { dxd[x_at] += acc_t(dyd[y_at]) * acc_t(wd[w_at]); });
  return dx;
}

template <typename scalar_t>
at::Tensor grad_weight(const at::Tensor& dy, const at::Tensor& input, const Conv2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor x = input.contiguous();
  at::Tensor dw = accumulator<scalar_t>({p.out_channels, p.in_per_group(), p.win.kernel[0], p.win.kernel[1]});
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  acc_t* dwd = dw.mutable_data_ptr<acc_t>();
  for_each_term(p, [&](int64_t y_at, int64_t x_at, int64_t w_at) { dwd[w_at] += acc_t(dyd[y_at]) * acc_t(xd[x_at]); });
  return dw;
}

// b[o] is added once to each output of channel o, so its gradient is dy summed over that channel's outputs.
template <typename scalar_t>
at::Tensor grad_bias(const at::Tensor& dy, const Conv2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  at::Tensor db = accumulator<scalar_t>({p.out_channels});
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  acc_t* dbd = db.mutable_data_ptr<acc_t>();
  const int64_t plane = p.win.out[0] * p.win.out[1];
  for (int64_t k = 0; k < dy.numel(); ++k) {
    dbd[(k / plane) % p.out_channels] += acc_t(dyd[k]);
  }
  return db;
}

}  // namespace

at::Tensor conv2d_forward_reference(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  at::Tensor y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_forward_reference",
                                  [&] { y = forward<scalar_t>(input, weight, bias, p); });
  return as_result(y, input.scalar_type(), conv2d_memory_format(input, weight));
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_reference(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
    c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  const at::Tensor dy = grad_output.contiguous();
  const at::ScalarType dtype = input.scalar_type();
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  std::optional<at::Tensor> dx, dw, db;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "conv2d_backward_reference", [&] {
    if (output_mask[0]) {
      dx = as_result(grad_input<scalar_t>(dy, weight, p), dtype, fmt);
    }
    if (output_mask[1]) {
      dw = as_result(grad_weight<scalar_t>(dy, input, p), dtype, fmt);
    }
    if (output_mask[2]) {
      db = as_result(grad_bias<scalar_t>(dy, p), dtype, at::MemoryFormat::Contiguous);
    }
  });
  return {dx, dw, db};
}

}  // namespace lenet_ext
