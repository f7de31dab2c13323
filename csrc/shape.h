// Output-size and index math shared by every kernel (CPU and CUDA), and the checked window every
// operator's parameters are built on (the operators' other argument rules are in checks.h).
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
// Every size and index is int64. The structs below are only built by make_window2d and checks.h's
// checkers, which reject every value whose arithmetic could overflow, so kernels may use plain int64
// math.
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

  // The zero-padded input length, and the span of the dilated kernel less one, in dimension i.
  C10_HOST_DEVICE int64_t padded(int i) const {
    return in[i] + pad[i] + pad_end[i];
  }
  C10_HOST_DEVICE int64_t span(int i) const {
    return dilation[i] * (kernel[i] - 1);
  }
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

  int64_t in_per_group() const {
    return in_channels / groups;
  }
  int64_t out_per_group() const {
    return out_channels / groups;
  }
  // One output's dot product: a weight row, C/groups * KH * KW long.
  int64_t weight_row() const {
    return in_per_group() * win.kernel[0] * win.kernel[1];
  }
};

// Pooling: N x C x H x W input (3D input is handled by the caller as N = 1), one output plane per
// input plane.
struct Pool2dParams {
  int64_t batch;
  int64_t channels;
  Window2d win;
};

}  // namespace lenet_ext
