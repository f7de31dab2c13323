// The register-tile loops of the CPU convolution, written once and compiled once per instruction-set
// level. Only cpu/level_*.cpp include this file, each after setting its target and defining
//   LENET_CPU_LEVEL        the namespace of this level's copy (isa_default, isa_avx2, isa_avx512)
//   LENET_CPU_LEVEL_ENUM   its cpu::Level, LENET_CPU_LEVEL_SHAPE its LevelShape (cpu/vec.h)
//   LENET_CPU_LEVEL_NAME   its name for lenet_ext.backends.cpu_isa()
//   LENET_CPU_LEVEL_TABLE  the function that returns its LevelKernels (declared in cpu/kernels.h)
// Every tile shape comes from the level's registers and vector width (cpu/vec.h).
//
// Nothing here includes ATen or the C++ library beyond <cstdint> and <cstring>, and every function
// lives in the level's own namespace: an inline function compiled for AVX-512 must never be the copy
// that baseline code calls.
//
// Vectors are GCC/Clang vector extensions (`vector_size`): portable C++ that each target lowers to its
// own registers (xmm, ymm, zmm, or NEON q registers), with no intrinsics.
#include <cstdint>
#include <cstring>
#include <utility>

#include "cpu/kernels.h"

// Vectors wider than the baseline's registers are passed between these functions; they all live in this
// file's anonymous namespace and are inlined, so the calling convention GCC warns about never meets code
// compiled elsewhere.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lenet_ext {
namespace cpu {
namespace LENET_CPU_LEVEL {
namespace {

constexpr Level kLevel = LENET_CPU_LEVEL_ENUM;
constexpr LevelShape kShape = LENET_CPU_LEVEL_SHAPE;

inline int64_t min_of(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// A vector of N scalars. The attribute needs a concrete element type, hence the specialisations.
template <typename T, int N>
struct VecOf;
template <int N>
struct VecOf<float, N> {
  typedef float type __attribute__((vector_size(N * sizeof(float))));
};
template <int N>
struct VecOf<double, N> {
  typedef double type __attribute__((vector_size(N * sizeof(double))));
};

// One register of this level.
template <typename T>
constexpr int kLanes = kShape.vec_bytes / static_cast<int>(sizeof(T));
template <typename T>
using Vec = typename VecOf<T, kLanes<T>>::type;

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Calls f(std::integral_constant<int, N>) for the N in [1, Max] that equals n (1 <= n <= Max): how a
// run-time count picks a tile compiled for exactly that many pixels, vectors or taps.
template <int Max, typename F, int... Ns>
inline void with_count_impl(int64_t n, const F& f, std::integer_sequence<int, Ns...>) {
  ((n == Ns + 1 ? f(std::integral_constant<int, Ns + 1>{}) : void()), ...);
}
template <int Max, typename F>
inline void with_count(int64_t n, const F& f) {
  with_count_impl<Max>(n, f, std::make_integer_sequence<int, Max>{});
}

// ---------------------------------------------------------------------------------------------------
// Pixel tiles: OB output channels x V vectors of consecutive positions. Per tap: V vector loads of the
// source, OB broadcast weights, OB * V multiply-adds. The accumulators start at the bias; rows [0, rows)
// of the result go to dst + ob * ldd.
template <int OB, int V, typename T>
void pixel_tile(const T* src, const int64_t* taps, int64_t K, const T* wt, const T* b, T* dst, int64_t ldd,
                int64_t rows) {
  using vec_t = Vec<T>;
  constexpr int L = kLanes<T>;
  vec_t acc[OB][V];
#pragma GCC unroll 16
  for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      acc[ob][v] = b[ob] + vec_t{};
    }
  }
  for (int64_t t = 0; t < K; ++t) {
    vec_t xs[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      xs[v] = load<vec_t>(src + taps[t] + v * L);
    }
    const T* wv = wt + t * OB;
#pragma GCC unroll 16
    for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) {
        acc[ob][v] += wv[ob] * xs[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int ob = 0; ob < OB; ++ob) {
    if (ob < rows) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) {
        store(dst + ob * ldd + v * L, acc[ob][v]);
      }
    }
  }
}

// One (image, group) for channel blocks of OB: tiles of V vectors walk the positions; each tile runs
// every channel block, so its source stays in L1 while the blocks' weights stream from L2.
template <int OB, typename T>
void pixel_tiles_of(const PixelTileJob<T>& j) {
  constexpr int V = pixel_vectors(kShape, OB), L = kLanes<T>, kTile = V * L;
  alignas(64) T res[OB * kTile];  // a tile's results, OB rows of kTile positions
  const int64_t blocks = (j.channels + OB - 1) / OB;
  for (int64_t l = 0; l < j.span; l += kTile) {
    const int64_t end = min_of(l + kTile, j.span);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const T* wb = j.weights + blk * j.K * OB;
      const T* bb = j.bias + blk * OB;
      const int64_t rows = min_of(OB, j.channels - blk * OB);
      T* plane = j.out + blk * OB * j.L;
      if (end - l == kTile) {
        if (j.compact) {  // positions are the output plane's: store in place
          pixel_tile<OB, V>(j.src + l, j.taps, j.K, wb, bb, plane + l, j.L, rows);
          continue;
        }
        pixel_tile<OB, V>(j.src + l, j.taps, j.K, wb, bb, res, kTile, OB);
      } else {
        with_count<V>((end - l + L - 1) / L, [&](auto vectors) {
          pixel_tile<OB, decltype(vectors)::value>(j.src + l, j.taps, j.K, wb, bb, res, kTile, OB);
        });
      }
      // Store the tile's real outputs: runs of consecutive columns below OW (one run when compact).
      for (int64_t pos = l; pos < end;) {
        const int64_t oh = pos / j.pitch, ow = pos % j.pitch;
        const int64_t stop = j.compact ? end : min_of(end, oh * j.pitch + j.OW);
        for (int64_t ob = 0; ob < rows && pos < stop; ++ob) {  // pos >= stop: a dropped column
          std::memcpy(plane + ob * j.L + oh * j.OW + ow, res + ob * kTile + pos - l, (stop - pos) * sizeof(T));
        }
        pos = j.compact ? end : (oh + 1) * j.pitch;
      }
    }
  }
}

template <typename T>
void pixel_tiles(const PixelTileJob<T>& j) {
  switch (j.OB) {
    case 1: return pixel_tiles_of<1>(j);
    case 2: return pixel_tiles_of<2>(j);
    case 4: return pixel_tiles_of<4>(j);
    case 6: return pixel_tiles_of<6>(j);
    default: return pixel_tiles_of<8>(j);
  }
}

// ---------------------------------------------------------------------------------------------------
// Transposition between pixel-major and channel-major buffers: dst[c * ldd + r] = src[r * lds + c]
// (+ add[c], when given) for r < rows, c < cols. Blocks of N x N, N the level's lanes, go through
// registers: N rows are loaded as N vectors and transposed in log2(N) rounds. Round H exchanges halves
// of width H between the rows H apart (row i takes the first H lanes of each 2H-lane chunk of rows i and
// i + H, row i + H the second ones), which swaps the off-diagonal H x H blocks; the rounds from H = N/2
// down to 1 then transpose those blocks in turn. The rest of the rows and columns are copied one by one.
// (A copy one scalar at a time was a fifth of the 7x7 stem's time at AVX2.)
template <int N, int H>
constexpr int first_halves(int lane) {
  const int chunk = lane / (2 * H) * (2 * H), pos = lane % (2 * H);
  return pos < H ? chunk + pos : N + chunk + pos - H;
}
template <int N, int H>
constexpr int second_halves(int lane) {
  const int chunk = lane / (2 * H) * (2 * H), pos = lane % (2 * H);
  return pos < H ? chunk + H + pos : N + chunk + pos;
}

template <int H, typename V, int... Lanes>
inline void exchange_halves(V& a, V& b, std::integer_sequence<int, Lanes...>) {
  constexpr int N = sizeof...(Lanes);
  const V first = __builtin_shufflevector(a, b, first_halves<N, H>(Lanes)...);
  const V second = __builtin_shufflevector(a, b, second_halves<N, H>(Lanes)...);
  a = first;
  b = second;
}

template <int N, int H, typename V>
inline void transpose_rounds(V (&rows)[N]) {
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) {
    if (i / H % 2 == 0) {
      exchange_halves<H>(rows[i], rows[i + H], std::make_integer_sequence<int, N>{});
    }
  }
  if constexpr (H > 1) {
    transpose_rounds<N, H / 2>(rows);
  }
}

template <typename T>
void transpose(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows, int64_t cols, const T* add) {
  using vec_t = Vec<T>;
  constexpr int N = kLanes<T>;
  const int64_t full_rows = rows / N * N, full_cols = cols / N * N;
  for (int64_t c0 = 0; c0 < full_cols; c0 += N) {
    for (int64_t r0 = 0; r0 < full_rows; r0 += N) {
      vec_t v[N];
#pragma GCC unroll 16
      for (int i = 0; i < N; ++i) {
        v[i] = load<vec_t>(src + (r0 + i) * lds + c0);
      }
      transpose_rounds<N, N / 2>(v);
#pragma GCC unroll 16
      for (int c = 0; c < N; ++c) {
        // with no add, a copy: adding 0 would turn -0.0 into 0.0
        store(dst + (c0 + c) * ldd + r0, add ? v[c] + add[c0 + c] : v[c]);
      }
    }
  }
  const auto copy = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t r = r0; r < r1; ++r) {
        dst[c * ldd + r] = add ? src[r * lds + c] + add[c] : src[r * lds + c];
      }
    }
  };
  copy(full_rows, rows, 0, full_cols);
  copy(0, rows, full_cols, cols);
}

// ---------------------------------------------------------------------------------------------------
// Channel tiles: P consecutive output pixels of one row x OV output channels. Per tap: one load of the
// tap's OV weights, then each pixel's input value (a broadcast) times them. Any stride and dilation.
// OV channels are NV vectors of U lanes, U at most the level's lanes: a vector wider than the registers
// would live in memory (GCC keeps such vectors on the stack), so wide channel groups take several.
template <typename T, int OV>
constexpr int kUnit = OV < kLanes<T> ? OV : kLanes<T>;
template <typename T, int OV>
using Unit = typename VecOf<T, kUnit<T, OV>>::type;

// acc[v] += x * w[v] over the NV vectors of a channel group: one broadcast value times a group.
template <int NV, typename V, typename T>
inline void add_scaled(V (&acc)[NV], T x, const V (&w)[NV]) {
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    acc[v] += x * w[v];
  }
}

// Where a tile's results go: with kInPlace, transposed in registers to the NCHW output (channel c of
// the tile at out + c * ldo, P consecutive pixels, bias added; channels past `channels` are padding and
// not stored); otherwise pixel-major to dst (pixel p at dst + p * ldd), for one transposition per band.
template <int P, int OV, int SW, bool kInPlace, typename T>
void channel_tile(const T* src, int64_t sw_runtime, const int64_t* taps, int64_t K, const T* wt, int64_t ldw, T* dst,
                  int64_t ldd, T* out, int64_t ldo, const T* bias, int64_t channels) {
  using vec_t = Unit<T, OV>;
  constexpr int U = kUnit<T, OV>, NV = OV / U;
  vec_t acc[P][NV];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[p][v] = vec_t{};
    }
  }
  for (int64_t t = 0; t < K; ++t) {
    const T* s = src + taps[t];
    vec_t wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      wv[v] = load<vec_t>(wt + t * ldw + v * U);
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      add_scaled(acc[p], s[p * (SW > 0 ? SW : sw_runtime)], wv);
    }
  }
  if constexpr (kInPlace) {
    // U pixels at a time (the last ones zero past P): U x U transposed, each channel's pixels stored
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
#pragma GCC unroll 4
      for (int p0 = 0; p0 < P; p0 += U) {
        vec_t col[U];
#pragma GCC unroll 16
        for (int p = 0; p < U; ++p) {
          col[p] = p0 + p < P ? acc[p0 + p][v] : vec_t{};
        }
        transpose_rounds<U, U / 2>(col);
#pragma GCC unroll 16
        for (int c = 0; c < U; ++c) {
          const int64_t ch = v * U + c;
          if (ch < channels) {
            // with no bias, a copy: adding 0 would turn -0.0 into 0.0
            const vec_t r = bias ? col[c] + bias[ch] : col[c];
            std::memcpy(out + ch * ldo + p0, &r, (P - p0 < U ? P - p0 : U) * sizeof(T));
          }
        }
      }
    }
    return;
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      store(dst + p * ldd + v * U, acc[p][v]);
    }
  }
}

// Each output row is cut into tiles of nearly equal width, at most the level's row tile: every tile then
// keeps enough independent accumulators in flight (a row of 14 as 7 + 7, not 12 + 2, whose 2-pixel tile
// would wait on its own latency as long as the 12-pixel one computes).
//
// Results reach the NCHW output in place when a row tile fills at least half a vector of U lanes: a tile
// then transposes its own results in registers (U log2 U shuffles per vector of channels, 5% of a 7x7 stem
// tile's work at AVX2) and stores them while the next tiles compute, which also spreads the output's
// writes to memory over the band. Otherwise (AVX-512 with 64-channel tiles of 6 pixels: a 16 x 16
// transposition for 6 pixels, 15% of the work) the band goes pixel-major to `res`, then through one
// transposition. Measured on the stem at AVX2 (Intel Xeon, 2 threads): in place 4-8% faster.
template <int OV, typename T>
void channel_tiles_of(const ChannelTileJob<T>& j) {
  constexpr int kTile = row_tile(kShape, OV * sizeof(T));
  constexpr bool kInPlace = 2 * kTile >= kUnit<T, OV>;
  const int64_t tiles = (j.OW + kTile - 1) / kTile;
  for (int64_t o = 0; o < j.og_pad; o += OV) {
    for (int64_t oh = 0; oh < j.OH; ++oh) {
      const T* row = j.src + oh * j.stride_h * j.Wp;
      T* dst = j.res + oh * j.OW * j.og_pad + o;
      T* out = j.out + o * j.ldo + oh * j.OW;
      const T* bias = j.bias ? j.bias + o : nullptr;
      for (int64_t t = 0, ow = 0; t < tiles; ++t) {
        const int64_t width = j.OW / tiles + (t < j.OW % tiles ? 1 : 0);
        with_count<kTile>(width, [&](auto pixels) {
          constexpr int P = decltype(pixels)::value;
          const T* first = row + ow * j.stride_w;
          if (j.stride_w == 2) {
            channel_tile<P, OV, 2, kInPlace>(first, 2, j.taps, j.K, j.weights + o, j.og_pad, dst + ow * j.og_pad,
                                             j.og_pad, out + ow, j.ldo, bias, j.channels - o);
          } else {
            channel_tile<P, OV, 0, kInPlace>(first, j.stride_w, j.taps, j.K, j.weights + o, j.og_pad,
                                             dst + ow * j.og_pad, j.og_pad, out + ow, j.ldo, bias, j.channels - o);
          }
        });
        ow += width;
      }
    }
  }
  if constexpr (!kInPlace) {
    transpose(j.res, j.og_pad, j.out, j.ldo, j.OH * j.OW, j.channels, j.bias);
  }
}

// Calls f(std::integral_constant<int, OV>) for the job's channel width: 8, 16, or up to the level's
// max_channel_width (cpu/conv2d_channels.cpp never asks for more, and wider tiles are not compiled).
template <typename T, typename F>
inline void with_channel_width(int OV, const F& f) {
  constexpr int kMax = max_channel_width(kShape, sizeof(T));
  switch (OV) {
    case 8:
      return f(std::integral_constant<int, 8>{});
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 32:
      if constexpr (kMax >= 32) {
        return f(std::integral_constant<int, 32>{});
      }
      break;
    case 64:
      if constexpr (kMax >= 64) {
        return f(std::integral_constant<int, 64>{});
      }
      break;
  }
}

template <typename T>
void channel_tiles(const ChannelTileJob<T>& j) {
  with_channel_width<T>(j.OV, [&](auto ov) { channel_tiles_of<decltype(ov)::value>(j); });
}

// ---------------------------------------------------------------------------------------------------
// Channel-tile weight gradient: NT taps x OV output channels (NV vectors, as above), each accumulating
// input(tap, pixel) * grad_output(pixel, channels) over every output pixel of the image.
template <int NT, int OV, typename T>
void grad_channel_tile(const GradChannelTileJob<T>& j, int64_t oh0, int64_t oh1, const int64_t* taps, const T* gop,
                       T* dst) {
  using vec_t = Unit<T, OV>;
  constexpr int U = kUnit<T, OV>, NV = OV / U;
  vec_t acc[NT][NV];
  int64_t tap[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) {
    tap[t] = taps[t];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[t][v] = vec_t{};
    }
  }
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const T* row = j.src + oh * j.stride_h * j.Wp;
    const T* g = gop + oh * j.OW * j.og_pad;
    for (int64_t ow = 0; ow < j.OW; ++ow) {
      vec_t gv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        gv[v] = load<vec_t>(g + ow * j.og_pad + v * U);
      }
      const T* px = row + ow * j.stride_w;
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        add_scaled(acc[t], px[tap[t]], gv);
      }
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      T* d = dst + t * j.og_pad + v * U;
      store(d, load<vec_t>(d) + acc[t][v]);
    }
  }
}

// Every tile reads all the pixels it sums, so the image is taken a band of rows at a time (kBandBytes of
// grad_output), which stays in L2 cache while every tile reads it: a whole image's (3 MB on the stem)
// would come from L3 or memory once per tile.

template <int OV, typename T>
void grad_channel_tiles_of(const GradChannelTileJob<T>& j) {
  constexpr int kTile = row_tile(kShape, OV * sizeof(T));
  const int64_t band = min_of(j.OH, band_rows(j.OW * j.og_pad * int64_t{sizeof(T)}));
  const int64_t tap_tiles = (j.K + kTile - 1) / kTile;
  for (int64_t oh0 = 0; oh0 < j.OH; oh0 += band) {
    const int64_t oh1 = min_of(j.OH, oh0 + band);
    for (int64_t o = 0; o < j.og_pad; o += OV) {
      // the taps in tiles of nearly equal size, as the forward's rows (25 taps as 9 + 8 + 8, not 12 + 12 + 1,
      // whose last tile would read the whole band for one tap)
      for (int64_t tile = 0, t = 0; tile < tap_tiles; ++tile) {
        const int64_t count = j.K / tap_tiles + (tile < j.K % tap_tiles ? 1 : 0);
        with_count<kTile>(count, [&](auto taps) {
          grad_channel_tile<decltype(taps)::value, OV>(j, oh0, oh1, j.taps + t, j.gop + o, j.acc + t * j.og_pad + o);
        });
        t += count;
      }
    }
  }
}

template <typename T>
void grad_channel_tiles(const GradChannelTileJob<T>& j) {
  with_channel_width<T>(j.OV, [&](auto ov) { grad_channel_tiles_of<decltype(ov)::value>(j); });
}

// ---------------------------------------------------------------------------------------------------
// Pixel-tile weight gradient: for each of NT taps and OB output channels, a vector accumulates
// grad_output(position) * input(position + tap) over the wide positions of the image; the lanes are
// summed at the end, in a fixed order.
template <int OB, int NT, typename T>
void grad_pixel_tile(const T* src, const int64_t* taps, const T* gow, int64_t span, T* dst, int64_t ldd) {
  using vec_t = Vec<T>;
  constexpr int L = kLanes<T>;
  vec_t acc[OB][NT];
  int64_t tap[NT];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) {
    tap[t] = taps[t];
#pragma GCC unroll 4
    for (int ob = 0; ob < OB; ++ob) {
      acc[ob][t] = vec_t{};
    }
  }
  for (int64_t pos = 0; pos < span; pos += L) {
    vec_t g[OB];
#pragma GCC unroll 4
    for (int ob = 0; ob < OB; ++ob) {
      g[ob] = load<vec_t>(gow + ob * span + pos);
    }
#pragma GCC unroll 32
    for (int t = 0; t < NT; ++t) {
      const vec_t v = load<vec_t>(src + pos + tap[t]);
#pragma GCC unroll 4
      for (int ob = 0; ob < OB; ++ob) {
        acc[ob][t] += g[ob] * v;
      }
    }
  }
#pragma GCC unroll 4
  for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 32
    for (int t = 0; t < NT; ++t) {
      T sum = 0;
      for (int i = 0; i < L; ++i) {
        sum += acc[ob][t][i];
      }
      dst[ob * ldd + t] += sum;
    }
  }
}

template <int OB, typename T>
void grad_pixel_tiles_of(const GradPixelTileJob<T>& j) {
  constexpr int NT = grad_pixel_taps(kShape, OB);
  for (int64_t t = 0; t < j.k_pad; t += NT) {
    grad_pixel_tile<OB, NT>(j.src, j.taps + t, j.gow, j.span, j.acc + t, j.k_pad);
  }
}

template <typename T>
void grad_pixel_tiles(const GradPixelTileJob<T>& j) {
  j.OB == 1 ? grad_pixel_tiles_of<1>(j) : j.OB == 2 ? grad_pixel_tiles_of<2>(j) : grad_pixel_tiles_of<3>(j);
}

// ---------------------------------------------------------------------------------------------------
// The sum of n values: 16 interleaved lanes (whatever the level, so that every level adds in the same
// order and gives the same bits; as 16 / U vectors of U lanes), then the lanes and the tail in double.
template <typename T>
double plane_sum(const T* row, int64_t n) {
  using vec_t = Unit<T, 16>;
  constexpr int U = kUnit<T, 16>, NV = 16 / U;
  vec_t lanes[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    lanes[v] = vec_t{};
  }
  int64_t l = 0;
  for (; l + 16 <= n; l += 16) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      lanes[v] += load<vec_t>(row + l + v * U);
    }
  }
  double sum = 0;
  for (int v = 0; v < NV; ++v) {
    for (int i = 0; i < U; ++i) {
      sum += lanes[v][i];
    }
  }
  for (; l < n; ++l) {
    sum += row[l];
  }
  return sum;
}

template <typename T>
constexpr TileKernels<T> table() {
  return {&pixel_tiles<T>,      &channel_tiles<T>, &grad_channel_tiles<T>,
          &grad_pixel_tiles<T>, &transpose<T>,     &plane_sum<T>};
}

}  // namespace
}  // namespace LENET_CPU_LEVEL

const LevelKernels& LENET_CPU_LEVEL_TABLE() {
  static constexpr LevelKernels k{LENET_CPU_LEVEL::kLevel, LENET_CPU_LEVEL_NAME, LENET_CPU_LEVEL::kShape,
                                  LENET_CPU_LEVEL::table<float>(), LENET_CPU_LEVEL::table<double>()};
  return k;
}

}  // namespace cpu
}  // namespace lenet_ext
