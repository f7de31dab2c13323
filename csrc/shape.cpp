// The checked window of shape.h (testing/shape_probes.cpp lets tests probe its math).
#include "shape.h"

#include <c10/util/irange.h>

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

}  // namespace lenet_ext
