// The checked window of shape.h, and the private operators that let tests probe its math.
#include "shape.h"

#include <c10/util/irange.h>
#include <torch/library.h>

#include <vector>

namespace lenet_ext {

namespace {

void check_pair(const char* op, const char* name, c10::IntArrayRef v) {
  TORCH_CHECK(v.size() == 2, op, ": expected ", name, " to have 2 values, but got ", name, "=", v);
}

}  // namespace

Window2d make_window2d(
    const char* op,
    const std::array<int64_t, 2>& in,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef pad_begin,
    c10::IntArrayRef pad_end,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  check_pair(op, "kernel_size", kernel);
  check_pair(op, "stride", stride);
  check_pair(op, "padding", pad_begin);
  check_pair(op, "padding", pad_end);
  check_pair(op, "dilation", dilation);
  Window2d w{};
  for (const auto i : c10::irange(2)) {
    TORCH_CHECK(kernel[i] > 0, op, ": kernel size should be greater than zero, but got ", kernel);
    TORCH_CHECK(stride[i] > 0, op, ": non-positive stride is not supported, got ", stride);
    TORCH_CHECK(pad_begin[i] >= 0 && pad_end[i] >= 0, op, ": negative padding is not supported");
    TORCH_CHECK(dilation[i] > 0, op, ": dilation should be greater than zero, but got ", dilation);
    // Any stride is safe: an output index o < out satisfies o*s <= n + p0 + p1 <= 2^42.
    for (const int64_t v : {kernel[i], pad_begin[i], pad_end[i], dilation[i], in[i]}) {
      TORCH_CHECK(v <= kMaxWindowArg, op, ": size argument ", v, " is too large (at most 2^40 is supported)");
    }
    int64_t span = 0;  // d*(k-1): both factors are <= 2^40, so check the product explicitly
    TORCH_CHECK(!c10::mul_overflows(dilation[i], kernel[i] - 1, &span) && span <= kMaxWindowArg, op,
                ": dilation * (kernel_size - 1) is too large, got dilation=", dilation, " kernel_size=", kernel);
    w.in[i] = in[i];
    w.kernel[i] = kernel[i];
    w.stride[i] = stride[i];
    w.pad[i] = pad_begin[i];
    w.pad_end[i] = pad_end[i];
    w.dilation[i] = dilation[i];
    w.out[i] = window_output_size(in[i], pad_begin[i], pad_end[i], kernel[i], stride[i], dilation[i], ceil_mode);
  }
  return w;
}

namespace {

// The private operators behind tests/test_shape_math.py: one dimension, repeated for height and width
// so that it goes through make_window2d's checks like every kernel's arguments.
Window2d checked_window(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  constexpr const char* op = "lenet_ext._window_output_size";
  TORCH_CHECK(n >= 0, op, ": input size must be non-negative, got ", n);
  return make_window2d(op, {n, n}, {kernel, kernel}, {stride, stride}, {pad_begin, pad_begin}, {pad_end, pad_end},
                       {dilation, dilation}, ceil_mode);
}

int64_t window_output_size_op(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  return checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode).out[0];
}

std::vector<int64_t> valid_outputs_op(
    int64_t n,
    int64_t pad_begin,
    int64_t pad_end,
    int64_t kernel,
    int64_t stride,
    int64_t dilation,
    bool ceil_mode,
    int64_t tap_index) {
  const Window2d w = checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode);
  TORCH_CHECK(tap_index >= 0 && tap_index < kernel, "lenet_ext._valid_outputs: tap_index must be in [0, ", kernel,
              "), got ", tap_index);
  const Range r = valid_outputs(n, pad_begin, tap_index * dilation, stride, w.out[0] > 0 ? w.out[0] : 0);
  return {r.lo, r.hi};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_window_output_size", &window_output_size_op);
  m.impl("_valid_outputs", &valid_outputs_op);
}

}  // namespace lenet_ext
