// Max and average pooling's reference: each output as its definition, in plain loops. Read this first;
// the fast kernels (cpu/pool2d.cpp) compute the same values, a row or a vector of channels at a time.
//
// Output (n, c, oh, ow) pools one window of input plane (n, c): rows oh*sh - ph + i*dh for i < KH and
// columns ow*sw - pw + j*dw for j < KW, of which only the positions inside the plane take part (the
// padding is not a value). There are floor((H + 2ph - dh*(KH-1) - 1) / sh) + 1 output rows, or the
// division rounded up in ceil_mode, less a last window that would start in the bottom padding (the
// same for columns); the checkers compute it once (window_output_size, shape.h).
//
//   max           the window's largest value, and where it is: the flat position h*W + w in the plane.
//                 Taps are visited row by row, and a value replaces the maximum so far when it is greater
//                 or NaN. That is torch's rule, so ties and NaNs come out as in torch: the first of equal
//                 maxima wins, a NaN wins (the last NaN, with its payload), a window of -inf keeps its
//                 first position inside the plane, and a window of only padding gives -inf (an integer
//                 type's lowest value) at the position where its first tap would be.
//   max backward  each output's gradient goes to the position its index names.
//   avg           the sum of the window's values over torch's divisor: divisor_override if given, else
//                 the window's area, cut at the end of the padded input (a ceil_mode window may hang past
//                 it), counting the padding (count_include_pad) or not.
//   avg backward  each output's gradient, over that same divisor, goes to each input of its window.
//
// One thread, planes in order; sums in at::opmath_type (float for float16 and bfloat16), rounded once.
// Inputs are read as contiguous NCHW in their own dtype; results come back in the fast kernels' layout
// (pool_output_format, checks.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <limits>

#include "checks.h"
#include "cpu/common.h"
#include "cpu/reference/reference.h"

namespace lenet_ext {
namespace {

// The first tap of a window starting at `start` (stride d between taps) that is not before the plane.
int64_t first_inside(int64_t start, int64_t d) {
  return start < 0 ? start + ceil_div(-start, d) * d : start;
}

// Whether any of the k taps from `start` lands inside [0, n).
bool reads_input(int64_t start, int64_t k, int64_t d, int64_t n) {
  const int64_t first = first_inside(start, d);
  return first < n && first <= start + (k - 1) * d;
}

// -inf where the type has it (a window of -inf then keeps its first position), else its lowest value.
template <typename scalar_t>
scalar_t lowest() {
  using limits = std::numeric_limits<scalar_t>;
  return limits::has_infinity ? -limits::infinity() : limits::lowest();
}

// Max pooling over every plane: y gets each window's maximum and, when `ind` is not null, its position.
template <typename scalar_t>
void max_pool(const scalar_t* x, scalar_t* y, int64_t* ind, int64_t planes, const Window2d& w) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  for (int64_t q = 0; q < planes; ++q) {
    for (int64_t oh = 0; oh < OH; ++oh) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = oh * w.stride[0] - w.pad[0], w0 = ow * w.stride[1] - w.pad[1];
        scalar_t best = lowest<scalar_t>();
        int64_t best_at = first_inside(h0, w.dilation[0]) * W + first_inside(w0, w.dilation[1]);
        for (int64_t i = 0; i < w.kernel[0]; ++i) {
          for (int64_t j = 0; j < w.kernel[1]; ++j) {
            const int64_t ih = h0 + i * w.dilation[0], iw = w0 + j * w.dilation[1];
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
              continue;  // the padding
            }
            const scalar_t v = x[q * H * W + ih * W + iw];
            if (v > best || at::_isnan(v)) {
              best = v;
              best_at = ih * W + iw;
            }
          }
        }
        const int64_t out_at = (q * OH + oh) * OW + ow;  // (plane q, oh, ow) is one output element
        y[out_at] = best;
        if (ind != nullptr) {
          ind[out_at] = best_at;
        }
      }
    }
  }
}

// Max pooling's output (and indices when `indices` is not null), after the operator's checks.
at::Tensor max_pool2d_run(PoolOp op, const at::Tensor& input, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                          c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode, at::Tensor* indices) {
  const Pool2dParams p = check_max_pool2d_forward(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  const at::MemoryFormat fmt = pool_output_format(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty({p.batch, p.channels, p.win.out[0], p.win.out[1]}, x.options());
  at::Tensor ind = indices != nullptr ? at::empty(y.sizes(), x.options().dtype(at::kLong)) : at::Tensor();
  AT_DISPATCH_V2(x.scalar_type(), "max_pool2d_reference", AT_WRAP([&] {
                   max_pool(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                            ind.defined() ? ind.mutable_data_ptr<int64_t>() : nullptr, p.batch * p.channels, p.win);
                 }),
                 AT_EXPAND(AT_FLOATING_TYPES), AT_EXPAND(AT_INTEGRAL_TYPES), at::kHalf, at::kBFloat16);
  if (indices != nullptr) {
    *indices = as_result(ind, at::kLong, fmt);
  }
  return as_result(y, input.scalar_type(), fmt);
}

// One dimension of an average's window: [lo, hi) in the padded input, cut at its end, and [in_lo, in_hi),
// the part of it inside the input.
struct Span {
  int64_t lo, hi, in_lo, in_hi;
};

Span avg_span(int64_t o, int64_t n, int64_t k, int64_t s, int64_t pad) {
  const int64_t lo = o * s - pad, hi = std::min(lo + k, n + pad);
  return {lo, hi, std::max<int64_t>(lo, 0), std::min(hi, n)};
}

// divisor_override is 0 when there is none (AvgPool2dParams).
int64_t avg_divisor(const Span& rows, const Span& cols, bool count_include_pad, int64_t divisor_override) {
  if (divisor_override != 0) {
    return divisor_override;
  }
  return count_include_pad ? (rows.hi - rows.lo) * (cols.hi - cols.lo)
                           : (rows.in_hi - rows.in_lo) * (cols.in_hi - cols.in_lo);
}

// Calls f(q, out_at, rows, cols, divisor) for each output element, in order: its plane, its flat position in
// the contiguous output, its window and its divisor.
template <typename F>
void for_each_average(const AvgPool2dParams& a, bool count_include_pad, const F& f) {
  const Window2d& w = a.pool.win;
  for (int64_t q = 0; q < a.pool.batch * a.pool.channels; ++q) {
    for (int64_t oh = 0; oh < w.out[0]; ++oh) {
      for (int64_t ow = 0; ow < w.out[1]; ++ow) {
        const Span rows = avg_span(oh, w.in[0], w.kernel[0], w.stride[0], w.pad[0]);
        const Span cols = avg_span(ow, w.in[1], w.kernel[1], w.stride[1], w.pad[1]);
        const int64_t out_at = (q * w.out[0] + oh) * w.out[1] + ow;  // (plane q, oh, ow) is one output element
        f(q, out_at, rows, cols, avg_divisor(rows, cols, count_include_pad, a.divisor_override));
      }
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                                c10::IntArrayRef dilation, bool ceil_mode) {
  at::Tensor indices;
  at::Tensor y = max_pool2d_run(PoolOp::MaxForward, input, kernel_size, stride, padding, dilation, ceil_mode, &indices);
  return {y, indices};
}

at::Tensor max_pool2d_forward_values_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                                               c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_run(PoolOp::MaxForwardValues, input, kernel_size, stride, padding, dilation, ceil_mode, nullptr);
}

at::Tensor max_pool2d_backward_reference(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                                         c10::IntArrayRef dilation, bool ceil_mode) {
  const Pool2dParams p =
      check_max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
  const Window2d& w = p.win;
  const int64_t plane = w.in[0] * w.in[1];
  const at::Tensor dy = grad_output.contiguous(), ind = indices.contiguous();
  const int64_t* id = ind.const_data_ptr<int64_t>();
  at::Tensor dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d_backward_reference", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dx = at::zeros(input.sizes(), c10::CppTypeToScalarType<acc_t>::value);
    const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
    acc_t* dxd = dx.mutable_data_ptr<acc_t>();
    for (int64_t q = 0; q < p.batch * p.channels; ++q) {
      for (int64_t oh = 0; oh < w.out[0]; ++oh) {
        for (int64_t ow = 0; ow < w.out[1]; ++ow) {
          // A window of only padding took no input: its output is -inf whatever the input, so it passes no
          // gradient, and its index (where its first tap would be) may lie outside the plane.
          if (!reads_input(oh * w.stride[0] - w.pad[0], w.kernel[0], w.dilation[0], w.in[0]) ||
              !reads_input(ow * w.stride[1] - w.pad[1], w.kernel[1], w.dilation[1], w.in[1])) {
            continue;
          }
          const int64_t out_at = (q * w.out[0] + oh) * w.out[1] + ow;  // (plane q, oh, ow) is one output
          const int64_t pos = id[out_at];
          check_max_index(pos >= 0 && pos < plane, pos, p);
          dxd[q * plane + pos] += acc_t(dyd[out_at]);
        }
      }
    }
  });
  return as_result(dx, input.scalar_type(), pool_output_format(input));
}

at::Tensor avg_pool2d_forward_reference(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                        c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                                        bool count_include_pad, std::optional<int64_t> divisor_override) {
  const AvgPool2dParams a = check_avg_pool2d_forward(input, kernel_size, stride, padding, ceil_mode, divisor_override);
  const int64_t H = a.pool.win.in[0], W = a.pool.win.in[1];
  const at::Tensor x = input.contiguous();
  at::Tensor y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "avg_pool2d_reference", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    y = at::empty({a.pool.batch, a.pool.channels, a.pool.win.out[0], a.pool.win.out[1]},
                  c10::CppTypeToScalarType<acc_t>::value);
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    acc_t* yd = y.mutable_data_ptr<acc_t>();
    for_each_average(a, count_include_pad, [&](int64_t q, int64_t out_at, const Span& rows, const Span& cols,
                                               int64_t divisor) {
      acc_t sum = 0;
      for (int64_t ih = rows.in_lo; ih < rows.in_hi; ++ih) {
        for (int64_t iw = cols.in_lo; iw < cols.in_hi; ++iw) {
          sum += acc_t(xd[(q * H + ih) * W + iw]);
        }
      }
      yd[out_at] = sum / acc_t(divisor);
    });
  });
  return as_result(y, input.scalar_type(), pool_output_format(input));
}

at::Tensor avg_pool2d_backward_reference(const at::Tensor& grad_output, const at::Tensor& input,
                                         c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                         c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                         std::optional<int64_t> divisor_override) {
  const AvgPool2dParams a =
      check_avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, divisor_override);
  const int64_t H = a.pool.win.in[0], W = a.pool.win.in[1];
  const at::Tensor dy = grad_output.contiguous();
  at::Tensor dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "avg_pool2d_backward_reference", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dx = at::zeros(input.sizes(), c10::CppTypeToScalarType<acc_t>::value);
    const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
    acc_t* dxd = dx.mutable_data_ptr<acc_t>();
    for_each_average(a, count_include_pad, [&](int64_t q, int64_t out_at, const Span& rows, const Span& cols,
                                               int64_t divisor) {
      const acc_t share = acc_t(dyd[out_at]) / acc_t(divisor);
      for (int64_t ih = rows.in_lo; ih < rows.in_hi; ++ih) {
        for (int64_t iw = cols.in_lo; iw < cols.in_hi; ++iw) {
          dxd[(q * H + ih) * W + iw] += share;
        }
      }
    });
  });
  return as_result(dx, input.scalar_type(), pool_output_format(input));
}

}  // namespace lenet_ext
