// What the CPU conv2d algorithms share: the derived sizes of a convolution, the padded copy of an
// image, tap offsets, tap-major weights, and the in-order merge of per-slice partial sums; and the
// entry point of each algorithm, which cpu/conv2d.cpp chooses between.
//
// Algorithms, one file each:
//   cpu/conv2d_im2col.cpp    im2col + matrix product (forward, input gradient, weight gradient): any shape
//   cpu/conv2d_pixels.cpp    pixel tiles, stride 1 (forward; weight gradient of <= 3 channels per group)
//   cpu/conv2d_channels.cpp  channel tiles, 4 to 32 output channels per group (forward; weight gradient)
//   cpu/conv2d_winograd.cpp  Winograd F(2x2, 3x3): 3x3 stride-1 forwards (and input gradients, as convolutions)
// The register tiles themselves are in cpu/tiles.h, compiled once per instruction-set level.
//
// Layout: every algorithm reads contiguous NCHW and writes contiguous NCHW, in float or double.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/common.h"
#include "cpu/kernels.h"
#include "shape.h"

namespace lenet_ext {

// The sizes every algorithm derives from Conv2dParams, named once.
struct ConvDims {
  int64_t Cg, Og;      // input and output channels per group
  int64_t KH, KW, K;   // kernel, and taps per output: K = Cg * KH * KW
  int64_t OH, OW, L;   // output plane, L = OH * OW
  int64_t H, W, in_plane;
  int64_t Hp, Wp;      // the zero-padded input plane

  explicit ConvDims(const Conv2dParams& p)
      : Cg(p.in_per_group()),
        Og(p.out_per_group()),
        KH(p.win.kernel[0]),
        KW(p.win.kernel[1]),
        K(p.weight_row()),
        OH(p.win.out[0]),
        OW(p.win.out[1]),
        L(OH * OW),
        H(p.win.in[0]),
        W(p.win.in[1]),
        in_plane(H * W),
        Hp(p.win.padded(0)),
        Wp(p.win.padded(1)) {}
};

inline bool is_stride1(const Window2d& w) {
  return w.stride[0] == 1 && w.stride[1] == 1;
}

// A plane's output rows taken `rows` at a time, as work items (image, group, band): `count` bands (the
// last may be shorter), each reading `in_rows` rows of the padded input from padded row
// first_row * stride, which pad_rows copies for it alone.
struct RowBands {
  int64_t rows, count, in_rows;

  RowBands(const ConvDims& d, const Window2d& w, int64_t rows_per_band)
      : rows(rows_per_band),
        count((d.OH + rows_per_band - 1) / rows_per_band),
        in_rows(std::min(d.Hp, (rows_per_band - 1) * w.stride[0] + (d.KH - 1) * w.dilation[0] + 1)) {}

  int64_t items(int64_t batch, int64_t groups) const { return batch * groups * count; }

  // Work item q: image n, group grp, output rows [first_row, first_row + band_rows).
  struct Item {
    int64_t n, grp, first_row, band_rows;
  };
  Item item(int64_t q, int64_t groups, int64_t OH) const {
    const int64_t image_group = q / count, first_row = q % count * rows;
    return {image_group / groups, image_group % groups, first_row, std::min(rows, OH - first_row)};
  }
};

// Rows [r0, r0 + rows) of the zero-padded image (Hp x Wp planes, `channels` of them, the input in their
// middle) into planes of `rows` x Wp: a band of the padded image, rows past its end included (as zeros).
template <typename scalar_t>
void pad_rows(const scalar_t* x, scalar_t* xp, int64_t channels, const Window2d& w, int64_t rows, int64_t Wp,
              int64_t r0) {
  const int64_t H = w.in[0], W = w.in[1], top = w.pad[0], left = w.pad[1];
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      scalar_t* row = xp + (c * rows + r) * Wp;
      const int64_t h = r0 + r - top;
      if (h < 0 || h >= H) {
        std::fill(row, row + Wp, scalar_t(0));
        continue;
      }
      std::fill(row, row + left, scalar_t(0));
      std::copy(x + (c * H + h) * W, x + (c * H + h + 1) * W, row + left);
      std::fill(row + left + W, row + Wp, scalar_t(0));
    }
  }
}

// Copies `channels` planes of one image into the middle of Hp x Wp planes, and zeroes their borders.
template <typename scalar_t>
void pad_input(const scalar_t* x, scalar_t* xp, int64_t channels, const Window2d& w, int64_t Hp, int64_t Wp) {
  pad_rows(x, xp, channels, w, Hp, Wp, 0);
}

// True when every value of row[0, n) is finite: its exponent bits are not all ones (an integer test, which
// vectorises; the float comparisons of isfinite() cost as much as Winograd's matrix products, and
// ATen's isfinite().all() is six operators, a small layer's whole gradient).
template <typename scalar_t>
bool all_finite(const scalar_t* row, int64_t n) {
  using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
  constexpr bits_t exponent = static_cast<bits_t>(sizeof(scalar_t) == 4 ? 0x7f800000ull : 0x7ff0000000000000ull);
  bits_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    bits_t b;
    std::memcpy(&b, row + i, sizeof(b));
    bad |= static_cast<bits_t>((b & exponent) == exponent);
  }
  return bad == 0;
}

// The offset of each tap (c, i, j), in that order, from a window's origin in `channels` planes of Hp rows
// of `pitch` elements, where kernel column j adds j * j_step: in a padded image (pitch Wp) j_step is the
// column dilation; in the pixel tiles' compact layout (pitch OW) it is one shifted copy's size.
std::vector<int64_t> tap_offsets(const Window2d& win, int64_t channels, int64_t Hp, int64_t pitch, int64_t j_step);

// The weights tap-major in blocks of output channels, [groups][blocks][K][block]: per group, each block of
// `block` output channels has one row of them per tap, with zeros past the group's Og channels. What the
// direct tiles load or broadcast per tap: the channel tiles take one block as wide as the padded group,
// the pixel tiles blocks of OB. (Plain loops over a contiguous weight: a small layer's call should not
// pay for five ATen operators here.)
template <typename scalar_t>
at::Tensor tap_major_weights(const at::Tensor& weight, const Conv2dParams& p, int64_t block);

// The per-slice partial sums ([slices][...]) added up in slice order, which keeps results reproducible.
at::Tensor sum_slices(const at::Tensor& partial);

// The algorithms (scalar_t is float or double). Forwards write `out` (N x O x OH x OW, contiguous);
// gradients return a new tensor.
template <typename scalar_t>
void conv2d_forward_im2col(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                           const Conv2dParams& p);
template <typename scalar_t>
at::Tensor conv2d_grad_input_im2col(const at::Tensor& go, const at::Tensor& w, const Conv2dParams& p);
template <typename scalar_t>
at::Tensor conv2d_grad_weight_im2col(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p);

template <typename scalar_t>
void conv2d_forward_pixels(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                           const Conv2dParams& p, const cpu::LevelKernels& level);
template <typename scalar_t>
at::Tensor conv2d_grad_weight_pixels(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p,
                                     const cpu::LevelKernels& level);

// Winograd F(2x2, 3x3): 3x3 kernels, stride 1, no dilation, 8+ channels per group each way
// (winograd_applies). Returns false, after writing `out`, when the result is not all finite: the caller
// computes such a result again directly.
bool winograd_applies(const Conv2dParams& p);
template <typename scalar_t>
bool conv2d_forward_winograd(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                             const Conv2dParams& p);

template <typename scalar_t>
void conv2d_forward_channels(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                             const Conv2dParams& p, const cpu::LevelKernels& level);
template <typename scalar_t>
at::Tensor conv2d_grad_weight_channels(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p,
                                       const cpu::LevelKernels& level);

}  // namespace lenet_ext
