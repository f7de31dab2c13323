// The CUDA pooling kernels' per-element code: the work items (one output or input element, or one run of
// channels, per call), written for host and device alike. The operators' bodies that check arguments,
// lay out tensors and pick the work item are in pool2d_bodies.h.
//
// csrc/cuda/pool2d.cu runs the bodies with a runner that launches grid-stride kernels over the work
// items (cuda/items.cuh). The test operator lenet_ext_testing::cuda_pool2d_on_host
// (testing/pool2d_on_host.cpp) runs the very same bodies with a runner that loops on the CPU, so the tests
// check this code, both kernel families and every vector width, on machines without a GPU. What only a
// GPU can check is the launch itself (grid, stream, device memory).
//
// Semantics are torch's, exactly:
//   * max: a NaN in the window wins (the comparison is `v > best || isnan(v)`, so the last NaN's index
//     is kept); a window of only -inf (or only the integer minimum) gives that value and the index of
//     its first tap at or after 0, even when that tap is already past the input's end (a window of only
//     padding): torch's NCHW kernels and its CPU kernels record that index, and so do ours in every
//     layout (torch's channels_last CUDA kernel records 0 instead);
//   * avg: the divisor is divisor_override if given, else the window size clipped to the padded input
//     (count_include_pad) or to the input itself; a window with no input element gives 0.
//
// Two families of work items:
//   * planar (NCHW): one item is one output element (forwards) or one input element (backwards) of a
//     contiguous (N*C, H, W) tensor;
//   * channels_last (NHWC): one item is one pixel's run of V consecutive channels, read and written as
//     one aligned V-lane vector. Consecutive items are consecutive channel runs, so a warp reads one
//     contiguous stretch of memory per tap.
// The backwards are gathers (each input element sums, in a fixed order, the gradients of the outputs
// whose window covers it; for max, those whose index points at it): no atomics, deterministic.
#pragma once

#include <ATen/NumericUtils.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "checks.h"
#include "cuda/geom.h"
#include "numeric.h"

namespace lenet_ext {
namespace pool {

// True when every index a pooling kernel computes fits in int32 (geom.h): tensor sizes, and the reach
// of a window in each dimension.
inline bool fits_int32(const Pool2dParams& p) {
  const int64_t planes = p.batch * p.channels;
  return lenet_ext::fits_int32({planes * p.win.in[0] * p.win.in[1], planes * p.win.out[0] * p.win.out[1],
                                window_reach(p.win, 0), window_reach(p.win, 1)});
}

// V consecutive channels, loaded and stored as one aligned access (V * sizeof(T) <= 16 bytes).
template <typename T, int V>
struct alignas(sizeof(T) * V) Lanes {
  T v[V];
};

template <typename T, int V>
C10_HOST_DEVICE inline Lanes<T, V> load(const T* p) {
  return *reinterpret_cast<const Lanes<T, V>*>(p);
}

template <typename T, int V>
C10_HOST_DEVICE inline void store(T* p, const Lanes<T, V>& lanes) {
  *reinterpret_cast<Lanes<T, V>*>(p) = lanes;
}

// V channels' sums in the accumulation type (zero to start), stored as V scalar_t (divided first, for an
// average).
template <typename scalar_t, int V>
struct LaneSums {
  using acc = acc_t<scalar_t>;
  acc v[V] = {};

  C10_HOST_DEVICE void add(const Lanes<scalar_t, V>& in) {
    for (int i = 0; i < V; ++i) {
      v[i] += static_cast<acc>(in.v[i]);
    }
  }
  C10_HOST_DEVICE void store_to(scalar_t* p) const {
    Lanes<scalar_t, V> result;
    for (int i = 0; i < V; ++i) {
      result.v[i] = static_cast<scalar_t>(v[i]);
    }
    store<scalar_t, V>(p, result);
  }
  C10_HOST_DEVICE void store_divided(scalar_t* p, acc divisor) const {
    Lanes<scalar_t, V> result;
    for (int i = 0; i < V; ++i) {
      result.v[i] = static_cast<scalar_t>(v[i] / divisor);
    }
    store<scalar_t, V>(p, result);
  }
};

// The widest V (8, 4, 2 or 1) with V * sizeof(T) <= 16 bytes that divides the channel count and keeps
// every given pointer aligned to V elements.
template <typename T>
int vector_width(int64_t channels, std::initializer_list<const void*> pointers) {
  for (int v = 8; v > 1; v /= 2) {
    if (v * sizeof(T) > 16 || channels % v != 0) {
      continue;
    }
    bool aligned = true;
    for (const void* p : pointers) {
      aligned = aligned && reinterpret_cast<uintptr_t>(p) % (v * sizeof(T)) == 0;
    }
    if (aligned) {
      return v;
    }
  }
  return 1;
}

// --------------------------------------------------------------------------------- window geometry

// The first tap of a dilated window at or after 0: torch starts the max window there (and takes its
// index as the all -inf answer), even when that tap is already past the input's end.
template <typename index_t>
C10_HOST_DEVICE inline index_t first_tap(index_t start, index_t d) {
  return start >= 0 ? start : start + ((-start + d - 1) / d) * d;
}

// One max window's taps in one dimension: [first, end) in steps of the dilation.
template <typename index_t>
struct Taps {
  index_t first, end;
};

template <typename index_t>
C10_HOST_DEVICE inline Taps<index_t> max_taps(index_t o, index_t s, index_t p, index_t k, index_t d, index_t n) {
  const index_t start = o * s - p;
  return {first_tap<index_t>(start, d), imin<index_t>(start + (k - 1) * d + 1, n)};
}

// Outputs whose (undilated-span) window can cover input position `i` along one dimension:
// o * s - p <= i <= o * s - p + span, clipped to [0, out).
template <typename index_t>
struct Covering {
  index_t lo, hi;
};

template <typename index_t>
C10_HOST_DEVICE inline Covering<index_t> covering_outputs(index_t i, index_t p, index_t span, index_t s,
                                                          index_t out) {
  const index_t top = i + p;  // o * s <= top
  return {top < span ? index_t{0} : (top - span + s - 1) / s, imin<index_t>(top / s + 1, out)};
}

// torch's avg_pool2d window: [start, start + k) clipped to the padded input gives the count_include_pad
// size, clipped to the input gives the summed range.
template <typename index_t>
struct AvgWindow {
  index_t h0, h1, w0, w1;
  index_t padded_size;
  C10_HOST_DEVICE bool empty() const {
    return h0 >= h1 || w0 >= w1;
  }
};

template <typename index_t>
C10_HOST_DEVICE inline AvgWindow<index_t> avg_window(index_t oh, index_t ow, const Geom<index_t>& g) {
  index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  index_t h1 = imin<index_t>(h0 + g.KH, g.H + g.ph), w1 = imin<index_t>(w0 + g.KW, g.W + g.pw);
  const index_t padded = (h1 - h0) * (w1 - w0);
  return {imax<index_t>(h0, 0), imin<index_t>(h1, g.H), imax<index_t>(w0, 0), imin<index_t>(w1, g.W), padded};
}

// divisor_override == 0 means "none" (the host rejects a zero override before any kernel runs).
template <typename index_t>
C10_HOST_DEVICE inline index_t avg_divisor(const AvgWindow<index_t>& win, bool count_include_pad,
                                           int64_t divisor_override) {
  if (divisor_override != 0) {
    return static_cast<index_t>(divisor_override);
  }
  return count_include_pad ? win.padded_size : (win.h1 - win.h0) * (win.w1 - win.w0);
}

// Arguments every avg item needs besides the geometry.
struct AvgRule {
  bool count_include_pad;
  int64_t divisor_override;
};

// ------------------------------------------------------------------------------------ planar items
// Item i of the forwards is output (plane, oh, ow) = i; of the backwards, input (plane, h, w) = i.

// One output's max over its window: the window's rows are `th` (they depend on oh alone, so a run of
// outputs along a row computes them once), its columns follow from ow.
template <typename acc, typename index_t>
struct MaxOf {
  acc best;
  index_t at;  // flat index in the plane
};

template <typename scalar_t, typename index_t>
C10_HOST_DEVICE inline MaxOf<acc_t<scalar_t>, index_t> max_at(const scalar_t* src, const Taps<index_t>& th,
                                                               index_t ow, const Geom<index_t>& g) {
  using acc = acc_t<scalar_t>;
  const Taps<index_t> tw = max_taps<index_t>(ow, g.sw, g.pw, g.KW, g.dw, g.W);
  MaxOf<acc, index_t> m{lowest<acc>(), th.first * g.W + tw.first};
  for (index_t h = th.first; h < th.end; h += g.dh) {
    for (index_t w = tw.first; w < tw.end; w += g.dw) {
      const acc v = static_cast<acc>(src[h * g.W + w]);
      if (v > m.best || at::_isnan(v)) {
        m.best = v;
        m.at = h * g.W + w;
      }
    }
  }
  return m;
}

template <typename scalar_t, typename index_t, bool kWithIndices>
struct MaxForwardPlanar {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  int64_t* indices;
  Geom<index_t> g;

  C10_HOST_DEVICE void operator()(index_t i) const {
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, plane = i / (g.OW * g.OH);
    const Taps<index_t> th = max_taps<index_t>(oh, g.sh, g.ph, g.KH, g.dh, g.H);
    const auto m = max_at<scalar_t, index_t>(x + plane * g.H * g.W, th, ow, g);
    out[i] = static_cast<scalar_t>(m.best);
    if constexpr (kWithIndices) {
      indices[i] = m.at;
    }
  }
};

template <typename scalar_t, typename index_t>
struct MaxBackwardPlanar {
  using index_type = index_t;
  const scalar_t* grad_out;
  const int64_t* indices;
  scalar_t* grad_in;
  Geom<index_t> g;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    // `at` is i's flat index within its plane, as the forward recorded it
    const index_t at = i % (g.H * g.W), plane = i / (g.H * g.W);
    const Covering<index_t> ch = covering_outputs<index_t>(at / g.W, g.ph, (g.KH - 1) * g.dh, g.sh, g.OH);
    const Covering<index_t> cw = covering_outputs<index_t>(at % g.W, g.pw, (g.KW - 1) * g.dw, g.sw, g.OW);
    const index_t base = plane * g.OH * g.OW;
    acc sum = 0;
    for (index_t oh = ch.lo; oh < ch.hi; ++oh) {
      for (index_t ow = cw.lo; ow < cw.hi; ++ow) {
        const index_t o = base + oh * g.OW + ow;
        if (indices[o] == static_cast<int64_t>(at)) {
          sum += static_cast<acc>(grad_out[o]);
        }
      }
    }
    grad_in[i] = static_cast<scalar_t>(sum);
  }
};

// One output's average over its window (0 for a window with no input element).
template <typename scalar_t, typename index_t>
C10_HOST_DEVICE inline acc_t<scalar_t> avg_at(const scalar_t* src, index_t oh, index_t ow, const Geom<index_t>& g,
                                              const AvgRule& rule) {
  using acc = acc_t<scalar_t>;
  const AvgWindow<index_t> win = avg_window<index_t>(oh, ow, g);
  if (win.empty()) {
    return acc(0);
  }
  acc sum = 0;
  for (index_t h = win.h0; h < win.h1; ++h) {
    for (index_t w = win.w0; w < win.w1; ++w) {
      sum += static_cast<acc>(src[h * g.W + w]);
    }
  }
  return sum / static_cast<acc>(avg_divisor<index_t>(win, rule.count_include_pad, rule.divisor_override));
}

template <typename scalar_t, typename index_t>
struct AvgForwardPlanar {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  Geom<index_t> g;
  AvgRule rule;

  C10_HOST_DEVICE void operator()(index_t i) const {
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, plane = i / (g.OW * g.OH);
    out[i] = static_cast<scalar_t>(avg_at<scalar_t, index_t>(x + plane * g.H * g.W, oh, ow, g, rule));
  }
};

template <typename scalar_t, typename index_t>
struct AvgBackwardPlanar {
  using index_type = index_t;
  const scalar_t* grad_out;
  scalar_t* grad_in;
  Geom<index_t> g;
  AvgRule rule;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const index_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    const Covering<index_t> ch = covering_outputs<index_t>(h, g.ph, g.KH - 1, g.sh, g.OH);
    const Covering<index_t> cw = covering_outputs<index_t>(w, g.pw, g.KW - 1, g.sw, g.OW);
    const scalar_t* src = grad_out + plane * g.OH * g.OW;
    acc sum = 0;
    for (index_t oh = ch.lo; oh < ch.hi; ++oh) {
      for (index_t ow = cw.lo; ow < cw.hi; ++ow) {
        const AvgWindow<index_t> win = avg_window<index_t>(oh, ow, g);
        if (win.empty()) {
          continue;
        }
        sum += static_cast<acc>(src[oh * g.OW + ow]) /
        static_cast<acc>(avg_divisor<index_t>(win, rule.count_include_pad, rule.divisor_override));
      }
    }
    grad_in[i] = static_cast<scalar_t>(sum);
  }
};

// --------------------------------------------------------------------------------- planar run items
// The planar forwards by runs of kRun neighbouring outputs of one row (lenet_ext.backends.cuda_pool_planar
// "runs"): item i is the run starting at output (plane, oh, ow0 = (i % runs_per_row) * kRun). A forward
// that moves little data per output spends its time on the decoding (integer divisions) and the window's
// row range, which a run does once for kRun outputs; the kRun windows are independent, so their loads
// are in flight together.
constexpr int kRun = 4;

template <typename index_t>
struct RowRun {
  index_t plane, oh, ow0, count;  // count: outputs in the run, kRun but at a row's end
  index_t first;                  // flat index of output (plane, oh, ow0)
};

template <typename index_t>
C10_HOST_DEVICE inline RowRun<index_t> row_run(index_t i, const Geom<index_t>& g) {
  const index_t per_row = (g.OW + kRun - 1) / kRun;
  const index_t row = i / per_row, ow0 = (i - row * per_row) * kRun;
  return {row / g.OH, row % g.OH, ow0, imin<index_t>(index_t{kRun}, g.OW - ow0), row * g.OW + ow0};
}

// Work items of the run kernels: every row's runs.
inline int64_t row_runs(const Pool2dParams& p) {
  return p.batch * p.channels * p.win.out[0] * ((p.win.out[1] + kRun - 1) / kRun);
}

// Windows two columns wide at column stride two, with no column padding or dilation (2x2 stride-2
// pooling: LeNet's, VGG's, U-Net's): the kRun windows of a run that lies wholly inside its row read
// kPairSpan consecutive columns of each window row, which the run loads V elements at a time (V from
// vector_width: it divides the row length and the plane is aligned to it, so every run's span is aligned,
// its first column 2 kRun times a multiple of kRun). Every other run, and every other geometry, reads its
// windows one element at a time. Either way the taps are visited in max_at's and avg_at's order, so the
// results are the same bits.
constexpr int kPairSpan = 2 * kRun;

template <typename index_t>
C10_HOST_DEVICE inline bool paired_columns(const Geom<index_t>& g) {
  return g.KW == 2 && g.sw == 2 && g.pw == 0 && g.dw == 1;
}

// Whether run r's kRun windows are all whole pairs of columns inside the row.
template <typename index_t>
C10_HOST_DEVICE inline bool whole_pairs(const RowRun<index_t>& r, const Geom<index_t>& g) {
  return paired_columns<index_t>(g) && r.count == kRun && 2 * (r.ow0 + kRun) <= g.W;
}

// The kPairSpan columns of one window row starting at p, V at a time.
template <typename scalar_t, int V>
C10_HOST_DEVICE inline void load_pairs(const scalar_t* p, acc_t<scalar_t> (&span)[kPairSpan]) {
  static_assert(kPairSpan % V == 0, "whole vectors per span");
LENET_EXT_UNROLL
  for (int j = 0; j < kPairSpan; j += V) {
    const Lanes<scalar_t, V> lanes = load<scalar_t, V>(p + j);
LENET_EXT_UNROLL
    for (int v = 0; v < V; ++v) {
      span[j + v] = static_cast<acc_t<scalar_t>>(lanes.v[v]);
    }
  }
}

// V: the load width of the paired spans (pair_width; 1 for any other geometry).
template <typename scalar_t, typename index_t, int V, bool kWithIndices>
struct MaxForwardRuns {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  int64_t* indices;
  Geom<index_t> g;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const RowRun<index_t> r = row_run<index_t>(i, g);
    const Taps<index_t> th = max_taps<index_t>(r.oh, g.sh, g.ph, g.KH, g.dh, g.H);
    const scalar_t* src = x + r.plane * g.H * g.W;
    if (whole_pairs<index_t>(r, g)) {
      MaxOf<acc, index_t> m[kRun];
LENET_EXT_UNROLL
      for (int k = 0; k < kRun; ++k) {
        m[k] = {lowest<acc>(), th.first * g.W + 2 * (r.ow0 + k)};
      }
      for (index_t h = th.first; h < th.end; h += g.dh) {
        acc span[kPairSpan];
        load_pairs<scalar_t, V>(src + h * g.W + 2 * r.ow0, span);
LENET_EXT_UNROLL
        for (int j = 0; j < kPairSpan; ++j) {  // window j / 2, its column j % 2
          if (span[j] > m[j / 2].best || at::_isnan(span[j])) {
            m[j / 2] = {span[j], h * g.W + 2 * r.ow0 + j};
          }
        }
      }
LENET_EXT_UNROLL
      for (int k = 0; k < kRun; ++k) {
        out[r.first + k] = static_cast<scalar_t>(m[k].best);
        if constexpr (kWithIndices) {
          indices[r.first + k] = m[k].at;
        }
      }
      return;
    }
LENET_EXT_UNROLL
    for (int k = 0; k < kRun; ++k) {
      if (k < r.count) {
        const auto m = max_at<scalar_t, index_t>(src, th, r.ow0 + k, g);
        out[r.first + k] = static_cast<scalar_t>(m.best);
        if constexpr (kWithIndices) {
          indices[r.first + k] = m.at;
        }
      }
    }
  }
};

template <typename scalar_t, typename index_t, int V>
struct AvgForwardRuns {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  Geom<index_t> g;
  AvgRule rule;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const RowRun<index_t> r = row_run<index_t>(i, g);
    const scalar_t* src = x + r.plane * g.H * g.W;
    if (whole_pairs<index_t>(r, g)) {
      // the kRun windows share their rows, and so their divisor: each is two whole columns wide
      const AvgWindow<index_t> win = avg_window<index_t>(r.oh, r.ow0, g);
      acc sum[kRun] = {};
      for (index_t h = win.h0; h < win.h1; ++h) {
        acc span[kPairSpan];
        load_pairs<scalar_t, V>(src + h * g.W + 2 * r.ow0, span);
LENET_EXT_UNROLL
        for (int j = 0; j < kPairSpan; ++j) {
          sum[j / 2] += span[j];
        }
      }
      const acc divisor =
          win.empty() ? acc(1) : static_cast<acc>(avg_divisor<index_t>(win, rule.count_include_pad, rule.divisor_override));
LENET_EXT_UNROLL
      for (int k = 0; k < kRun; ++k) {
        out[r.first + k] = static_cast<scalar_t>(win.empty() ? acc(0) : sum[k] / divisor);
      }
      return;
    }
LENET_EXT_UNROLL
    for (int k = 0; k < kRun; ++k) {
      if (k < r.count) {
        out[r.first + k] = static_cast<scalar_t>(avg_at<scalar_t, index_t>(src, r.oh, r.ow0 + k, g, rule));
      }
    }
  }
};

// The load width of the run items' paired spans for input x (1 when the geometry has no pairs).
template <typename scalar_t, typename index_t>
int pair_width(const Geom<index_t>& g, const scalar_t* x) {
  return paired_columns<index_t>(g) ? vector_width<scalar_t>(g.W, {x}) : 1;
}

// ---------------------------------------------------------------------------- channels_last items
// Item i is the run of channels [c, c + V) at one pixel, c = (i % (C / V)) * V. The forwards' pixel is
// output (n, oh, ow), the backwards' input (n, h, w); either way element (pixel, c) sits at i * V.

template <typename index_t>
struct Pixel {
  index_t n, y, x, c;  // image, row, column, first channel
};

template <typename index_t, int V>
C10_HOST_DEVICE inline Pixel<index_t> pixel_of(index_t i, index_t channels, index_t rows, index_t cols) {
  const index_t runs = channels / V;
  const index_t c = (i % runs) * V;
  index_t rest = i / runs;
  const index_t x = rest % cols;
  rest /= cols;
  return {rest / rows, rest % rows, x, c};
}

template <typename scalar_t, typename index_t, int V, bool kWithIndices>
struct MaxForwardNhwc {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  int64_t* indices;
  Geom<index_t> g;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const Pixel<index_t> px = pixel_of<index_t, V>(i, g.C, g.OH, g.OW);
    const Taps<index_t> th = max_taps<index_t>(px.y, g.sh, g.ph, g.KH, g.dh, g.H);
    const Taps<index_t> tw = max_taps<index_t>(px.x, g.sw, g.pw, g.KW, g.dw, g.W);
    const scalar_t* img = x + px.n * g.H * g.W * g.C + px.c;
    acc best[V];
    index_t best_at[V];
    for (int v = 0; v < V; ++v) {
      best[v] = lowest<acc>();
      best_at[v] = th.first * g.W + tw.first;
    }
    for (index_t h = th.first; h < th.end; h += g.dh) {
      for (index_t w = tw.first; w < tw.end; w += g.dw) {
        const Lanes<scalar_t, V> in = load<scalar_t, V>(img + (h * g.W + w) * g.C);
        for (int v = 0; v < V; ++v) {
          const acc val = static_cast<acc>(in.v[v]);
          if (val > best[v] || at::_isnan(val)) {
            best[v] = val;
            best_at[v] = h * g.W + w;
          }
        }
      }
    }
    Lanes<scalar_t, V> result;
    for (int v = 0; v < V; ++v) {
      result.v[v] = static_cast<scalar_t>(best[v]);
    }
    store<scalar_t, V>(out + i * V, result);
    if constexpr (kWithIndices) {
      for (int v = 0; v < V; ++v) {
        indices[i * V + v] = best_at[v];
      }
    }
  }
};

template <typename scalar_t, typename index_t, int V>
struct MaxBackwardNhwc {
  using index_type = index_t;
  const scalar_t* grad_out;
  const int64_t* indices;
  scalar_t* grad_in;
  Geom<index_t> g;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const Pixel<index_t> px = pixel_of<index_t, V>(i, g.C, g.H, g.W);
    const index_t at = px.y * g.W + px.x;
    const Covering<index_t> ch = covering_outputs<index_t>(px.y, g.ph, (g.KH - 1) * g.dh, g.sh, g.OH);
    const Covering<index_t> cw = covering_outputs<index_t>(px.x, g.pw, (g.KW - 1) * g.dw, g.sw, g.OW);
    LaneSums<scalar_t, V> sum;
    for (index_t oh = ch.lo; oh < ch.hi; ++oh) {
      for (index_t ow = cw.lo; ow < cw.hi; ++ow) {
        const index_t o = ((px.n * g.OH + oh) * g.OW + ow) * g.C + px.c;
        const Lanes<scalar_t, V> go = load<scalar_t, V>(grad_out + o);
        for (int v = 0; v < V; ++v) {
          if (indices[o + v] == static_cast<int64_t>(at)) {
            sum.v[v] += static_cast<acc>(go.v[v]);
          }
        }
      }
    }
    sum.store_to(grad_in + i * V);
  }
};

template <typename scalar_t, typename index_t, int V>
struct AvgForwardNhwc {
  using index_type = index_t;
  const scalar_t* x;
  scalar_t* out;
  Geom<index_t> g;
  AvgRule rule;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const Pixel<index_t> px = pixel_of<index_t, V>(i, g.C, g.OH, g.OW);
    const AvgWindow<index_t> win = avg_window<index_t>(px.y, px.x, g);
    LaneSums<scalar_t, V> sum;
    const scalar_t* img = x + px.n * g.H * g.W * g.C + px.c;
    for (index_t h = win.h0; h < win.h1; ++h) {
      for (index_t w = win.w0; w < win.w1; ++w) {
        sum.add(load<scalar_t, V>(img + (h * g.W + w) * g.C));
      }
    }
    // an empty window sums nothing and gives 0 without dividing (its divisor may be 0)
    const index_t divisor =
        win.empty() ? index_t{1} : avg_divisor<index_t>(win, rule.count_include_pad, rule.divisor_override);
    sum.store_divided(out + i * V, static_cast<acc>(divisor));
  }
};

template <typename scalar_t, typename index_t, int V>
struct AvgBackwardNhwc {
  using index_type = index_t;
  const scalar_t* grad_out;
  scalar_t* grad_in;
  Geom<index_t> g;
  AvgRule rule;

  C10_HOST_DEVICE void operator()(index_t i) const {
    using acc = acc_t<scalar_t>;
    const Pixel<index_t> px = pixel_of<index_t, V>(i, g.C, g.H, g.W);
    const Covering<index_t> ch = covering_outputs<index_t>(px.y, g.ph, g.KH - 1, g.sh, g.OH);
    const Covering<index_t> cw = covering_outputs<index_t>(px.x, g.pw, g.KW - 1, g.sw, g.OW);
    LaneSums<scalar_t, V> sum;
    for (index_t oh = ch.lo; oh < ch.hi; ++oh) {
      for (index_t ow = cw.lo; ow < cw.hi; ++ow) {
        const AvgWindow<index_t> win = avg_window<index_t>(oh, ow, g);
        if (win.empty()) {
          continue;
        }
        const acc divisor = static_cast<acc>(avg_divisor<index_t>(win, rule.count_include_pad, rule.divisor_override));
        const index_t o = ((px.n * g.OH + oh) * g.OW + ow) * g.C + px.c;  // (n, oh, ow, c)
        const Lanes<scalar_t, V> go = load<scalar_t, V>(grad_out + o);
        for (int v = 0; v < V; ++v) {
          sum.v[v] += static_cast<acc>(go.v[v]) / divisor;
        }
      }
    }
    sum.store_to(grad_in + i * V);
  }
};

}  // namespace pool
}  // namespace lenet_ext
