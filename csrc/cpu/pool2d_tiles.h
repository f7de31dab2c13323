// The pooling forwards' loops (max with or without indices, avg), written once and compiled once per
// instruction-set level: cpu/level_*.cpp include this file after cpu/tiles.h, with the same macros set
// (LENET_CPU_LEVEL, LENET_CPU_LEVEL_SHAPE, LENET_CPU_LEVEL_TABLE; see cpu/tiles.h). The table they fill is
// cpu/pool2d_kernels.h's; cpu/pool2d.cpp drives them.
//
// NCHW (rows): separable. A window's maximum (or sum) is the maximum (sum) over its KH rows of each row's
// maximum (sum) over KW columns. The row pass reduces one input row to OW window values; they go to a ring
// of the (KH - 1) * dh + 1 latest input rows, so that consecutive output rows (stride 1: GoogLeNet's 3x3)
// share them and every input element is read once per pass, not KH * KW times. The column pass folds an
// output row's KH ring rows. Interior columns (every tap inside the row) run in vectors of the level's
// width; stride 1 reads the taps as shifted vectors, other strides as a tap-by-tap loop the compiler
// vectorises; the few edge columns and the tails run one at a time.
//
// channels_last (pixels): an output pixel's channels are contiguous, so a pixel is folded over its taps in
// registers, four vectors of channels at a time, then one, then single channels.
//
// Most rows hold no NaN. The NCHW kernels scan each input row for one as it enters the ring (one compare per
// vector) and fold NaN-free rows, and output rows whose ring rows are all NaN-free, with the greater-than
// compare alone: half the compares of the full rule, with the same result where no value is NaN.
//
// torch's rules hold in both. Max: a value replaces the running maximum when it is greater or NaN, taps in
// row-major order: the first maximum wins, the last NaN wins, and a window whose values are all -inf keeps
// its first in-image position. The separable order gives the same winner: a row's fold picks that row's
// winner by the same rule, and folding the rows in order with it picks the window's. A window of padding
// alone is -inf at the position (first valid row or its would-be row) * W + (first valid column or its
// would-be column), as cpu/pool2d.cpp's other paths record it. Avg: each output sums its k values directly
// (each row's KW values, then the KH row sums; no running sum over a long row), then divides once by
// torch's divisor.
//
// Plain C++ with GCC/Clang vector extensions; no ATen (see cpu/vec.h).
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/pool2d_kernels.h"
#include "numeric.h"  // lowest<T>(): max pooling's identity, shared with the other kernels

#define LENET_POOL_CAT_(a, b) a##b
#define LENET_POOL_CAT(a, b) LENET_POOL_CAT_(a, b)

namespace lenet_ext {
namespace cpu {
namespace LENET_CPU_LEVEL {
namespace pool {
namespace {

constexpr LevelShape kPoolShape = LENET_CPU_LEVEL_SHAPE;

// One register of T, and one of T's index type (as wide as T, so one comparison mask selects both).
template <typename T>
struct PV;
template <>
struct PV<float> {
  typedef float V __attribute__((vector_size(kPoolShape.vec_bytes)));
  typedef int32_t I __attribute__((vector_size(kPoolShape.vec_bytes)));
};
template <>
struct PV<double> {
  typedef double V __attribute__((vector_size(kPoolShape.vec_bytes)));
  typedef int64_t I __attribute__((vector_size(kPoolShape.vec_bytes)));
};
template <typename T>
constexpr int kN = kPoolShape.vec_bytes / static_cast<int>(sizeof(T));

template <typename T>
inline typename PV<T>::I iota() {
  typename PV<T>::I v;
  for (int k = 0; k < kN<T>; ++k) {
    v[k] = k;
  }
  return v;
}
// The index vector is written lane by lane into int64: a loop the compiler widens in registers.
template <typename T>
inline void store_index(int64_t* __restrict__ p, const typename PV<T>::I& v) {
  PoolIndex<T> tmp[kN<T>];
  std::memcpy(tmp, &v, sizeof(tmp));
  for (int k = 0; k < kN<T>; ++k) {
    p[k] = tmp[k];
  }
}

// Storage and compute. float and double are computed as stored. bfloat16 (bf16_t: c10::BFloat16's bits) is
// computed in float: widened on load (its bits are a float's upper half) and rounded to nearest even on
// store, NaN as 0x7FC0, as c10::BFloat16 rounds: one rounding, at the end, and none for a maximum (a stored
// value rounds to itself).
// A float register's bits, and the bfloat16 values of as many lanes as stored (half its bytes).
typedef uint32_t FloatBits __attribute__((vector_size(kPoolShape.vec_bytes)));
typedef uint16_t BF16Lanes __attribute__((vector_size(kPoolShape.vec_bytes / 2)));

template <typename X>
struct ComputeOf {
  using type = X;
};
template <>
struct ComputeOf<bf16_t> {
  using type = float;
};
template <typename X>
using Compute = typename ComputeOf<X>::type;

template <typename X>
inline typename PV<Compute<X>>::V vload(const X* p) {
  using V = typename PV<Compute<X>>::V;
  if constexpr (std::is_same_v<X, bf16_t>) {
    BF16Lanes h;
    std::memcpy(&h, p, sizeof(h));
    const FloatBits bits = __builtin_convertvector(h, FloatBits) << 16;
    V v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  } else {
    return load<V>(p);
  }
}

template <typename X>
inline void vstore(X* p, const typename PV<Compute<X>>::V& v) {
  if constexpr (std::is_same_v<X, bf16_t>) {
    FloatBits bits;
    std::memcpy(&bits, &v, sizeof(bits));
    FloatBits rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    rounded = (v != v) ? FloatBits{} + 0x7FC0u : rounded;
    const BF16Lanes h = __builtin_convertvector(rounded, BF16Lanes);
    std::memcpy(p, &h, sizeof(h));
  } else {
    store(p, v);
  }
}

template <typename X>
inline Compute<X> get(const X* p) {
  if constexpr (std::is_same_v<X, bf16_t>) {
    uint16_t h;
    std::memcpy(&h, p, sizeof(h));
    const uint32_t bits = uint32_t{h} << 16;
    float v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  } else {
    return *p;
  }
}

template <typename X>
inline void put(X* p, Compute<X> v) {
  if constexpr (std::is_same_v<X, bf16_t>) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    const uint16_t h = v != v ? uint16_t{0x7FC0} : static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    std::memcpy(p, &h, sizeof(h));
  } else {
    *p = v;
  }
}

// Stride 2: x[p], x[p + 2], ..., x[p + 2(N - 1)] as one vector, from two loads of N and their even lanes.
// It reads up to x[p + 2N - 1].
template <int... Lanes>
constexpr auto even_lanes(std::integer_sequence<int, Lanes...>) {
  return std::integer_sequence<int, (2 * Lanes)...>{};
}
template <typename V, int... Evens>
inline V evens_of(const V& a, const V& b, std::integer_sequence<int, Evens...>) {
  return __builtin_shufflevector(a, b, Evens...);
}
template <typename X>
inline typename PV<Compute<X>>::V vload_stride2(const X* p) {
  constexpr int N = kN<Compute<X>>;
  return evens_of(vload(p), vload(p + N), even_lanes(std::make_integer_sequence<int, N>{}));
}

// torch's rule, one value: replaces the maximum when greater, or NaN.
template <typename T>
inline bool takes(T v, T best) {
  return (v > best) | (v != v);
}

// The same rule for a vector, lane by lane. kNaN false: the caller knows that no value it folds is NaN
// (holds_nan below), and one compare does.
template <bool kNaN, typename V>
inline auto takes_lanes(const V& v, const V& best) {
  if constexpr (kNaN) {
    return (v > best) | (v != v);
  } else {
    return v > best;
  }
}

// Whether p[0, n) holds a NaN: one compare per vector. Almost no row does, and a row known free of them
// folds with one compare per tap instead of two.
template <typename X>
bool holds_nan(const X* __restrict__ p, int64_t n) {
  using T = Compute<X>;
  using V = typename PV<T>::V;
  using I = typename PV<T>::I;
  constexpr int N = kN<T>;
  I any{};
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const V v = vload(p + i);
    any |= v != v;
  }
  bool found = false;
  for (int k = 0; k < N; ++k) {
    found |= any[k] != 0;
  }
  for (; i < n; ++i) {
    const T v = get(p + i);
    found |= v != v;
  }
  return found;
}

inline int64_t cdiv(int64_t a, int64_t b) {  // b > 0; 1 (no dilation, stride 1) without a division
  if (b == 1) {
    return a;
  }
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}
inline int64_t mn(int64_t a, int64_t b) {
  return a < b ? a : b;
}
inline int64_t mx(int64_t a, int64_t b) {
  return a > b ? a : b;
}

// The taps [lo, hi) of a window starting at `start` (step d, k taps) that land in [0, n).
struct Taps {
  int64_t lo, hi;
};
inline Taps taps_in(int64_t n, int64_t start, int64_t d, int64_t k) {
  const int64_t lo = start < 0 ? cdiv(-start, d) : 0;
  const int64_t hi = mn(k, cdiv(n - start, d));
  return {lo, mx(lo, hi)};
}

// The output columns [lo, hi) whose every tap lies inside the row.
inline Taps interior_columns(const PoolGeometry& g) {
  const int64_t lo = mn(g.OW, cdiv(g.pw, g.sw));
  const int64_t last = g.W - 1 - (g.KW - 1) * g.dw + g.pw;  // ow * sw <= last
  const int64_t hi = last < 0 ? 0 : mn(g.OW, last / g.sw + 1);
  return {lo, mx(lo, hi)};
}

// Where the vector columns of [lo, hi) end in a stride-2 row: a vector of N columns from o reads, through
// vload_stride2, up to x[o * 2 + last tap + 2N - 1], which must lie in the row.
inline int64_t stride2_vector_end(const PoolGeometry& g, int64_t lo, int64_t hi, int N) {
  const int64_t last_tap = (g.KW - 1) * g.dw - g.pw;
  const int64_t room = g.W - 2 * N - last_tap;  // o * 2 <= room
  return room < 0 ? lo : mx(lo, mn(hi, room / 2 + N));
}

// Runs vec(o) for vectors of N columns o, o + 1, ... that cover [lo, hi), the last one moved back to end at
// hi (so it recomputes up to N - 1 columns), or one(o) for each column when the range is narrower than N.
// Only for loops in which each column is a function of inputs the loop does not write, so that computing a
// column twice is harmless.
template <int N, typename Vec, typename One>
inline void cover_columns(int64_t lo, int64_t hi, const Vec& vec, const One& one) {
  if (hi - lo < N) {
    for (int64_t o = lo; o < hi; ++o) {
      one(o);
    }
    return;
  }
  for (int64_t o = lo;; o += N) {
    o = mn(o, hi - N);
    vec(o);
    if (o + N >= hi) {
      return;
    }
  }
}

// ------------------------------------------------------------------------------------- NCHW, max

// One output column of one input row, any column: its window's maximum over the row and the column of it
// (-inf and the first would-be column when the window holds no column of the row).
template <typename X, typename T = Compute<X>>
inline void max_column(const X* xrow, const PoolGeometry& g, int64_t ow, T* b, PoolIndex<T>* bi) {
  const int64_t ws = ow * g.sw - g.pw;
  const Taps c = taps_in(g.W, ws, g.dw, g.KW);
  T best = lowest<T>();
  int64_t pos = ws + c.lo * g.dw;
  for (int64_t j = c.lo; j < c.hi; ++j) {
    const int64_t iw = ws + j * g.dw;
    const T v = get(xrow + iw);
    if (takes(v, best)) {
      best = v;
      pos = iw;
    }
  }
  *b = best;
  if (bi != nullptr) {
    *bi = static_cast<PoolIndex<T>>(pos);
  }
}

// The row pass: b[ow] (and bi[ow], the column) = the maximum of row xrow over output column ow's window.
template <typename X, bool kIdx, int S, bool kNaN, typename T = Compute<X>>
void max_row_pass(const X* __restrict__ xrow, const PoolGeometry& g, Taps in, T* __restrict__ b,
                  PoolIndex<T>* __restrict__ bi) {
  using V = typename PV<T>::V;
  using I = typename PV<T>::I;
  constexpr int N = kN<T>;
  for (int64_t ow = 0; ow < in.lo; ++ow) {
    max_column(xrow, g, ow, b + ow, kIdx ? bi + ow : nullptr);
  }
  int64_t ow = in.lo;
  if constexpr (S == 1 || S == 2) {
    // stride 1: each tap's values for N output columns are one shifted load; stride 2: two loads, even lanes
    // (vload_stride2), and the columns whose vectors would read past the row go one at a time
    auto load_taps = [](const X* p) { return S == 1 ? vload(p) : vload_stride2(p); };
    const I lanes = iota<T>() * S;
    auto vec = [&](int64_t o) {
      const int64_t iw0 = o * S - g.pw;
      V best = load_taps(xrow + iw0);
      I pos = lanes + static_cast<PoolIndex<T>>(iw0);
      for (int64_t j = 1; j < g.KW; ++j) {
        const int64_t iw = iw0 + j * g.dw;
        const V v = load_taps(xrow + iw);
        const I take = takes_lanes<kNaN>(v, best);
        best = take ? v : best;
        if constexpr (kIdx) {
          pos = take ? lanes + static_cast<PoolIndex<T>>(iw) : pos;
        }
      }
      store(b + o, best);
      if constexpr (kIdx) {
        store(bi + o, pos);
      }
    };
    auto one = [&](int64_t o) { max_column(xrow, g, o, b + o, kIdx ? bi + o : nullptr); };
    const int64_t end = S == 1 ? in.hi : stride2_vector_end(g, in.lo, in.hi, N);
    cover_columns<N>(in.lo, end, vec, one);
    ow = end;
  } else {
    // tap by tap over the interior: contiguous stores, loads of stride S, which the compiler vectorises
    const int64_t s = S != 0 ? S : g.sw;
    const int64_t lo = in.lo, hi = in.hi;
    for (int64_t o = lo; o < hi; ++o) {
      b[o] = get(xrow + o * s - g.pw);
      if constexpr (kIdx) {
        bi[o] = static_cast<PoolIndex<T>>(o * s - g.pw);
      }
    }
    for (int64_t j = 1; j < g.KW; ++j) {
      const int64_t off = j * g.dw - g.pw;
      for (int64_t o = lo; o < hi; ++o) {
        const T v = get(xrow + o * s + off);
        const bool take = (v > b[o]) | (v != v);
        b[o] = take ? v : b[o];
        if constexpr (kIdx) {
          bi[o] = take ? static_cast<PoolIndex<T>>(o * s + off) : bi[o];
        }
      }
    }
    ow = hi;
  }
  for (; ow < g.OW; ++ow) {
    max_column(xrow, g, ow, b + ow, kIdx ? bi + ow : nullptr);
  }
}

// The column pass for one output row: folds the ring rows of input rows ih0, ih0 + dh, ... (count rows).
// Input row ih0 sits in ring slot `slot0`; each next row, dh rows on, `step` = dh % R slots on.
template <typename X, bool kIdx, bool kNaN, typename T = Compute<X>>
void max_column_pass(const T* ring, const PoolIndex<T>* ring_index, int64_t R, int64_t ih0, int64_t slot0,
                     int64_t step_rows, int64_t count, const PoolGeometry& g, X* __restrict__ y,
                     int64_t* __restrict__ ind) {
  using V = typename PV<T>::V;
  using I = typename PV<T>::I;
  constexpr int N = kN<T>;
  const int64_t OW = g.OW;
  // the ring offset of the i-th row, stepped without a division
  const int64_t first_slot = slot0 * OW, step = step_rows * OW, end = R * OW;
  auto next_slot = [&](int64_t s) { return s + step >= end ? s + step - end : s + step; };
  const T* b0 = ring + first_slot;
  const PoolIndex<T>* i0 = kIdx ? ring_index + first_slot : nullptr;
  const PoolIndex<T> base0 = static_cast<PoolIndex<T>>(ih0 * g.W);
  auto vec = [&](int64_t ow) {
    V best = load<V>(b0 + ow);
    I pos{};
    if constexpr (kIdx) {
      pos = load<I>(i0 + ow) + base0;
    }
    int64_t s = first_slot;
    for (int64_t i = 1; i < count; ++i) {
      s = next_slot(s);
      const V v = load<V>(ring + s + ow);
      const I take = takes_lanes<kNaN>(v, best);
      best = take ? v : best;
      if constexpr (kIdx) {
        const PoolIndex<T> base = static_cast<PoolIndex<T>>((ih0 + i * g.dh) * g.W);
        pos = take ? load<I>(ring_index + s + ow) + base : pos;
      }
    }
    vstore(y + ow, best);
    if constexpr (kIdx) {
      store_index<T>(ind + ow, pos);
    }
  };
  auto one = [&](int64_t ow) {
    T best = b0[ow];
    int64_t pos = kIdx ? int64_t{i0[ow]} + ih0 * g.W : 0;
    int64_t s = first_slot;
    for (int64_t i = 1; i < count; ++i) {
      s = next_slot(s);
      const T v = ring[s + ow];
      if (takes(v, best)) {
        best = v;
        if constexpr (kIdx) {
          pos = int64_t{ring_index[s + ow]} + (ih0 + i * g.dh) * g.W;
        }
      }
    }
    put(y + ow, best);
    if constexpr (kIdx) {
      ind[ow] = pos;
    }
  };
  cover_columns<N>(0, OW, vec, one);
}

// Which input rows the ring holds: [max(lo, next - rows), next) of one plane. A window needs rows
// [first, last], last - first < rows; the ring is refilled from `first` unless it holds them up to `next`.
// (With dilation, `first` can go back: a row of windows whose first tap lies in the padding starts lower
// than the next row of windows, whose first tap does not.)
// Input row `row` sits in ring slot row % rows; the slots are counted along with the rows, so that finding
// one costs no division.
struct Ring {
  int64_t rows;
  int64_t plane = -1;
  int64_t lo = 0;
  int64_t next = 0;       // the next input row to reduce into the ring
  int64_t next_slot = 0;  // next % rows

  // Prepares for a window over [first, last] of plane p: `next` is then the first row still to reduce.
  void need(int64_t p, int64_t first) {
    if (plane != p || first < mx(lo, next - rows) || first > next) {
      plane = p;
      lo = first;
      next = first;
      next_slot = first % rows;
    }
  }
  void advance() {
    ++next;
    next_slot = next_slot + 1 == rows ? 0 : next_slot + 1;
  }
  // The slot of a row held, or about to be (next - rows <= row <= next).
  int64_t slot(int64_t row) const {
    const int64_t s = next_slot - (next - row);
    return s < 0 ? s + rows : s;
  }
};

// Rows r0, r0 + 1, ... of planes of `rows` rows each, as (plane, row), counted without a division per row.
struct RowCursor {
  int64_t plane, row, rows;
  RowCursor(int64_t r0, int64_t rows_) : plane(r0 / rows_), row(r0 % rows_), rows(rows_) {}
  int64_t flat() const { return plane * rows + row; }
  void advance() {
    if (++row == rows) {
      row = 0;
      ++plane;
    }
  }
};

template <typename X, bool kIdx, int S>
void max_rows_impl(const PoolRowsJob<X>& job) {
  using T = Compute<X>;
  const PoolGeometry& g = job.g;
  const int64_t R = (g.KH - 1) * g.dh + 1;
  const Taps in = interior_columns(g);
  const int64_t step_rows = g.dh % R;
  Ring ring{R};
  std::vector<char> row_nan(R);  // whether the input row in each ring slot holds a NaN
  for (RowCursor at(job.r0, g.OH); at.flat() < job.r1; at.advance()) {
    // r = plane * OH + oh is one output row
    const int64_t plane = at.plane, oh = at.row, r = at.flat();
    const X* xp = job.x + plane * g.H * g.W;
    X* yrow = job.y + r * g.OW;
    int64_t* irow = kIdx ? job.ind + r * g.OW : nullptr;
    const int64_t hstart = oh * g.sh - g.ph;
    const Taps rows = taps_in(g.H, hstart, g.dh, g.KH);
    if (rows.lo == rows.hi) {  // a row of windows of padding alone
      const int64_t first_row = (hstart + rows.lo * g.dh) * g.W;
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        put(yrow + ow, lowest<T>());
        if constexpr (kIdx) {
          const int64_t ws = ow * g.sw - g.pw;
          irow[ow] = first_row + ws + taps_in(g.W, ws, g.dw, g.KW).lo * g.dw;
        }
      }
      continue;
    }
    const int64_t first = hstart + rows.lo * g.dh, last = hstart + (rows.hi - 1) * g.dh;
    ring.need(plane, first);
    for (; ring.next <= last; ring.advance()) {
      const int64_t s = ring.next_slot * g.OW;
      const X* xrow = xp + ring.next * g.W;
      PoolIndex<T>* bi = kIdx ? job.ring_index + s : nullptr;
      const bool nan = holds_nan(xrow, g.W);
      row_nan[ring.next_slot] = nan;
      if (nan) {
        max_row_pass<X, kIdx, S, true>(xrow, g, in, job.ring + s, bi);
      } else {
        max_row_pass<X, kIdx, S, false>(xrow, g, in, job.ring + s, bi);
      }
    }
    const int64_t slot0 = ring.slot(first), count = rows.hi - rows.lo;
    bool nan = false;
    for (int64_t i = 0, s = slot0; i < count; ++i, s = s + step_rows >= R ? s + step_rows - R : s + step_rows) {
      nan |= row_nan[s] != 0;
    }
    if (nan) {
      max_column_pass<X, kIdx, true>(job.ring, job.ring_index, R, first, slot0, step_rows, count, g, yrow, irow);
    } else {
      max_column_pass<X, kIdx, false>(job.ring, job.ring_index, R, first, slot0, step_rows, count, g, yrow, irow);
    }
  }
}

template <typename X, bool kIdx>
void max_rows_stride(const PoolRowsJob<X>& job) {
  if (job.g.sw == 1) {
    max_rows_impl<X, kIdx, 1>(job);
  } else if (job.g.sw == 2) {
    max_rows_impl<X, kIdx, 2>(job);
  } else {
    max_rows_impl<X, kIdx, 0>(job);
  }
}

template <typename X>
void max_rows(const PoolRowsJob<X>& job) {
  if (job.ind != nullptr) {
    max_rows_stride<X, true>(job);
  } else {
    max_rows_stride<X, false>(job);
  }
}

// -------------------------------------------------------------------------------------- NCHW, avg

// The row pass: b[ow] = the sum of row xrow over output column ow's window (columns in order).
template <typename X, int S, typename T = Compute<X>>
void sum_row_pass(const X* __restrict__ xrow, const PoolGeometry& g, Taps in, T* __restrict__ b) {
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  auto one = [&](int64_t ow) {
    const int64_t ws = ow * g.sw - g.pw;
    const Taps c = taps_in(g.W, ws, 1, g.KW);
    T sum = T(0);
    for (int64_t j = c.lo; j < c.hi; ++j) {
      sum += get(xrow + ws + j);
    }
    b[ow] = sum;
  };
  for (int64_t ow = 0; ow < in.lo; ++ow) {
    one(ow);
  }
  int64_t ow = in.lo;
  if constexpr (S == 1 || S == 2) {
    auto load_taps = [](const X* p) { return S == 1 ? vload(p) : vload_stride2(p); };
    auto vec = [&](int64_t o) {
      const X* p = xrow + o * S - g.pw;
      V sum = load_taps(p);
      for (int64_t j = 1; j < g.KW; ++j) {
        sum += load_taps(p + j);
      }
      store(b + o, sum);
    };
    const int64_t end = S == 1 ? in.hi : stride2_vector_end(g, in.lo, in.hi, N);
    cover_columns<N>(in.lo, end, vec, one);
    ow = end;
  } else {
    const int64_t s = S != 0 ? S : g.sw;
    const int64_t lo = in.lo, hi = in.hi;
    for (int64_t o = lo; o < hi; ++o) {
      b[o] = get(xrow + o * s - g.pw);
    }
    for (int64_t j = 1; j < g.KW; ++j) {
      const int64_t off = j - g.pw;
      for (int64_t o = lo; o < hi; ++o) {
        b[o] += get(xrow + o * s + off);
      }
    }
    ow = hi;
  }
  for (; ow < g.OW; ++ow) {
    one(ow);
  }
}

template <typename X, int S>
void avg_rows_impl(const PoolRowsJob<X>& job) {
  using T = Compute<X>;
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  const PoolGeometry& g = job.g;
  const int64_t R = g.KH, OW = g.OW;
  const Taps in = interior_columns(g);
  Ring ring{R};
  for (RowCursor at(job.r0, g.OH); at.flat() < job.r1; at.advance()) {
    // r = plane * OH + oh is one output row
    const int64_t plane = at.plane, oh = at.row, r = at.flat();
    const X* xp = job.x + plane * g.H * g.W;
    X* __restrict__ yrow = job.y + r * OW;
    const T* __restrict__ drow = job.div + oh * OW;
    const int64_t hstart = oh * g.sh - g.ph;
    const Taps rows = taps_in(g.H, hstart, 1, g.KH);
    if (rows.lo == rows.hi) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        put(yrow + ow, T(0) / drow[ow]);
      }
      continue;
    }
    const int64_t first = hstart + rows.lo, last = hstart + rows.hi - 1;
    ring.need(plane, first);
    for (; ring.next <= last; ring.advance()) {
      const X* xrow = xp + ring.next * g.W;
      T* b = job.ring + ring.next_slot * OW;
      sum_row_pass<X, S>(xrow, g, in, b);
    }
    const int64_t count = rows.hi - rows.lo;
    // the ring offset of each row after the first, stepped without a division
    const int64_t first_slot = ring.slot(first) * OW, end = R * OW;
    auto next_slot = [&](int64_t s) { return s + OW >= end ? s + OW - end : s + OW; };
    auto vec = [&](int64_t ow) {
      int64_t s = first_slot;
      V sum = load<V>(job.ring + s + ow);
      for (int64_t i = 1; i < count; ++i) {
        s = next_slot(s);
        sum += load<V>(job.ring + s + ow);
      }
      vstore(yrow + ow, sum / load<V>(drow + ow));
    };
    auto one = [&](int64_t ow) {
      int64_t s = first_slot;
      T sum = job.ring[s + ow];
      for (int64_t i = 1; i < count; ++i) {
        s = next_slot(s);
        sum += job.ring[s + ow];
      }
      put(yrow + ow, sum / drow[ow]);
    };
    cover_columns<N>(0, OW, vec, one);
  }
}

template <typename X>
void avg_rows(const PoolRowsJob<X>& job) {
  if (job.g.sw == 1) {
    avg_rows_impl<X, 1>(job);
  } else if (job.g.sw == 2) {
    avg_rows_impl<X, 2>(job);
  } else {
    avg_rows_impl<X, 0>(job);
  }
}

// ---------------------------------------------------------------------------- channels_last (pixels)

// One output pixel's channels [c0, c0 + U * N) over its taps, in registers; kIdx keeps each winner's
// position (ih * W + iw).
template <typename X, bool kIdx, int U, typename T = Compute<X>>
inline void max_pixel_block(const X* __restrict__ ximg, int64_t C, int64_t c0, const PoolGeometry& g,
                            int64_t hstart, Taps rows, int64_t ws, Taps cols, int64_t first, X* __restrict__ yp,
                            int64_t* __restrict__ ip) {
  using V = typename PV<T>::V;
  using I = typename PV<T>::I;
  constexpr int N = kN<T>;
  V best[U];
  I pos[U];
  for (int u = 0; u < U; ++u) {
    best[u] = V{} + lowest<T>();
    pos[u] = I{} + static_cast<PoolIndex<T>>(first);
  }
  for (int64_t i = rows.lo; i < rows.hi; ++i) {
    const int64_t ih = hstart + i * g.dh;
    for (int64_t j = cols.lo; j < cols.hi; ++j) {
      const int64_t at = ih * g.W + ws + j * g.dw;  // flat position in the H x W plane
      const X* p = ximg + at * C + c0;
      for (int u = 0; u < U; ++u) {
        const V v = vload(p + u * N);
        const I take = (v > best[u]) | (v != v);
        best[u] = take ? v : best[u];
        if constexpr (kIdx) {
          pos[u] = take ? I{} + static_cast<PoolIndex<T>>(at) : pos[u];
        }
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    vstore(yp + c0 + u * N, best[u]);
    if constexpr (kIdx) {
      store_index<T>(ip + c0 + u * N, pos[u]);
    }
  }
}

template <typename X, bool kIdx>
void max_pixels_impl(const PoolPixelsJob<X>& job) {
  using T = Compute<X>;
  constexpr int N = kN<T>;
  const PoolGeometry& g = job.g;
  const int64_t C = job.C;
  for (int64_t r = job.r0; r < job.r1; ++r) {
    // r = n * OH + oh is one output row of OW pixels
    const int64_t n = r / g.OH, oh = r % g.OH;
    const X* ximg = job.x + n * g.H * g.W * C;
    const int64_t hstart = oh * g.sh - g.ph;
    const Taps rows = taps_in(g.H, hstart, g.dh, g.KH);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t ws = ow * g.sw - g.pw;
      const Taps cols = taps_in(g.W, ws, g.dw, g.KW);
      const int64_t first = (hstart + rows.lo * g.dh) * g.W + ws + cols.lo * g.dw;
      X* yp = job.y + (r * g.OW + ow) * C;
      int64_t* ip = kIdx ? job.ind + (r * g.OW + ow) * C : nullptr;
      int64_t c = 0;
      for (; c + 4 * N <= C; c += 4 * N) {
        max_pixel_block<X, kIdx, 4>(ximg, C, c, g, hstart, rows, ws, cols, first, yp, ip);
      }
      for (; c + N <= C; c += N) {
        max_pixel_block<X, kIdx, 1>(ximg, C, c, g, hstart, rows, ws, cols, first, yp, ip);
      }
      for (; c < C; ++c) {
        T best = lowest<T>();
        int64_t pos = first;
        for (int64_t i = rows.lo; i < rows.hi; ++i) {
          const int64_t ih = hstart + i * g.dh;
          for (int64_t j = cols.lo; j < cols.hi; ++j) {
            const int64_t at = ih * g.W + ws + j * g.dw;
            const T v = get(ximg + at * C + c);
            if (takes(v, best)) {
              best = v;
              pos = at;
            }
          }
        }
        put(yp + c, best);
        if constexpr (kIdx) {
          ip[c] = pos;
        }
      }
    }
  }
}

template <typename X>
void max_pixels(const PoolPixelsJob<X>& job) {
  if (job.ind != nullptr) {
    max_pixels_impl<X, true>(job);
  } else {
    max_pixels_impl<X, false>(job);
  }
}

template <typename X, int U, typename T = Compute<X>>
inline void avg_pixel_block(const X* __restrict__ ximg, int64_t C, int64_t c0, const PoolGeometry& g,
                            int64_t hstart, Taps rows, int64_t ws, Taps cols, T div, X* __restrict__ yp) {
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  V sum[U];
  for (int u = 0; u < U; ++u) {
    sum[u] = V{};
  }
  for (int64_t ih = hstart + rows.lo; ih < hstart + rows.hi; ++ih) {
    for (int64_t iw = ws + cols.lo; iw < ws + cols.hi; ++iw) {
      const X* p = ximg + (ih * g.W + iw) * C + c0;
      for (int u = 0; u < U; ++u) {
        sum[u] += vload(p + u * N);
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    vstore(yp + c0 + u * N, sum[u] / div);
  }
}

template <typename X>
void avg_pixels(const PoolPixelsJob<X>& job) {
  using T = Compute<X>;
  constexpr int N = kN<T>;
  const PoolGeometry& g = job.g;
  const int64_t C = job.C;
  for (int64_t r = job.r0; r < job.r1; ++r) {
    // r = n * OH + oh is one output row of OW pixels
    const int64_t n = r / g.OH, oh = r % g.OH;
    const X* ximg = job.x + n * g.H * g.W * C;
    const int64_t hstart = oh * g.sh - g.ph;
    const Taps rows = taps_in(g.H, hstart, 1, g.KH);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t ws = ow * g.sw - g.pw;
      const Taps cols = taps_in(g.W, ws, 1, g.KW);
      const T div = job.div[oh * g.OW + ow];
      X* yp = job.y + (r * g.OW + ow) * C;
      int64_t c = 0;
      for (; c + 4 * N <= C; c += 4 * N) {
        avg_pixel_block<X, 4>(ximg, C, c, g, hstart, rows, ws, cols, div, yp);
      }
      for (; c + N <= C; c += N) {
        avg_pixel_block<X, 1>(ximg, C, c, g, hstart, rows, ws, cols, div, yp);
      }
      for (; c < C; ++c) {
        T sum = T(0);
        for (int64_t ih = hstart + rows.lo; ih < hstart + rows.hi; ++ih) {
          for (int64_t iw = ws + cols.lo; iw < ws + cols.hi; ++iw) {
            sum += get(ximg + (ih * g.W + iw) * C + c);
          }
        }
        put(yp + c, sum / div);
      }
    }
  }
}

// ------------------------------------------------------------------- channels_last avg backward

// The outputs [lo, hi) whose windows (start o * s - p, k taps) cover input position i.
inline Taps covering(int64_t i, int64_t s, int64_t p, int64_t k, int64_t out) {
  const int64_t lo = mx(0, cdiv(i + p - k + 1, s));
  const int64_t hi = mn(out, (i + p) / s + 1);
  return {lo, mx(lo, hi)};
}

template <typename T, int U>
inline void gather_block(const T* __restrict__ gimg, int64_t C, int64_t c0, const PoolGeometry& g, Taps ohs,
                         Taps ows, const T* __restrict__ div, T* __restrict__ gxp) {
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  V sum[U];
  for (int u = 0; u < U; ++u) {
    sum[u] = V{};
  }
  for (int64_t oh = ohs.lo; oh < ohs.hi; ++oh) {
    for (int64_t ow = ows.lo; ow < ows.hi; ++ow) {
      const T* p = gimg + (oh * g.OW + ow) * C + c0;
      const T d = div[oh * g.OW + ow];
      for (int u = 0; u < U; ++u) {
        sum[u] += load<V>(p + u * N) / d;
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    store(gxp + c0 + u * N, sum[u]);
  }
}

template <typename T>
void avg_gather_pixels(const PoolGatherJob<T>& job) {
  constexpr int N = kN<T>;
  const PoolGeometry& g = job.g;
  const int64_t C = job.C;
  for (int64_t r = job.r0; r < job.r1; ++r) {
    // r = n * H + ih is one input row of W pixels
    const int64_t n = r / g.H, ih = r % g.H;
    const T* gimg = job.go + n * g.OH * g.OW * C;
    const Taps ohs = covering(ih, g.sh, g.ph, g.KH, g.OH);
    for (int64_t iw = 0; iw < g.W; ++iw) {
      const Taps ows = covering(iw, g.sw, g.pw, g.KW, g.OW);
      T* gxp = job.gx + (r * g.W + iw) * C;
      int64_t c = 0;
      for (; c + 4 * N <= C; c += 4 * N) {
        gather_block<T, 4>(gimg, C, c, g, ohs, ows, job.div, gxp);
      }
      for (; c + N <= C; c += N) {
        gather_block<T, 1>(gimg, C, c, g, ohs, ows, job.div, gxp);
      }
      for (; c < C; ++c) {
        T sum = T(0);
        for (int64_t oh = ohs.lo; oh < ohs.hi; ++oh) {
          for (int64_t ow = ows.lo; ow < ows.hi; ++ow) {
            sum += gimg[(oh * g.OW + ow) * C + c] / job.div[oh * g.OW + ow];
          }
        }
        gxp[c] = sum;
      }
    }
  }
}

// ------------------------------------------------------------------------ NCHW avg backward (rows)

// The share row of one output-gradient row: u[iw] = the sum, over the output columns ow whose windows cover
// input column iw, of go[ow] / div[ow]. At stride 1 the covering columns of iw are iw + pw - j for the taps
// j, so interior columns (all KW of them inside [0, OW)) run as shifted vectors of go and div (read from the
// caller's memory, not from stores just made); the edges one at a time.
template <typename T>
void share_row_pass(const T* __restrict__ go, const T* __restrict__ div, const PoolGeometry& g, T* __restrict__ u) {
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  auto one = [&](int64_t iw) {
    const Taps ows = covering(iw, 1, g.pw, g.KW, g.OW);
    T sum = T(0);
    for (int64_t ow = ows.hi - 1; ow >= ows.lo; --ow) {
      sum += go[ow] / div[ow];
    }
    u[iw] = sum;
  };
  auto vec = [&](int64_t iw) {
    const int64_t top = iw + g.pw;  // the covering column of tap 0
    V sum = load<V>(go + top) / load<V>(div + top);
    for (int64_t j = 1; j < g.KW; ++j) {
      sum += load<V>(go + top - j) / load<V>(div + top - j);
    }
    store(u + iw, sum);
  };
  const int64_t lo = mn(g.W, mx(0, g.KW - 1 - g.pw)), hi = mx(lo, mn(g.W, g.OW - g.pw));
  for (int64_t iw = 0; iw < lo; ++iw) {
    one(iw);
  }
  cover_columns<N>(lo, hi, vec, one);
  for (int64_t iw = hi; iw < g.W; ++iw) {
    one(iw);
  }
}

// Stride 1 only (cpu/pool2d.cpp keeps its scatter for the others: at stride 2 this gather was no faster).
template <typename T>
void avg_gather_rows(const PoolGatherRowsJob<T>& job) {
  using V = typename PV<T>::V;
  constexpr int N = kN<T>;
  const PoolGeometry& g = job.g;
  const int64_t R = g.KH, W = g.W;
  Ring ring{R};
  for (RowCursor at(job.r0, g.H); at.flat() < job.r1; at.advance()) {
    // r = plane * H + ih is one input row
    const int64_t plane = at.plane, ih = at.row, r = at.flat();
    T* __restrict__ gxrow = job.gx + r * W;
    const Taps ohs = covering(ih, 1, g.ph, g.KH, g.OH);
    if (ohs.lo == ohs.hi) {  // a row no window covers
      std::memset(gxrow, 0, W * sizeof(T));
      continue;
    }
    const T* gp = job.go + plane * g.OH * g.OW;
    ring.need(plane, ohs.lo);
    for (; ring.next < ohs.hi; ring.advance()) {
      share_row_pass<T>(gp + ring.next * g.OW, job.div + ring.next * g.OW, g, job.ring + ring.next_slot * W);
    }
    const int64_t first_slot = ring.slot(ohs.lo) * W, end = R * W, count = ohs.hi - ohs.lo;
    auto next_slot = [&](int64_t s) { return s + W >= end ? s + W - end : s + W; };
    auto vec = [&](int64_t iw) {
      int64_t s = first_slot;
      V sum = load<V>(job.ring + s + iw);
      for (int64_t i = 1; i < count; ++i) {
        s = next_slot(s);
        sum += load<V>(job.ring + s + iw);
      }
      store(gxrow + iw, sum);
    };
    auto one = [&](int64_t iw) {
      int64_t s = first_slot;
      T sum = job.ring[s + iw];
      for (int64_t i = 1; i < count; ++i) {
        s = next_slot(s);
        sum += job.ring[s + iw];
      }
      gxrow[iw] = sum;
    };
    cover_columns<N>(0, W, vec, one);
  }
}

template <typename X>
constexpr PoolKernels<X> table() {
  if constexpr (std::is_same_v<X, bf16_t>) {  // the forwards; the backwards compute in float (cpu/pool2d.cpp)
    return {&max_rows<X>, &avg_rows<X>, &max_pixels<X>, &avg_pixels<X>, nullptr, nullptr};
  } else {
    return {&max_rows<X>, &avg_rows<X>, &max_pixels<X>, &avg_pixels<X>, &avg_gather_pixels<X>, &avg_gather_rows<X>};
  }
}

}  // namespace
}  // namespace pool
}  // namespace LENET_CPU_LEVEL

const PoolLevelKernels& LENET_POOL_CAT(pool_, LENET_CPU_LEVEL_TABLE)() {
  static const PoolLevelKernels kernels{LENET_CPU_LEVEL::pool::table<float>(), LENET_CPU_LEVEL::pool::table<double>(),
                                        LENET_CPU_LEVEL::pool::table<bf16_t>()};
  return kernels;
}

}  // namespace cpu
}  // namespace lenet_ext

#undef LENET_POOL_CAT
#undef LENET_POOL_CAT_
