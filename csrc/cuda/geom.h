// One sliding-window operation as a GPU kernel reads it: its sizes narrowed to the kernel's index type,
// the type it accumulates in, and whether int32 indices are safe. The CUDA conv kernels and the pooling
// work items (pool2d_items.h, which the host also runs for tests) share it, so this header is plain
// host-and-device C++ with no CUDA include.
//
// Index width: kernels are templated on index_t. int32 is used when every tensor and every window sum
// fits comfortably (fits_int32), because 64-bit division is several times slower on the GPU; otherwise
// int64, so sizes past 2^31 stay correct.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "shape.h"

// Unrolls the next loop in device code (so per-thread arrays indexed by it stay in registers); host
// compilers, which warn about the CUDA pragma, unroll constant loops on their own.
#if defined(__CUDACC__)
#define LENET_EXT_UNROLL _Pragma("unroll")
#else
#define LENET_EXT_UNROLL
#endif

namespace lenet_ext {

// min/max for either index type, on host and device alike.
template <typename T>
C10_HOST_DEVICE inline T imin(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
C10_HOST_DEVICE inline T imax(T a, T b) {
  return a > b ? a : b;
}

// The type a kernel accumulates in: ATen's opmath_type, float for the 16-bit floats, every other type
// (double, the integers) itself.
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

// True when int32 index math is safe: every value (tensor numels, window reaches) is below 2^30, which
// leaves headroom for the sum or difference of two of them.
inline bool fits_int32(std::initializer_list<int64_t> values) {
  constexpr int64_t limit = int64_t{1} << 30;
  return std::all_of(values.begin(), values.end(), [](int64_t v) { return v >= 0 && v < limit; });
}

// The largest value a window's arithmetic can reach in dimension i: the padded input, plus the whole
// dilated kernel, plus one stride and the output length.
inline int64_t window_reach(const Window2d& w, int i) {
  return w.padded(i) + w.span(i) + w.stride[i] + w.out[i];
}

// Every size a kernel reads. Convolution fills it as it is; pooling is a depthwise window operation,
// one output channel per input channel (O = G = C, Cg = Og = 1), and its planar kernels see the N*C
// planes as N*C images of one channel.
template <typename index_t>
struct Geom {
  index_t N, C;                    // images, input channels
  index_t O, G, Cg, Og;            // output channels, groups, input and output channels per group
  index_t H, W, OH, OW;            // input and output planes
  index_t KH, KW;                  // kernel
  index_t sh, sw, ph, pw, dh, dw;  // stride, padding before (top, left), dilation
};

// Calls f(int32_t{}) when `small`, else f(int64_t{}); f is a generic lambda.
template <typename F>
void with_index_type(bool small, const F& f) {
  if (small) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

namespace geom_detail {

template <typename index_t>
Geom<index_t> narrow(int64_t N, int64_t C, int64_t O, int64_t G, const Window2d& w) {
  auto n = [](int64_t v) { return static_cast<index_t>(v); };
  return {n(N),           n(C),           n(O),         n(G),         n(C / G),     n(O / G),
          n(w.in[0]),     n(w.in[1]),     n(w.out[0]),  n(w.out[1]),  n(w.kernel[0]), n(w.kernel[1]),
          n(w.stride[0]), n(w.stride[1]), n(w.pad[0]),  n(w.pad[1]),  n(w.dilation[0]), n(w.dilation[1])};
}

}  // namespace geom_detail

template <typename index_t>
Geom<index_t> geom_of(const Conv2dParams& p) {
  return geom_detail::narrow<index_t>(p.batch, p.in_channels, p.out_channels, p.groups, p.win);
}

template <typename index_t>
Geom<index_t> geom_of(const Pool2dParams& p, bool planar) {
  const int64_t images = planar ? p.batch * p.channels : p.batch, channels = planar ? 1 : p.channels;
  return geom_detail::narrow<index_t>(images, channels, channels, channels, p.win);
}

}  // namespace lenet_ext
