// The table of per-level tile kernels, and the jobs they take.
//
// Each job is one independent item of work (one image and group, or one plane) whose buffers the
// caller has prepared: the drivers in cpu/conv2d_*.cpp own threads, buffers and ATen calls, and the
// kernels behind this table own only the arithmetic. cpu/tiles.h implements the table once per level
// (cpu/level_*.cpp); cpu/dispatch.cpp picks the level.
//
// Plain C++ only (see cpu/vec.h for why the per-level code includes no ATen).
#pragma once

#include <cstdint>

#include "cpu/vec.h"

namespace lenet_ext {
namespace cpu {

// Channel tiles work on an image a band of output rows at a time, a band's pixel-major buffer
// (results, or grad_output) about kBandBytes: it stays in L2 cache while every tile of the band reads or
// writes it.
constexpr int64_t kBandBytes = 128 * 1024;
inline int64_t band_rows(int64_t row_bytes) {
  return 1 + kBandBytes / row_bytes;
}

// Forward pixel tiles for one (image, group): every output channel of the group over every position.
template <typename T>
struct PixelTileJob {
  const T* src;          // the prepared source: the padded image (wide) or its shifted copies (compact)
  const int64_t* taps;   // K offsets of the taps (c, i, j) in src
  int64_t K;
  const T* weights;      // [blocks][K][OB]: each channel block's weights, OB per tap
  const T* bias;         // [blocks][OB], zeros past the group's channels (or no bias)
  T* out;                // plane of the group's first output channel; planes are L apart
  int64_t channels;      // output channels of the group
  int OB;                // channels per block (pixel_block); its tile has pixel_vectors(OB) vectors
  int64_t span;          // positions: OH * pitch
  int64_t pitch;         // positions per output row: Wp (wide) or OW (compact)
  int64_t OW, L;
  bool compact;          // positions are exactly the output plane's (full tiles store in place)
};

// Strided forward channel tiles for one band of rows of one (image, group): P pixels of a row x OV output
// channels, written to the NCHW output with the bias added.
template <typename T>
struct ChannelTileJob {
  const T* src;          // the zero-padded image: channels of Hp x Wp
  const int64_t* taps;   // K tap offsets in src
  int64_t K;
  const T* weights;      // [K][og_pad]: tap-major, zero past the group's channels
  T* res;                // scratch for the band, pixel-major (res[(oh * OW + ow) * og_pad + o]), where tiles
                         // do not store in place (cpu/tiles.h says when)
  int OV;                // 8, 16, 32 or 64 channels per tile (cpu::max_channel_width)
  int64_t og_pad;        // a multiple of OV
  int64_t OH, OW, Wp, stride_h, stride_w;
  T* out;                // the band's first output row of the group's first channel; channels ldo apart
  int64_t ldo;
  const T* bias;         // the group's bias, or null
  int64_t channels;      // the group's output channels (Og <= og_pad)
};

// Channel-tile weight gradient for one (image, group): T taps x OV channels, summed over every pixel.
template <typename T>
struct GradChannelTileJob {
  const T* src;          // the zero-padded image
  const int64_t* taps;   // K tap offsets in src
  int64_t K;
  const T* gop;          // pixel-major grad_output: gop[(oh * OW + ow) * og_pad + o]
  T* acc;                // [K][og_pad], added to
  int OV;
  int64_t og_pad;
  int64_t OH, OW, Wp, stride_h, stride_w;
};

// Pixel-tile weight gradient for one (image, group) of stride 1 and at most 3 output channels.
template <typename T>
struct GradPixelTileJob {
  const T* src;          // the zero-padded image, with slack after it
  const int64_t* taps;   // k_pad tap offsets (past K: any in-bounds offset; those sums are dropped)
  int64_t k_pad;         // a multiple of grad_pixel_taps(OB)
  const T* gow;          // [OB][span]: grad_output laid out wide, zero in the dropped columns
  int64_t span;          // a multiple of the level's lanes
  T* acc;                // [OB][k_pad], added to
  int OB;                // 1 to 3
};

template <typename T>
struct TileKernels {
  void (*pixel_tiles)(const PixelTileJob<T>&);
  void (*channel_tiles)(const ChannelTileJob<T>&);
  void (*grad_channel_tiles)(const GradChannelTileJob<T>&);
  void (*grad_pixel_tiles)(const GradPixelTileJob<T>&);
  // dst[c * ldd + r] = src[r * lds + c] (+ add[c] unless add is null), r < rows, c < cols
  void (*transpose)(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows, int64_t cols, const T* add);
  double (*plane_sum)(const T*, int64_t);  // the sum of n values, in a fixed order
};

struct LevelKernels {
  Level level;
  const char* name;  // as lenet_ext.backends.cpu_isa() spells it
  LevelShape shape;
  TileKernels<float> f32;
  TileKernels<double> f64;

  template <typename T>
  const TileKernels<T>& of() const;

  template <typename T>
  int lanes() const {
    return shape.vec_bytes / static_cast<int>(sizeof(T));
  }
};

template <>
inline const TileKernels<float>& LevelKernels::of<float>() const {
  return f32;
}
template <>
inline const TileKernels<double>& LevelKernels::of<double>() const {
  return f64;
}

// One per compiled level (cpu/level_*.cpp). Only the default level exists off x86-64.
const LevelKernels& kernels_default();
#if defined(__x86_64__) || defined(_M_X64)
#define LENET_EXT_X86_LEVELS 1
const LevelKernels& kernels_avx2();
const LevelKernels& kernels_avx512();
#endif

// The level in use (cpu/dispatch.cpp): the best one this CPU runs, or the one forced by
// LENET_EXT_CPU_ISA or lenet_ext.backends.cpu_isa().
const LevelKernels& active_kernels();

}  // namespace cpu
}  // namespace lenet_ext
