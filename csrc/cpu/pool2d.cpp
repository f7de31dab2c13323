// max_pool2d and avg_pool2d on the CPU: forwards (max with or without indices) and backwards.
//
// float, double and bfloat16 forwards run the per-level kernels of cpu/pool2d_tiles.h (see there: NCHW as
// separable row and column passes, channels_last in registers over the channels), except the strided NCHW
// windows where the direct loops below measured faster (rows_kernels_pay); the channels_last avg
// backward gathers through them too. The loops below serve those, the other dtypes (integer max pooling),
// planes too large for int32 indices, and the backwards.
//
// Algorithm, NCHW: one task is one output row (plane, oh). The row is built tap by tap: for each kernel
// tap (i, j) whose input row lies inside the image, every output column ow in the tap's interior
// [lo, hi) (valid_outputs in shape.h) reads x[ih, ow*sw - pw + j*dw] and folds it into the output row,
// which stays in L1. The inner loop is a plain, branch-free loop over contiguous output columns
// with a compile-time input stride (1, 2, or any), so the compiler vectorises it; columns whose
// tap falls in the padding are simply outside [lo, hi). Taps run in torch's window order (row-major),
// so ties and NaNs resolve exactly as in torch: a value replaces the maximum when it is greater or NaN,
// hence the first maximum wins, a NaN always wins, and an all -inf window keeps its first position.
// Without indices the tap order is free, so max is computed separably instead: the window's input
// rows are reduced into a row buffer (contiguous reads), then the buffer's columns (strided reads).
//
// Algorithm, channels_last: one task is one output pixel; the taps are visited in the same order and
// every fold is a loop over the contiguous channels.
//
// Averages sum the taps in torch's order and divide once by torch's divisor, which factors into a
// row factor times a column factor (window extent with or without the padding), so each row needs
// only a precomputed column table.
//
// Backwards scatter: max adds each output gradient at its index (checked to lie in the plane), avg adds
// grad/divisor over the window. Threads take whole planes (NCHW) or (image, channel block) pairs
// (channels_last), so no two threads ever write the same input element.
//
// Layout: torch's rule (pool_output_format in checks.h): an input whose strides read as channels_last gives
// channels_last outputs and gradients; every other input is read as contiguous NCHW (copied once if
// needed). lenet_ext/ops/fake.py follows the same rule. bfloat16 and float16 are computed in float32 and rounded once at the end.
//
// lenet_ext.backends.pool_algorithm("reference") sends every pass to cpu/reference/pool2d.cpp instead.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/common.h"
#include "cpu/memory.h"
#include "cpu/pool2d_kernels.h"
#include "cpu/reference/reference.h"
#include "cpu/settings.h"
#include "numeric.h"
#include "setting.h"
#include "shape.h"

namespace lenet_ext {
namespace {

// lenet_ext.backends.pool_algorithm("auto" | "reference") sets this through lenet_ext::_set_pool_algorithm.
enum class PoolAlgorithm : int { kAuto = 0, kReference = 1 };
Setting g_pool_algorithm{"_set_pool_algorithm", 2};

bool reference_forced() {
  return g_pool_algorithm.get() == static_cast<int>(PoolAlgorithm::kReference);
}

// ----------------------------------------------------------------------------------------- plumbing

// The input gradient, to be accumulated into. NCHW kernels zero each plane themselves just before
// scattering into it (one pass over memory instead of two); channels_last ones need it zeroed here.
at::Tensor empty_grad_input(const at::Tensor& input, const at::Tensor& go, at::MemoryFormat fmt) {
  at::Tensor gx = cpu::empty_fresh(input.sizes(), go.options().memory_format(fmt));
  return fmt == at::MemoryFormat::ChannelsLast ? gx.zero_() : gx;
}

// Tasks of roughly this many elements of work each keep thread overhead negligible.
constexpr int64_t kGrainWork = 1 << 14;

int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_task));
}

// torch's rule: a value replaces the running maximum when it is greater, or NaN. (x != x is NaN.)
// kFlag evaluates both comparisons (`|`, not `||`), so that the rule is a flag and not a branch, for the
// folds that keep indices and do not vectorise; the vectorised folds run faster with `||`.
template <bool kFlag = false, typename scalar_t>
inline bool replaces(scalar_t v, scalar_t best) {
  if constexpr (kFlag) {
    return (v > best) | (v != v);
  } else {
    return v > best || v != v;
  }
}

// The kernel rows [i0, i1) whose input row oh*s - p + i*d lies in [0, n); the same for columns.
Range valid_taps(int64_t n, int64_t start, int64_t d, int64_t k) {
  const int64_t lo = start < 0 ? ceil_div(-start, d) : 0;
  const int64_t hi = std::min(k, ceil_div(n - start, d));
  return {lo, std::max(lo, hi)};
}

// For each kernel column j, the output columns whose tap j lands inside the input row. They are the
// same for every row, so they are computed once per call rather than per row (the divisions in
// valid_outputs would otherwise cost as much as folding a short row).
std::vector<Range> column_ranges(const Window2d& w) {
  std::vector<Range> cols(w.kernel[1]);
  for (const auto j : c10::irange(w.kernel[1])) {
    cols[j] = valid_outputs(w.in[1], w.pad[1], j * w.dilation[1], w.stride[1], w.out[1]);
  }
  return cols;
}

// ------------------------------------------------------------------------------------ max, NCHW

// `take ? a : b` by bit masks. Written as a select, a fold's `y = take ? v : y` becomes a store skipped by a
// branch (the compiler may not invent the store), and where the loop does not vectorise, as with indices,
// that branch is mispredicted on about half of random data: max_pool2d with indices ran 2-4x slower on a
// Zen 3 than with these masks.
template <typename T>
inline T select_bits(bool take, T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t,
                                  std::conditional_t<sizeof(T) == 4, uint32_t,
                                                     std::conditional_t<sizeof(T) == 2, uint16_t, uint8_t>>>;
  static_assert(sizeof(Bits) == sizeof(T) && std::is_trivially_copyable_v<T>);
  Bits ab, bb;
  std::memcpy(&ab, &a, sizeof(T));
  std::memcpy(&bb, &b, sizeof(T));
  const Bits mask = static_cast<Bits>(-static_cast<int64_t>(take));  // all ones when take
  const Bits r = static_cast<Bits>((ab & mask) | (bb & static_cast<Bits>(~mask)));
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

// Folds one kernel tap into one output row: y[ow] = max(y[ow], xrow[ow*S + off]) for ow in [lo, hi),
// and the index of the winner when kIndices. S == 0 means the stride is only known at run time.
template <typename scalar_t, bool kIndices, int S>
inline void max_fold_row(const scalar_t* __restrict__ xrow, int64_t off, int64_t sw, int64_t pos_base, int64_t lo,
                         int64_t hi, scalar_t* __restrict__ y, int64_t* __restrict__ ind) {
  const int64_t s = S != 0 ? S : sw;
  for (int64_t ow = lo; ow < hi; ++ow) {
    const int64_t iw = ow * s + off;
    const scalar_t v = xrow[iw];
    const bool take = replaces<kIndices>(v, y[ow]);
    if constexpr (kIndices) {
      y[ow] = select_bits(take, v, y[ow]);
      ind[ow] = select_bits(take, pos_base + iw, ind[ow]);
    } else {
      y[ow] = take ? v : y[ow];  // vectorises
    }
  }
}

// Each output of a row starts at its window's first in-image position (first_row + the window's first
// column inside the row), which an all -inf window keeps. Outputs from ow_inside on have their window
// start inside the row. The sizes are parameters, so they stay in registers while the int64 stores run
// (reached through a [&] lambda's captures, they would be reloaded after every store to an int64).
inline void first_positions(int64_t* __restrict__ irow, int64_t OW, int64_t ow_inside, int64_t first_row, int64_t sw,
                            int64_t pw, int64_t dw, int64_t W, int64_t KW) {
  for (int64_t ow = 0; ow < ow_inside; ++ow) {
    const int64_t wstart = ow * sw - pw;
    irow[ow] = first_row + wstart + valid_taps(W, wstart, dw, KW).lo * dw;
  }
  for (int64_t ow = ow_inside; ow < OW; ++ow) {
    irow[ow] = first_row + ow * sw - pw;
  }
}

template <typename scalar_t, bool kIndices, int S>
void max_pool_nchw(const scalar_t* x, scalar_t* y, int64_t* ind, int64_t planes, const Window2d& w) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t KH = w.kernel[0], KW = w.kernel[1], sh = w.stride[0], sw = w.stride[1];
  const int64_t ph = w.pad[0], pw = w.pad[1], dh = w.dilation[0], dw = w.dilation[1];
  // Outputs from ow_inside on have their window start inside the row.
  const int64_t ow_inside = std::min(OW, ceil_div(pw, sw));
  const std::vector<Range> cols = column_ranges(w);
  at::parallel_for(0, planes * OH, grain_for(OW * KH * KW), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      // r = plane * OH + oh is one output row
      const int64_t oh = r % OH;
      const scalar_t* xp = x + (r / OH) * H * W;
      scalar_t* yrow = y + r * OW;
      int64_t* irow = kIndices ? ind + r * OW : nullptr;
      const int64_t hstart = oh * sh - ph;
      const Range rows = valid_taps(H, hstart, dh, KH);
      const int64_t first_row = (hstart + rows.lo * dh) * W;
      std::fill(yrow, yrow + OW, lowest<scalar_t>());
      if constexpr (kIndices) {
        first_positions(irow, OW, ow_inside, first_row, sw, pw, dw, W, KW);
      }
      for (int64_t i = rows.lo; i < rows.hi; ++i) {
        const int64_t ih = hstart + i * dh;
        const scalar_t* xrow = xp + ih * W;
        for (int64_t j = 0; j < KW; ++j) {
          max_fold_row<scalar_t, kIndices, S>(xrow, j * dw - pw, sw, ih * W, cols[j].lo, cols[j].hi, yrow, irow);
        }
      }
    }
  });
}

// Values only: the maximum is separable, so each output row first takes the maximum over the window's
// input rows (contiguous, cheap) into a row buffer, then over the window's columns of that buffer.
// That halves the strided reads of the tap-by-tap fold. The order of taps no longer follows torch's,
// which is harmless without indices: the value of a maximum does not depend on it, and a NaN still wins.
template <typename scalar_t, int S>
void max_pool_values_nchw(const scalar_t* x, scalar_t* y, int64_t planes, const Window2d& w) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t KH = w.kernel[0], KW = w.kernel[1], sh = w.stride[0], sw = w.stride[1];
  const int64_t ph = w.pad[0], pw = w.pad[1], dh = w.dilation[0], dw = w.dilation[1];
  const std::vector<Range> cols = column_ranges(w);
  at::parallel_for(0, planes * OH, grain_for(OW * KH * KW), [&](int64_t r0, int64_t r1) {
    std::vector<scalar_t> buffer(W);
    scalar_t* __restrict__ vmax = buffer.data();
    for (int64_t r = r0; r < r1; ++r) {
      // r = plane * OH + oh is one output row
      const int64_t oh = r % OH;
      const scalar_t* xp = x + (r / OH) * H * W;
      scalar_t* yrow = y + r * OW;
      const int64_t hstart = oh * sh - ph;
      const Range rows = valid_taps(H, hstart, dh, KH);
      std::fill(yrow, yrow + OW, lowest<scalar_t>());
      if (rows.hi == rows.lo) {
        continue;
      }
      std::copy(xp + (hstart + rows.lo * dh) * W, xp + (hstart + rows.lo * dh + 1) * W, vmax);
      for (int64_t i = rows.lo + 1; i < rows.hi; ++i) {
        const scalar_t* __restrict__ xrow = xp + (hstart + i * dh) * W;
        for (int64_t iw = 0; iw < W; ++iw) {
          vmax[iw] = replaces(xrow[iw], vmax[iw]) ? xrow[iw] : vmax[iw];
        }
      }
      for (int64_t j = 0; j < KW; ++j) {
        max_fold_row<scalar_t, false, S>(vmax, j * dw - pw, sw, 0, cols[j].lo, cols[j].hi, yrow, nullptr);
      }
    }
  });
}

// ------------------------------------------------------------------------------- max, channels_last

// Folds one tap into one output pixel's C channels: y[c] = max(y[c], xp[c]), and the tap's position `pos` as
// the index of each winner when kIndices. C and pos are parameters, so that they stay in registers while the
// index stores run.
template <typename scalar_t, bool kIndices>
inline void max_fold_channels(const scalar_t* __restrict__ xp, int64_t pos, int64_t C, scalar_t* __restrict__ y,
                              int64_t* __restrict__ ind) {
  for (int64_t c = 0; c < C; ++c) {
    const bool take = replaces<kIndices>(xp[c], y[c]);
    if constexpr (kIndices) {
      y[c] = select_bits(take, xp[c], y[c]);
      ind[c] = select_bits(take, pos, ind[c]);
    } else {
      y[c] = take ? xp[c] : y[c];  // vectorises
    }
  }
}

template <typename scalar_t, bool kIndices>
void max_pool_nhwc(const scalar_t* x, scalar_t* y, int64_t* ind, int64_t batch, int64_t C, const Window2d& w) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t KH = w.kernel[0], KW = w.kernel[1];
  at::parallel_for(0, batch * OH * OW, grain_for(C * KH * KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      // p = (n * OH + oh) * OW + ow is one output pixel; its C values are contiguous
      const int64_t ow = p % OW, oh = (p / OW) % OH, n = p / (OH * OW);
      const int64_t hstart = oh * w.stride[0] - w.pad[0], wstart = ow * w.stride[1] - w.pad[1];
      const Range rows = valid_taps(H, hstart, w.dilation[0], KH);
      const Range cols = valid_taps(W, wstart, w.dilation[1], KW);
      scalar_t* yp = y + p * C;
      int64_t* ip = kIndices ? ind + p * C : nullptr;
      std::fill(yp, yp + C, lowest<scalar_t>());
      if constexpr (kIndices) {
        std::fill(ip, ip + C, (hstart + rows.lo * w.dilation[0]) * W + wstart + cols.lo * w.dilation[1]);
      }
      for (int64_t i = rows.lo; i < rows.hi; ++i) {
        const int64_t ih = hstart + i * w.dilation[0];
        for (int64_t j = cols.lo; j < cols.hi; ++j) {
          const int64_t pos = ih * W + wstart + j * w.dilation[1];  // flat position in the H x W plane
          max_fold_channels<scalar_t, kIndices>(x + (n * H * W + pos) * C, pos, C, yp, ip);
        }
      }
    }
  });
}

// Calls f(S) with S the input column stride as a compile-time constant when it is 1 or 2 (the loops
// that vectorise), or 0 meaning "any stride, read at run time".
template <typename F>
void with_column_stride(int64_t stride, const F& f) {
  with_constant_or_any<1, 2>(stride, f);
}

// ------------------------------------------------------------------ float and double: per-level kernels

cpu::PoolGeometry geometry_of(const Window2d& w) {
  return {w.in[0],     w.in[1],     w.out[0],  w.out[1],  w.kernel[0], w.kernel[1],
          w.stride[0], w.stride[1], w.pad[0],  w.pad[1],  w.dilation[0], w.dilation[1]};
}

// float, double and bfloat16 (as cpu::bf16_t) run the level's kernels (cpu/pool2d_tiles.h); their indices are as
// wide as the values they compute in, so a float plane must have fewer than 2^31 positions (larger ones take
// the generic loops).
template <typename scalar_t>
constexpr bool kLevelKernels = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double> ||
                               std::is_same_v<scalar_t, cpu::bf16_t>;

// Windows that tile the input (kernel = stride, no padding; LeNet's 2x2 pools): each input element is in at
// most one window.
bool windows_tile(const Window2d& w) {
  return w.kernel[0] == w.stride[0] && w.kernel[1] == w.stride[1] && w.pad[0] == 0 && w.pad[1] == 0;
}

// Which NCHW windows the rows kernels take (the other NCHW windows run the direct loops below, with their
// tiling fast paths). Measured on the Xeon VM at AVX-512, torch's time / ours:
// - Stride 1: always. Each input row is reduced once for KH output rows, in shifted vectors.
// - Column stride 2, output rows of 16 or more: each tap's values for a vector of outputs come from two loads
//   (vload_stride2). On 16x64x112x112 against the direct loops: 3x3 s2 p1 max with indices 2.6x -> 11.0x,
//   2x2 max with indices 4.2x -> 7.1x, avg 3x3 s2 p1 4.9x -> 7.0x, values-only max about even (10.2x,
//   11.2x); avg over windows that tile the row lost (2x2: 6.5x -> 5.3x) and keeps the direct loops.
// - bfloat16, any stride, output rows of 16 or more, against a float copy for the direct loops and a copy
//   back: 3x3 s2 p1 max with indices on 32x64x56x56 5.9x against 1.9x, on 16x64x112x112 9.8x; avg 2x2 on
//   16x64x112x112 8.8x against 0.97x.
// Narrower rows run one column at a time in the rows kernels: on LeNet's 28x28 and 10x10 maps they lost
// 2-7x to the direct loops in float, and to the copies in bfloat16 (256x6x28x28 max 0.94x against 4.1-5.7x).
template <typename scalar_t>
bool rows_kernels_pay(const Window2d& w, bool is_max) {
  if (w.stride[0] == 1 && w.stride[1] == 1) {
    return true;
  }
  if (w.out[1] < 16) {
    return false;
  }
  return std::is_same_v<scalar_t, cpu::bf16_t> || (w.stride[1] == 2 && (is_max || !windows_tile(w)));
}

// Whether the level's kernels run this call: float, double or bfloat16, a plane whose positions fit their index
// type, and a layout they pay in (channels_last, or the NCHW windows of rows_kernels_pay).
template <typename scalar_t>
bool level_kernels_take(const Window2d& w, bool channels_last, bool is_max) {
  if constexpr (kLevelKernels<scalar_t>) {
    if (!channels_last && !rows_kernels_pay<scalar_t>(w, is_max)) {
      return false;
    }
    // every position a window may record, padding-only windows' included, lies in the padded, dilated extent
    const int64_t rows = w.in[0] + 2 * w.pad[0] + w.dilation[0] * w.kernel[0];
    const int64_t cols = w.in[1] + 2 * w.pad[1] + w.dilation[1] * w.kernel[1];
    return rows * cols <= int64_t{std::numeric_limits<cpu::PoolIndex<cpu::PoolCompute<scalar_t>>>::max()};
  }
  return false;
}

// bfloat16 where the level's kernels take the call runs as stored (computed in float inside them): no float
// copy of the input, none of the result. Elsewhere the 16-bit types go through to_compute's float copy.
bool bf16_as_stored(const at::Tensor& input, const Window2d& w, bool channels_last, bool is_max) {
  return input.scalar_type() == at::kBFloat16 && level_kernels_take<cpu::bf16_t>(w, channels_last, is_max);
}

const cpu::bf16_t* bf16_data(const at::Tensor& t) {
  return reinterpret_cast<const cpu::bf16_t*>(t.const_data_ptr<at::BFloat16>());
}
cpu::bf16_t* bf16_data(at::Tensor& t) {
  return reinterpret_cast<cpu::bf16_t*>(t.mutable_data_ptr<at::BFloat16>());
}

// NCHW: threads take ranges of output rows; each keeps its own ring of row-pass results.
template <typename scalar_t>
void pool_rows_level(bool is_max, const scalar_t* x, scalar_t* y, int64_t* ind,
                     const cpu::PoolCompute<scalar_t>* div, int64_t planes, const Window2d& w) {
  using T = cpu::PoolCompute<scalar_t>;
  const cpu::PoolGeometry g = geometry_of(w);
  const auto& kernels = cpu::active_pool_kernels().of<scalar_t>();
  const int64_t ring_rows = is_max ? (g.KH - 1) * g.dh + 1 : g.KH;
  at::parallel_for(0, planes * g.OH, grain_for(g.OW * (g.KH + g.KW)), [&](int64_t r0, int64_t r1) {
    std::vector<T> ring(ring_rows * g.OW);
    std::vector<cpu::PoolIndex<T>> ring_index(ind != nullptr ? ring_rows * g.OW : 0);
    const cpu::PoolRowsJob<scalar_t> job{x, y, ind, div, ring.data(), ring_index.data(), r0, r1, g};
    (is_max ? kernels.max_rows : kernels.avg_rows)(job);
  });
}

// channels_last: threads take ranges of output rows (image, oh).
template <typename scalar_t>
void pool_pixels_level(bool is_max, const scalar_t* x, scalar_t* y, int64_t* ind,
                       const cpu::PoolCompute<scalar_t>* div, int64_t batch, int64_t C, const Window2d& w) {
  const cpu::PoolGeometry g = geometry_of(w);
  const auto& kernels = cpu::active_pool_kernels().of<scalar_t>();
  at::parallel_for(0, batch * g.OH, grain_for(g.OW * C * g.KH * g.KW), [&](int64_t r0, int64_t r1) {
    const cpu::PoolPixelsJob<scalar_t> job{x, y, ind, div, C, r0, r1, g};
    (is_max ? kernels.max_pixels : kernels.avg_pixels)(job);
  });
}

template <typename scalar_t, bool kIndices>
void max_pool_dispatch(const at::Tensor& x, at::Tensor& y, int64_t* ind, const Pool2dParams& p, bool channels_last) {
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  scalar_t* yd = y.mutable_data_ptr<scalar_t>();
  if constexpr (kLevelKernels<scalar_t>) {
    if (level_kernels_take<scalar_t>(p.win, channels_last, true)) {
      if (channels_last) {
        pool_pixels_level<scalar_t>(true, xd, yd, ind, nullptr, p.batch, p.channels, p.win);
      } else {
        pool_rows_level<scalar_t>(true, xd, yd, ind, nullptr, p.batch * p.channels, p.win);
      }
      return;
    }
  }
  if (channels_last) {
    max_pool_nhwc<scalar_t, kIndices>(xd, yd, ind, p.batch, p.channels, p.win);
    return;
  }
  with_column_stride(p.win.stride[1], [&](auto S) {
    if constexpr (kIndices) {
      max_pool_nchw<scalar_t, kIndices, decltype(S)::value>(xd, yd, ind, p.batch * p.channels, p.win);
    } else {
      max_pool_values_nchw<scalar_t, decltype(S)::value>(xd, yd, p.batch * p.channels, p.win);
    }
  });
}

// Shared by both max forwards; `indices` is null for the values-only one.
at::Tensor max_pool2d_run(PoolOp pool_op, const at::Tensor& input, c10::IntArrayRef kernel_size,
                          c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                          bool ceil_mode, at::Tensor* indices) {
  const Pool2dParams p = check_max_pool2d_forward(pool_op, input, kernel_size, stride, padding, dilation, ceil_mode);
  const auto fmt = pool_output_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const bool as_stored = bf16_as_stored(input, p.win, cl, true);
  const at::Tensor x = as_stored ? input.contiguous(fmt) : to_compute(input, fmt);
  const std::vector<int64_t> out_sizes{p.batch, p.channels, p.win.out[0], p.win.out[1]};
  at::Tensor out = cpu::empty_fresh(out_sizes, x.options().memory_format(fmt));
  int64_t* ind = nullptr;
  if (indices != nullptr) {
    *indices = cpu::empty_fresh(out_sizes, x.options().dtype(at::kLong).memory_format(fmt));
    ind = indices->mutable_data_ptr<int64_t>();
  }
  if (out.numel() == 0) {
    return as_result(out, input.scalar_type(), fmt);
  }
  if (as_stored) {
    if (cl) {
      pool_pixels_level<cpu::bf16_t>(true, bf16_data(x), bf16_data(out), ind, nullptr, p.batch, p.channels, p.win);
    } else {
      pool_rows_level<cpu::bf16_t>(true, bf16_data(x), bf16_data(out), ind, nullptr, p.batch * p.channels, p.win);
    }
    return out;
  }
  AT_DISPATCH_V2(x.scalar_type(), "max_pool2d_cpu", AT_WRAP([&] {
                   if (ind != nullptr) {
                     max_pool_dispatch<scalar_t, true>(x, out, ind, p, cl);
                   } else {
                     max_pool_dispatch<scalar_t, false>(x, out, ind, p, cl);
                   }
                 }),
                 AT_EXPAND(AT_FLOATING_TYPES), AT_EXPAND(AT_INTEGRAL_TYPES));
  return as_result(out, input.scalar_type(), fmt);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cpu(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                          c10::IntArrayRef dilation, bool ceil_mode) {
  if (reference_forced()) {
    return max_pool2d_forward_reference(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
  at::Tensor indices;
  at::Tensor out = max_pool2d_run(PoolOp::MaxForward, input, kernel_size, stride, padding, dilation, ceil_mode,
                                  &indices);
  return {out, indices};
}

at::Tensor max_pool2d_forward_values_cpu(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                                         c10::IntArrayRef dilation, bool ceil_mode) {
  if (reference_forced()) {
    return max_pool2d_forward_values_reference(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
  return max_pool2d_run(PoolOp::MaxForwardValues, input, kernel_size, stride, padding, dilation, ceil_mode,
                        nullptr);
}

// ------------------------------------------------------------------------------------ max backward

// One task's first index found outside its plane. It lives in registers during the scatter and reaches
// BadIndex once, when the task ends: an atomic inside the loop is a compiler barrier, after which every
// iteration reloads the lambda's captures from memory (that made the scatter 3x slower on a Zen 3 EPYC).
struct FirstBadIndex {
  bool seen = false;
  int64_t value = 0;
  void note(int64_t v) {
    if (!seen) {
      seen = true;
      value = v;
    }
  }
};

// Remembers the first index any task found outside its plane, so the kernel can finish and then report it.
struct BadIndex {
  std::atomic<bool> seen{false};
  int64_t value = 0;
  void record(const FirstBadIndex& found) {
    bool expected = false;
    if (found.seen && seen.compare_exchange_strong(expected, true)) {
      value = found.value;
    }
  }
};

template <typename scalar_t>
void max_unpool_nchw(const scalar_t* go, const int64_t* ind, scalar_t* gx, int64_t planes, int64_t plane_in,
                     int64_t plane_out, BadIndex& bad) {
  at::parallel_for(0, planes, grain_for(plane_out), [&](int64_t c0, int64_t c1) {
    FirstBadIndex found;
    for (int64_t c = c0; c < c1; ++c) {
      // plane c's pointers as locals of the task, which stay in registers through the scatter
      scalar_t* gp = gx + c * plane_in;
      const scalar_t* gop = go + c * plane_out;
      const int64_t* ip = ind + c * plane_out;
      std::fill(gp, gp + plane_in, scalar_t(0));  // zeroed here, while the plane is about to be in cache
      for (int64_t k = 0; k < plane_out; ++k) {
        const int64_t pos = ip[k];  // where output k of plane c took its maximum
        if (pos < 0 || pos >= plane_in) {
          found.note(pos);
          continue;
        }
        gp[pos] += gop[k];
      }
    }
    bad.record(found);
  });
}

// The channels_last backwards split each image into tasks of kChannelBlock channels, so that different
// tasks never touch the same gradient element. A task's channels at one pixel are 256 bytes of float
// (whole cache lines when the channel count is a multiple of 16), and an image of more than 64 channels
// still gives several tasks to the threads.
constexpr int64_t kChannelBlock = 64;

// Pixels the channels_last max backward zeroes at a time, ahead of its scatter.
constexpr int64_t kZeroAhead = 64;

template <typename scalar_t>
void max_unpool_nhwc(const scalar_t* go, const int64_t* ind, scalar_t* gx, int64_t batch, int64_t C,
                     int64_t plane_in, int64_t plane_out, BadIndex& bad) {
  // Tasks are (image, block of channels).
  const int64_t blocks = ceil_div(C, kChannelBlock);
  at::parallel_for(0, batch * blocks, grain_for(plane_out * kChannelBlock), [&](int64_t t0, int64_t t1) {
    FirstBadIndex found;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, c_lo = (t % blocks) * kChannelBlock, c_hi = std::min(C, c_lo + kChannelBlock);
      scalar_t* gimg = gx + n * plane_in * C;
      // The task zeroes its pixels' channels [c_lo, c_hi) just ahead of the scatter, while they are about to
      // be in cache, instead of a separate pass over the whole gradient: positions below `zeroed` are. The
      // windows move forward through the plane, so this is one pass; an index further on (any valid index
      // may come in) zeroes up to itself first.
      int64_t zeroed = 0;
      auto zero_to = [&](int64_t end) {
        end = std::min(plane_in, std::max(end, zeroed + kZeroAhead));
        for (int64_t q = zeroed; q < end; ++q) {
          std::fill(gimg + q * C + c_lo, gimg + q * C + c_hi, scalar_t(0));
        }
        zeroed = end;
      };
      for (int64_t q = 0; q < plane_out; ++q) {
        const int64_t base = (n * plane_out + q) * C;  // output pixel q of image n
        const scalar_t* gop = go + base;
        const int64_t* ip = ind + base;
        for (int64_t c = c_lo; c < c_hi; ++c) {
          const int64_t pos = ip[c];
          if (pos < 0 || pos >= plane_in) {
            found.note(pos);
            continue;
          }
          if (pos >= zeroed) {
            zero_to(pos + 1);
          }
          gimg[pos * C + c] += gop[c];
        }
      }
      if (zeroed < plane_in) {
        zero_to(plane_in);
      }
    }
    bad.record(found);
  });
}

// An (out H x out W) bool mask of the windows that read no input element, or an undefined tensor when
// there are none. A window reads input only if one of its row taps and one of its column taps do.
at::Tensor padding_only_windows(const Pool2dParams& p) {
  std::vector<bool> empty[2];
  bool any = false;
  for (const auto dim : c10::irange(2)) {
    const Window2d& w = p.win;
    empty[dim].assign(w.out[dim], true);
    for (const auto k : c10::irange(w.kernel[dim])) {
      const Range r = valid_outputs(w.in[dim], w.pad[dim], k * w.dilation[dim], w.stride[dim], w.out[dim]);
      for (int64_t o = r.lo; o < r.hi; ++o) {
        empty[dim][o] = false;
      }
    }
    for (const bool e : empty[dim]) {
      any = any || e;
    }
  }
  if (!any) {
    return {};
  }
  at::Tensor mask = at::zeros({p.win.out[0], p.win.out[1]}, at::kBool);
  auto m = mask.accessor<bool, 2>();
  for (const auto oh : c10::irange(p.win.out[0])) {
    for (const auto ow : c10::irange(p.win.out[1])) {
      m[oh][ow] = empty[0][oh] || empty[1][ow];
    }
  }
  return mask;
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                                   c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, bool ceil_mode) {
  if (reference_forced()) {
    return max_pool2d_backward_reference(grad_output, input, indices, kernel_size, stride, padding, dilation,
                                         ceil_mode);
  }
  const Pool2dParams p =
      check_max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
  const auto fmt = pool_output_format(input);
  at::Tensor go = to_compute(grad_output, fmt);
  at::Tensor ind = indices.contiguous(fmt);
  // A dilated window can read only padding (e.g. a 1-row input, kernel 2, dilation 2, padding 1). Its
  // output is -inf whatever the input, so it gets no gradient; torch's forward (and ours) still records
  // an index past the plane for it, which must not count as invalid. Such windows are rare: mask them
  // out only when the shape has any.
  const at::Tensor padding_only = padding_only_windows(p);
  if (padding_only.defined()) {
    go = go.masked_fill(padding_only, 0).contiguous(fmt);
    ind = ind.masked_fill(padding_only, 0).contiguous(fmt);
  }
  // Both scatters zero the gradient as they go (channels_last: max_unpool_nhwc), so it starts empty.
  at::Tensor gx = cpu::empty_fresh(input.sizes(), go.options().memory_format(fmt));
  const int64_t plane_in = p.win.in[0] * p.win.in[1], plane_out = p.win.out[0] * p.win.out[1];
  BadIndex bad;
  if (go.numel() == 0) {
    gx.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "max_pool2d_backward_cpu", [&] {
      if (fmt == at::MemoryFormat::ChannelsLast) {
        max_unpool_nhwc(go.const_data_ptr<scalar_t>(), ind.const_data_ptr<int64_t>(),
                        gx.mutable_data_ptr<scalar_t>(), p.batch, p.channels, plane_in, plane_out, bad);
      } else {
        max_unpool_nchw(go.const_data_ptr<scalar_t>(), ind.const_data_ptr<int64_t>(),
                        gx.mutable_data_ptr<scalar_t>(), p.batch * p.channels, plane_in, plane_out, bad);
      }
    });
  }
  check_max_index(!bad.seen.load(), bad.value, p);
  return as_result(gx, input.scalar_type(), fmt);
}

// --------------------------------------------------------------------------------------------- avg

// torch's divisor: the window clipped to the padded input (count_include_pad) or to the input itself,
// or divisor_override. It is (rows factor) * (columns factor), which these tables hold per output.
// They hold integers; doubles make the product exact (below 2^53) and free of int64 overflow, so
// converting it to scalar_t rounds once, as torch's int64 -> scalar_t conversion does.
struct AvgFactors {
  std::vector<double> rows;
  std::vector<double> cols;
};

std::vector<double> avg_factors_1d(int64_t n, int64_t k, int64_t s, int64_t p, int64_t out, bool include_pad) {
  std::vector<double> f(out);
  for (const auto o : c10::irange(out)) {
    const int64_t start = o * s - p;
    const int64_t end = std::min(start + k, n + p);  // the window may hang over the padding in ceil_mode
    f[o] = include_pad ? double(end - start) : double(std::min(end, n) - std::max<int64_t>(start, 0));
  }
  return f;
}

AvgFactors avg_factors(const Window2d& w, bool count_include_pad, std::optional<int64_t> divisor_override) {
  if (divisor_override.has_value()) {
    // the whole divisor goes in the rows table; the columns contribute 1
    return {std::vector<double>(w.out[0], double(*divisor_override)), std::vector<double>(w.out[1], 1.0)};
  }
  return {avg_factors_1d(w.in[0], w.kernel[0], w.stride[0], w.pad[0], w.out[0], count_include_pad),
          avg_factors_1d(w.in[1], w.kernel[1], w.stride[1], w.pad[1], w.out[1], count_include_pad)};
}

// Every output's divisor, (out H x out W) of them, rounded once to scalar_t as torch rounds its int64 one.
template <typename scalar_t>
std::vector<scalar_t> divisor_table(const AvgFactors& f) {
  std::vector<scalar_t> div(f.rows.size() * f.cols.size());
  for (const auto oh : c10::irange(f.rows.size())) {
    for (const auto ow : c10::irange(f.cols.size())) {
      div[oh * f.cols.size() + ow] = scalar_t(f.rows[oh] * f.cols[ow]);
    }
  }
  return div;
}

template <typename scalar_t, int S>
void avg_pool_nchw(const scalar_t* x, scalar_t* y, int64_t planes, const Window2d& w, const AvgFactors& f) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t KH = w.kernel[0], KW = w.kernel[1], sh = w.stride[0], pw = w.pad[1];
  const int64_t sw = S != 0 ? S : w.stride[1];
  const std::vector<Range> cols = column_ranges(w);
  at::parallel_for(0, planes * OH, grain_for(OW * KH * KW), [&](int64_t r0, int64_t r1) {
    const double* __restrict__ col_factor = f.cols.data();
    for (int64_t r = r0; r < r1; ++r) {
      // r = plane * OH + oh is one output row
      const int64_t oh = r % OH;
      const double row_factor = f.rows[oh];
      const scalar_t* xp = x + (r / OH) * H * W;
      scalar_t* yrow = y + r * OW;
      const int64_t hstart = oh * sh - w.pad[0];
      const Range rows = valid_taps(H, hstart, 1, KH);
      std::fill(yrow, yrow + OW, scalar_t(0));
      for (int64_t i = rows.lo; i < rows.hi; ++i) {
        const scalar_t* __restrict__ xrow = xp + (hstart + i) * W;
        scalar_t* __restrict__ yr = yrow;
        for (int64_t j = 0; j < KW; ++j) {
          const int64_t off = j - pw;
          for (int64_t ow = cols[j].lo; ow < cols[j].hi; ++ow) {
            yr[ow] += xrow[ow * sw + off];
          }
        }
      }
      for (int64_t ow = 0; ow < OW; ++ow) {
        yrow[ow] /= scalar_t(row_factor * col_factor[ow]);  // torch divides (no reciprocal): same rounding
      }
    }
  });
}

template <typename scalar_t>
void avg_pool_nhwc(const scalar_t* x, scalar_t* y, int64_t batch, int64_t C, const Window2d& w, const AvgFactors& f) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  at::parallel_for(0, batch * OH * OW, grain_for(C * w.kernel[0] * w.kernel[1]), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      // p = (n * OH + oh) * OW + ow is one output pixel; its C values are contiguous
      const int64_t ow = p % OW, oh = (p / OW) % OH, n = p / (OH * OW);
      const int64_t hstart = oh * w.stride[0] - w.pad[0], wstart = ow * w.stride[1] - w.pad[1];
      const Range rows = valid_taps(H, hstart, 1, w.kernel[0]);
      const Range cols = valid_taps(W, wstart, 1, w.kernel[1]);
      scalar_t* yp = y + p * C;
      std::fill(yp, yp + C, scalar_t(0));
      for (int64_t ih = hstart + rows.lo; ih < hstart + rows.hi; ++ih) {
        for (int64_t iw = wstart + cols.lo; iw < wstart + cols.hi; ++iw) {
          const scalar_t* xp = x + ((n * H + ih) * W + iw) * C;
          for (int64_t c = 0; c < C; ++c) {
            yp[c] += xp[c];
          }
        }
      }
      const scalar_t div = scalar_t(f.rows[oh] * f.cols[ow]);
      for (int64_t c = 0; c < C; ++c) {
        yp[c] /= div;
      }
    }
  });
}

at::Tensor avg_pool2d_forward_cpu(const at::Tensor& input, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                  c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                  std::optional<int64_t> divisor_override) {
  if (reference_forced()) {
    return avg_pool2d_forward_reference(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override);
  }
  const Pool2dParams p =
      check_avg_pool2d_forward(input, kernel_size, stride, padding, ceil_mode, divisor_override).pool;
  const auto fmt = pool_output_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const bool as_stored = bf16_as_stored(input, p.win, cl, false);
  const at::Tensor x = as_stored ? input.contiguous(fmt) : to_compute(input, fmt);
  at::Tensor out = cpu::empty_fresh({p.batch, p.channels, p.win.out[0], p.win.out[1]}, x.options().memory_format(fmt));
  if (out.numel() > 0 && as_stored) {
    const std::vector<float> div = divisor_table<float>(avg_factors(p.win, count_include_pad, divisor_override));
    if (cl) {
      pool_pixels_level<cpu::bf16_t>(false, bf16_data(x), bf16_data(out), nullptr, div.data(), p.batch, p.channels,
                                     p.win);
    } else {
      pool_rows_level<cpu::bf16_t>(false, bf16_data(x), bf16_data(out), nullptr, div.data(), p.batch * p.channels,
                                   p.win);
    }
    return out;
  }
  if (out.numel() > 0) {
    const AvgFactors f = avg_factors(p.win, count_include_pad, divisor_override);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "avg_pool2d_cpu", [&] {
      const scalar_t* xd = x.const_data_ptr<scalar_t>();
      scalar_t* yd = out.mutable_data_ptr<scalar_t>();
      const int64_t planes = p.batch * p.channels;
      if (level_kernels_take<scalar_t>(p.win, fmt == at::MemoryFormat::ChannelsLast, false)) {
        const std::vector<scalar_t> div = divisor_table<scalar_t>(f);
        if (fmt == at::MemoryFormat::ChannelsLast) {
          pool_pixels_level<scalar_t>(false, xd, yd, nullptr, div.data(), p.batch, p.channels, p.win);
        } else {
          pool_rows_level<scalar_t>(false, xd, yd, nullptr, div.data(), planes, p.win);
        }
        return;
      }
      if (fmt == at::MemoryFormat::ChannelsLast) {
        avg_pool_nhwc(xd, yd, p.batch, p.channels, p.win, f);
      } else {
        with_column_stride(p.win.stride[1],
                           [&](auto S) { avg_pool_nchw<scalar_t, decltype(S)::value>(xd, yd, planes, p.win, f); });
      }
    });
  }
  return as_result(out, input.scalar_type(), fmt);
}

// NCHW float and double, stride 1: the level's gather (cpu/pool2d_tiles.h), each input row written once from
// a ring of share rows, instead of a scatter into a zeroed plane. On 16x64x112x112, 3x3 s1 p1 went from 5.0x
// torch's speed (the scatter) to 10.6-11.6x (Xeon VM, AVX-512); at stride 2 a gather was no faster (3x3 s2 p1:
// 3.1-3.6x against the scatter's 3.1x), and the scatter stays.
template <typename scalar_t>
void avg_gather_rows_level(const scalar_t* go, scalar_t* gx, const scalar_t* div, int64_t planes,
                           const Window2d& w) {
  const cpu::PoolGeometry g = geometry_of(w);
  const auto& kernels = cpu::active_pool_kernels().of<scalar_t>();
  at::parallel_for(0, planes * g.H, grain_for(g.W * g.KH), [&](int64_t r0, int64_t r1) {
    std::vector<scalar_t> ring(g.KH * g.W);
    kernels.avg_gather_rows({go, gx, div, ring.data(), r0, r1, g});
  });
}

template <typename scalar_t, int S>
void avg_unpool_nchw(const scalar_t* go, scalar_t* gx, int64_t planes, const Window2d& w, const AvgFactors& f) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t KH = w.kernel[0], KW = w.kernel[1], sh = w.stride[0], pw = w.pad[1];
  const int64_t sw = S != 0 ? S : w.stride[1];
  const std::vector<Range> cols = column_ranges(w);
  constexpr int64_t kS = S != 0 ? S : 1;
  // windows that tile the input give each input element at most one share: written once, no zero-fill
  const bool tiling = S != 0 && windows_tile(w);
  const int64_t full = std::min(OW, W / KW);  // tiling: windows wholly inside a row (ceil_mode may cut one)
  at::parallel_for(0, planes, grain_for(OH * OW * KH * KW), [&](int64_t c0, int64_t c1) {
    std::vector<scalar_t> share(OW);  // each output's gradient divided by its divisor
    const double* __restrict__ col_factor = f.cols.data();
    for (int64_t c = c0; c < c1; ++c) {
      scalar_t* gp = gx + c * H * W;
      if (!tiling) {
        std::fill(gp, gp + H * W, scalar_t(0));  // zeroed here, while the plane is about to be in cache
      }
      for (int64_t oh = 0; oh < OH; ++oh) {
        const double row_factor = f.rows[oh];
        const scalar_t* __restrict__ grow = go + (c * OH + oh) * OW;
        for (int64_t ow = 0; ow < OW; ++ow) {
          share[ow] = grow[ow] / scalar_t(row_factor * col_factor[ow]);
        }
        const int64_t hstart = oh * sh - w.pad[0];
        const Range rows = valid_taps(H, hstart, 1, KH);
        for (int64_t i = rows.lo; i < rows.hi; ++i) {
          scalar_t* __restrict__ gxrow = gp + (hstart + i) * W;
          const scalar_t* __restrict__ sh_row = share.data();
          if (tiling) {
            for (int64_t ow = 0; ow < full; ++ow) {
#pragma GCC unroll 8
              for (int64_t j = 0; j < kS; ++j) {
                gxrow[ow * kS + j] = sh_row[ow];
              }
            }
            for (int64_t iw = full * KW; iw < W; ++iw) {  // a cut window's columns, then any not pooled
              gxrow[iw] = iw / KW < OW ? sh_row[iw / KW] : scalar_t(0);
            }
            continue;
          }
          for (int64_t j = 0; j < KW; ++j) {
            const int64_t off = j - pw;
            for (int64_t ow = cols[j].lo; ow < cols[j].hi; ++ow) {
              gxrow[ow * sw + off] += sh_row[ow];
            }
          }
        }
      }
      if (tiling) {
        std::fill(gp + std::min(H, OH * KH) * W, gp + H * W, scalar_t(0));  // rows no window covers
      }
    }
  });
}

template <typename scalar_t>
void avg_unpool_nhwc(const scalar_t* go, scalar_t* gx, int64_t batch, int64_t C, const Window2d& w,
                     const AvgFactors& f) {
  const int64_t H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  // Tasks are (image, block of channels).
  const int64_t blocks = ceil_div(C, kChannelBlock);
  at::parallel_for(0, batch * blocks, grain_for(OH * OW * kChannelBlock), [&](int64_t t0, int64_t t1) {
    std::vector<scalar_t> share(kChannelBlock);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, c_lo = (t % blocks) * kChannelBlock, cb = std::min(C, c_lo + kChannelBlock) - c_lo;
      for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t ow = 0; ow < OW; ++ow) {
          const scalar_t* gop = go + ((n * OH + oh) * OW + ow) * C + c_lo;
          const scalar_t div = scalar_t(f.rows[oh] * f.cols[ow]);
          for (int64_t c = 0; c < cb; ++c) {
            share[c] = gop[c] / div;
          }
          const int64_t hstart = oh * w.stride[0] - w.pad[0], wstart = ow * w.stride[1] - w.pad[1];
          const Range rows = valid_taps(H, hstart, 1, w.kernel[0]);
          const Range cols = valid_taps(W, wstart, 1, w.kernel[1]);
          for (int64_t ih = hstart + rows.lo; ih < hstart + rows.hi; ++ih) {
            for (int64_t iw = wstart + cols.lo; iw < wstart + cols.hi; ++iw) {
              scalar_t* gxp = gx + ((n * H + ih) * W + iw) * C + c_lo;
              for (int64_t c = 0; c < cb; ++c) {
                gxp[c] += share[c];
              }
            }
          }
        }
      }
    }
  });
}

at::Tensor avg_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  if (reference_forced()) {
    return avg_pool2d_backward_reference(grad_output, input, kernel_size, stride, padding, ceil_mode,
                                         count_include_pad, divisor_override);
  }
  const Pool2dParams p =
      check_avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, divisor_override).pool;
  const auto fmt = pool_output_format(input);
  const at::Tensor go = to_compute(grad_output, fmt);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  if (cl && go.numel() > 0 && (go.scalar_type() == at::kFloat || go.scalar_type() == at::kDouble)) {
    // every input element gathers its windows' shares and is written once (no zero-fill)
    at::Tensor gx = cpu::empty_fresh(input.sizes(), go.options().memory_format(fmt));
    const AvgFactors f = avg_factors(p.win, count_include_pad, divisor_override);
    AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "avg_pool2d_backward_cpu", [&] {
      const std::vector<scalar_t> div = divisor_table<scalar_t>(f);
      const cpu::PoolGeometry g = geometry_of(p.win);
      const auto& kernels = cpu::active_pool_kernels().of<scalar_t>();
      const scalar_t* god = go.const_data_ptr<scalar_t>();
      scalar_t* gxd = gx.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, p.batch * g.H, grain_for(g.W * p.channels * 4), [&](int64_t r0, int64_t r1) {
        kernels.avg_gather_pixels({god, gxd, div.data(), p.channels, r0, r1, g});
      });
    });
    return as_result(gx, input.scalar_type(), fmt);
  }
  at::Tensor gx = empty_grad_input(input, go, fmt);
  if (go.numel() > 0) {
    const AvgFactors f = avg_factors(p.win, count_include_pad, divisor_override);
    AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "avg_pool2d_backward_cpu", [&] {
      const scalar_t* god = go.const_data_ptr<scalar_t>();
      scalar_t* gxd = gx.mutable_data_ptr<scalar_t>();
      const int64_t planes = p.batch * p.channels;
      if (!cl && p.win.stride[0] == 1 && p.win.stride[1] == 1) {
        const std::vector<scalar_t> div = divisor_table<scalar_t>(f);
        avg_gather_rows_level<scalar_t>(god, gxd, div.data(), planes, p.win);
      } else if (fmt == at::MemoryFormat::ChannelsLast) {
        avg_unpool_nhwc(god, gxd, p.batch, p.channels, p.win, f);
      } else {
        with_column_stride(p.win.stride[1],
                           [&](auto S) { avg_unpool_nchw<scalar_t, decltype(S)::value>(god, gxd, planes, p.win, f); });
      }
    });
  }
  return as_result(gx, input.scalar_type(), fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CPU, m) {
  m.impl("max_pool2d_forward", &max_pool2d_forward_cpu);
  m.impl("max_pool2d_forward_values", &max_pool2d_forward_values_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
  m.impl("avg_pool2d_forward", &avg_pool2d_forward_cpu);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward_cpu);
}

int64_t cpu::set_pool_algorithm(int64_t algorithm) {
  return g_pool_algorithm.set(algorithm);
}

}  // namespace lenet_ext
