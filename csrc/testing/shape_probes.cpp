// The test operators window_output_size and valid_outputs: shape.h's index math for one spatial
// dimension, checked exactly as every kernel's arguments are, so tests (tests/test_shape_math.py) probe it
// at sizes no tensor could have (past 2^31, up to 2^40).
#include <c10/util/Exception.h>

#include <vector>

#include "shape.h"
#include "testing/host_ops.h"

namespace lenet_ext {
namespace testing {

namespace {

// One dimension, repeated for height and width so that it goes through make_window2d's checks like
// every kernel's arguments.
Window2d checked_window(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  constexpr const char* op = "lenet_ext_testing.window_output_size";
  TORCH_CHECK(n >= 0, op, ": input size must be non-negative, got ", n);
  return make_window2d(op, {n, n}, {kernel, kernel}, {stride, stride}, {pad_begin, pad_begin}, {pad_end, pad_end},
                       {dilation, dilation}, ceil_mode);
}

}  // namespace

int64_t probe_window_output_size(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  return checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode).out[0];
}

std::vector<int64_t> probe_valid_outputs(
    int64_t n,
    int64_t pad_begin,
    int64_t pad_end,
    int64_t kernel,
    int64_t stride,
    int64_t dilation,
    bool ceil_mode,
    int64_t tap_index) {
  const Window2d w = checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode);
  TORCH_CHECK(tap_index >= 0 && tap_index < kernel, "lenet_ext_testing.valid_outputs: tap_index must be in [0, ",
              kernel, "), got ", tap_index);
  const Range r = valid_outputs(n, pad_begin, tap_index * dilation, stride, w.out[0] > 0 ? w.out[0] : 0);
  return {r.lo, r.hi};
}

}  // namespace testing
}  // namespace lenet_ext
