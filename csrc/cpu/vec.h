// CPU instruction-set levels, and the register-tile rules that size every tile for its level.
//
// The hot tile loops (cpu/tiles.h) are compiled once per level and picked when the process runs
// (cpu/dispatch.cpp), as ATen does with CPU_CAPABILITY:
//
//   level     vector   registers   compiled for
//   default   16 B     16 (x86-64 SSE2), 32 (aarch64 NEON)   the build's baseline: runs on every CPU
//   avx2      32 B     16 ymm      AVX2 + FMA (Haswell, Zen and later)
//   avx512    64 B     32 zmm      AVX-512 F/BW/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later)
//
// A register tile keeps its accumulators, the vectors it loads per step and one broadcast value in
// registers. A tile sized for AVX-512's 32 registers spills on every step on AVX2's 16 (that made conv
// twenty times slower there), so every tile shape below is a function of the level's register count and
// vector width, never a fixed number of bytes.
//
// This header is plain C++ (no ATen): it is included by the per-level translation units, which must not
// compile ATen's inline functions with a higher target than the rest of the extension (the linker keeps
// one copy of an inline function, and it could be the AVX-512 one).
#pragma once

#include <cstdint>

namespace lenet_ext {
namespace cpu {

enum class Level : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr int kLevels = 3;

struct LevelShape {
  int vec_bytes;  // one vector register
  int registers;  // vector registers the compiler may allocate
};

#if defined(__aarch64__)
constexpr LevelShape kDefaultShape{16, 32};
#else
constexpr LevelShape kDefaultShape{16, 16};
#endif
constexpr LevelShape kAvx2Shape{32, 16};
constexpr LevelShape kAvx512Shape{64, 32};

// Vector registers one value of `bytes` bytes occupies.
constexpr int vectors_of(const LevelShape& s, int bytes) {
  return (bytes + s.vec_bytes - 1) / s.vec_bytes;
}

// Pixel tiles (forward): OB output channels x V vectors of positions. Per tap the tile loads V input
// vectors and broadcasts one weight at a time: OB * V + V + 1 registers. V is capped at 8 so that a
// plane's last, partial tile stays short.
constexpr int kMaxPixelVectors = 8;
constexpr int pixel_vectors(const LevelShape& s, int OB) {
  const int v = (s.registers - 1) / (OB + 1);
  return v < 1 ? 1 : (v > kMaxPixelVectors ? kMaxPixelVectors : v);
}

// Channel tiles (strided forward) and the channel-tile weight gradient: P pixels (or taps) x one group
// of OV output channels, which takes c = vectors_of(OV channels) registers. P * c accumulators, the c
// weight (or gradient) registers and one broadcast: P <= (registers - 1 - c) / c, at most 12.
constexpr int kMaxRowTile = 12;
constexpr int row_tile(const LevelShape& s, int channel_bytes) {
  const int c = vectors_of(s, channel_bytes);
  const int p = (s.registers - 1 - c) / c;
  return p < 1 ? 1 : (p > kMaxRowTile ? kMaxRowTile : p);
}

// The widest channel group a channel tile takes: registers / 8 vectors (4 on AVX-512, 2 with 16
// registers), and never under 16 channels, so that a tile keeps several pixels (or taps) per load of its
// group's weights (or gradients). On AVX-512 a 64-channel layer is then one group of 4 registers x 6
// pixels, not four groups of 1 register x 12 pixels whose every multiply-add waits on a broadcast load.
constexpr int max_channel_width(const LevelShape& s, int elem_bytes) {
  const int w = s.registers / 8 * s.vec_bytes / elem_bytes;
  return w < 16 ? 16 : (w > 64 ? 64 : w);
}

// Pixel-tile weight gradient (at most 3 output channels per group): OB x T accumulators, OB gradient
// vectors and one input vector: OB * T + OB + 1 registers, T at most 24.
constexpr int kMaxGradTaps = 24;
constexpr int grad_pixel_taps(const LevelShape& s, int OB) {
  const int t = (s.registers - 1 - OB) / OB;
  return t < 1 ? 1 : (t > kMaxGradTaps ? kMaxGradTaps : t);
}

}  // namespace cpu
}  // namespace lenet_ext
