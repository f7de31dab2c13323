// conv2d on the CPU by pixel tiles: the direct forward for stride 1 and, over the input's stride phases,
// for strided convolutions with 1 to 3 output channels per group; and the weight gradient for stride 1
// with at most 3 output channels per group (depthwise).
//
// Forward: a register tile holds OB output channels x V vectors of consecutive output positions (see
// cpu/tiles.h): per tap it loads V input vectors and broadcasts OB weights, so V * OB multiply-adds share
// V + OB loads. Across pixels a vector is always full, even when a group has few output channels. Wider
// groups take several channel blocks per pixel tile, which keeps the tile's input in L1 while each
// block's weights (contiguous, OB per tap) stream from L2. OB and V follow the level's registers.
//
// Positions follow one of three layouts of the source, each of which makes every tap a contiguous run:
//   wide     the zero-padded image, `pitch` = Wp; output (oh, ow) is position oh * Wp + ow, and the
//            Wp - OW extra positions per row are computed and dropped;
//   compact  KW copies of the padded image, copy j shifted left by j * dw and cut to OW columns;
//            `pitch` = OW, so positions are exactly the NCHW output plane and nothing is dropped. It
//            costs KW copies of the input, and pays off when Wp - OW is a large part of OW (LeNet's
//            10- and 28-wide outputs);
//   phases   for a stride (sh, sw) > 1: the padded image split into its sh x sw phases (rows h with
//            h % sh = a, columns w with w % sw = b), each a plane of Hh x Wh = ceil(Hp / sh) x
//            ceil(Wp / sw). Output (oh, ow) reads padded (oh * sh + i * dh, ow * sw + j * dw), which is
//            phase ((i * dh) % sh, (j * dw) % sw) at (oh + i * dh / sh, ow + j * dw / sw): a strided
//            convolution becomes a stride-1 one over the phases, `pitch` = Wh, with the wide layout's
//            dropped columns.
//
// Weight gradient: for each of T taps and OB (<= 3) output channels, a vector accumulates
// grad_output(position) * input(position + tap) over the wide positions of an image; grad_output is
// first laid out wide, with zeros in the dropped columns, so they add nothing.
//
// Threads: (image, group) items from a queue for the forward (no reduction); batch slices with partial
// sums merged in slice order for the weight gradient (bitwise reproducible for a given thread count).
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/conv2d_common.h"

namespace lenet_ext {
namespace {

// The compact copies must fit in 1 MiB (64 -> 64 on 56 x 56 slowed down by 20% when its 2.5 MB of copies
// left the L2 cache).
constexpr int64_t kCompactBytes = int64_t{1} << 20;

// Rows are copied in chunks of one cache line.
constexpr int64_t kCopyChunk = 64;

// `rows` rows of `cols` elements, from src (row pitch ls) to dst (row pitch ld). Rows are moved in whole
// chunks of kCopyChunk bytes (a fixed-size memcpy is a few vector moves), which may run past a row's end: into the next row, which is written afterwards, or into the
// slack after the destination. A read never runs past `src_end`.
template <typename scalar_t>
void copy_rows(const scalar_t* src, int64_t ls, const scalar_t* src_end, scalar_t* dst, int64_t ld, int64_t rows,
               int64_t cols) {
  constexpr int64_t kLanes = kCopyChunk / sizeof(scalar_t);
  const int64_t chunks = (cols + kLanes - 1) / kLanes;
  int64_t r = 0;
  for (; r < rows && src_end - (src + r * ls) >= chunks * kLanes; ++r) {
    for (int64_t k = 0; k < chunks; ++k) {
      std::memcpy(dst + r * ld + k * kLanes, src + r * ls + k * kLanes, kCopyChunk);
    }
  }
  for (; r < rows; ++r) {
    std::copy(src + r * ls, src + r * ls + cols, dst + r * ld);
  }
}

// Copy j (of KW) of the compact layout: copy[j][c][h][ow] = padded[c][h][ow + j * dw] for the Hp padded
// rows h and the OW output columns. The rows' zero borders are written after copy_rows, which may run
// into them.
template <typename scalar_t>
void shifted_copies(const scalar_t* x, const scalar_t* x_end, scalar_t* dst, int64_t channels, const Window2d& w,
                    int64_t Hp) {
  const int64_t H = w.in[0], W = w.in[1], OW = w.out[1], top = w.pad[0];
  for (int64_t j = 0; j < w.kernel[1]; ++j) {
    const Range cols = valid_outputs(W, w.pad[1], j * w.dilation[1], 1, OW);
    for (int64_t c = 0; c < channels; ++c) {
      scalar_t* d = dst + (j * channels + c) * Hp * OW;
      std::fill(d, d + top * OW, scalar_t(0));
      if (cols.lo < cols.hi) {  // output column cols.lo reads input column cols.lo + j * dw - pad >= 0
        const scalar_t* first = x + c * H * W + cols.lo + j * w.dilation[1] - w.pad[1];
        copy_rows(first, W, x_end, d + top * OW + cols.lo, OW, H, cols.hi - cols.lo);
      }
      if (cols.lo > 0 || cols.hi < OW) {
        for (int64_t h = 0; h < H; ++h) {
          scalar_t* row = d + (top + h) * OW;
          std::fill(row, row + cols.lo, scalar_t(0));
          std::fill(row + cols.hi, row + OW, scalar_t(0));
        }
      }
      std::fill(d + (top + H) * OW, d + Hp * OW, scalar_t(0));
    }
  }
}

// The phases layout of one image's `channels` planes: dst[c][a][b][hh][wh] = padded(c, hh * sh + a,
// wh * sw + b), zero in the padding and past the padded plane.
template <typename scalar_t>
void phase_split(const scalar_t* x, scalar_t* dst, int64_t channels, const Window2d& w, int64_t Hh, int64_t Wh) {
  const int64_t H = w.in[0], W = w.in[1], sh = w.stride[0], sw = w.stride[1], top = w.pad[0], left = w.pad[1];
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t a = 0; a < sh; ++a) {
      for (int64_t b = 0; b < sw; ++b) {
        scalar_t* plane = dst + ((c * sh + a) * sw + b) * Hh * Wh;
        // the phase's columns wh that land inside the image: 0 <= wh * sw + b - left < W
        const Range cols = valid_outputs(W, left, b, sw, Wh);
        for (int64_t hh = 0; hh < Hh; ++hh) {
          scalar_t* row = plane + hh * Wh;
          const int64_t h = hh * sh + a - top;
          if (h < 0 || h >= H || cols.lo >= cols.hi) {
            std::fill(row, row + Wh, scalar_t(0));
            continue;
          }
          std::fill(row, row + cols.lo, scalar_t(0));
          const scalar_t* in = x + (c * H + h) * W + cols.lo * sw + b - left;
          for (int64_t wh = cols.lo; wh < cols.hi; ++wh, in += sw) {
            row[wh] = *in;
          }
          std::fill(row + cols.hi, row + Wh, scalar_t(0));
        }
      }
    }
  }
}

// Tap (c, i, j) of the phases layout, as an offset from an output position's origin.
std::vector<int64_t> phase_tap_offsets(const Window2d& w, int64_t channels, int64_t Hh, int64_t Wh) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1], sh = w.stride[0], sw = w.stride[1];
  std::vector<int64_t> taps(channels * KH * KW);
  for (int64_t r = 0; r < channels * KH * KW; ++r) {
    const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
    const int64_t di = i * w.dilation[0], dj = j * w.dilation[1];
    taps[r] = ((c * sh + di % sh) * sw + dj % sw) * Hh * Wh + (di / sh) * Wh + dj / sw;
  }
  return taps;
}

// Which layout: an estimate of each one's extra work per image, in cycles of a core doing two vector
// multiply-adds a cycle (`lanes` scalars each). The wide layout computes (Wp - OW) * OH dropped positions
// of K * og_pad multiply-adds each, and stores each output row of each channel through the tile buffer
// (about 8 cycles); the compact one copies KW * Cg * Hp short rows (about 6 cycles each, measured on
// LeNet's layers) and holds KW times the input, within kCompactBytes. On AVX-512 the estimate picks
// compact for LeNet's forwards and 3 -> 16 on 32 x 32, wide for LeNet's input gradients and 64 -> 64, as
// measured.
bool compact_pixels(const Conv2dParams& p, const ConvDims& d, int64_t og_pad, int64_t element_size, int lanes) {
  if (d.KW * d.Cg * d.Hp * d.OW * element_size > kCompactBytes) {
    return false;
  }
  const double wide_extra = double(d.Wp - d.OW) * d.OH * d.K * og_pad / (2.0 * lanes) + 8.0 * d.Og * d.OH;
  const double compact_extra = 6.0 * d.KW * d.Cg * d.Hp;
  return compact_extra < wide_extra;
}

// The channel block: of the blocks the tiles are compiled for, the one with the fewest tile steps per
// vector of positions, counting a step as the larger of its multiply-adds (OB * V) and its loads (V + OB)
// (two of each per cycle), times the blocks the group needs. Ties go to the larger block. On AVX-512:
// 6 channels (LeNet's first layer) as 6 x 4, 16 as 8 x 3, one (depthwise) as 1 x 8.
int pixel_block(int64_t Og, const cpu::LevelShape& shape) {
  int best = 0;
  double best_cost = 0;
  for (const int ob : {8, 6, 4, 2, 1}) {
    const int v = cpu::pixel_vectors(shape, ob);
    const double cost = double((Og + ob - 1) / ob) * std::max(ob * v, ob + v) / v;
    if (best == 0 || cost < best_cost) {
      best = ob;
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace

template <typename scalar_t>
void conv2d_forward_pixels(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                           const Conv2dParams& p, const cpu::LevelKernels& level) {
  const ConvDims d(p);
  const Window2d& win = p.win;
  const int OB = pixel_block(d.Og, level.shape);
  const int64_t lanes = level.lanes<scalar_t>(), tile = cpu::pixel_vectors(level.shape, OB) * lanes;
  const int64_t blocks = (d.Og + OB - 1) / OB;
  const bool phases = !is_stride1(win);
  // A stride only matters between outputs: with one output row (or column) the phases take it as 1, so
  // a huge stride (torch accepts any) never becomes that many phase planes. Past one output, a stride is
  // below the padded size, and the phases hold about one padded image.
  Window2d pw = win;
  pw.stride[0] = d.OH == 1 ? 1 : win.stride[0];
  pw.stride[1] = d.OW == 1 ? 1 : win.stride[1];
  const int64_t Hh = (d.Hp + pw.stride[0] - 1) / pw.stride[0], Wh = (d.Wp + pw.stride[1] - 1) / pw.stride[1];
  const bool compact = !phases && compact_pixels(p, d, blocks * OB, sizeof(scalar_t), lanes);
  // Work items: (image, group) pairs; in the wide layout, (image, group, band of output rows), a band about
  // kBandBytes of output, which pads only the input rows it reads: threads share an image, and the last
  // items are short (as in cpu/conv2d_channels.cpp; on the 2-vCPU VM, 64 -> 64 on 56 x 56 measured within
  // 3% either way at batch 1, 8 and 32, AVX-512).
  const bool wide = !phases && !compact;
  const RowBands bands(d, win, wide ? std::min(d.OH, cpu::band_rows(d.OW * d.Og * int64_t{sizeof(scalar_t)})) : d.OH);
  const int64_t rows_in = wide ? bands.in_rows : d.Hp;
  const int64_t pitch = phases ? Wh : (compact ? d.OW : d.Wp);
  const int64_t source = phases ? d.Cg * pw.stride[0] * pw.stride[1] * Hh * Wh
                                : (compact ? d.KW * d.Cg * d.Hp * d.OW : d.Cg * rows_in * d.Wp);
  // Tiles may read up to a tile past the last position (a row or more past it in the phases layout),
  // a wide tap sits up to (KW-1)*dw past its row, and the compact copies' chunks may run a chunk past the
  // last row: slack after the source keeps every read and write inside the buffer. Only dropped lanes
  // read it.
  const int64_t slack = 2 * (d.Wp + tile) + kCopyChunk / int64_t{sizeof(scalar_t)};
  const std::vector<int64_t> taps =
      phases ? phase_tap_offsets(pw, d.Cg, Hh, Wh)
             : tap_offsets(win, d.Cg, rows_in, pitch, compact ? d.Cg * d.Hp * d.OW : win.dilation[1]);
  // [groups][blocks][K][OB]: each channel block's weights are contiguous, OB per tap.
  const at::Tensor wt = tap_major_weights<scalar_t>(weight, p, OB);
  std::vector<scalar_t> b_pad(p.groups * blocks * OB, scalar_t(0));  // the bias, blocks * OB per group
  for (int64_t oc = 0; bias && oc < p.out_channels; ++oc) {
    b_pad[oc / d.Og * blocks * OB + oc % d.Og] = bias->const_data_ptr<scalar_t>()[oc];
  }
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* x_end = x_data + x.numel();
  const scalar_t* wt_data = wt.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const auto kernel = level.of<scalar_t>().pixel_tiles;

  WorkQueue queue(bands.items(p.batch, p.groups));
  run_workers(bands.items(p.batch, p.groups), [&] {
    std::vector<scalar_t> src(source + slack, scalar_t(0));
    for (int64_t q; queue.pop(q);) {
      const auto [n, grp, oh0, rows] = bands.item(q, p.groups, d.OH);
      const scalar_t* xg = x_data + (n * p.in_channels + grp * d.Cg) * d.in_plane;
      if (phases) {
        phase_split(xg, src.data(), d.Cg, pw, Hh, Wh);
      } else if (compact) {
        shifted_copies(xg, x_end, src.data(), d.Cg, win, d.Hp);
      } else {
        pad_rows(xg, src.data(), d.Cg, win, rows_in, d.Wp, oh0);
      }
      kernel({src.data(), taps.data(), d.K, wt_data + grp * blocks * d.K * OB, b_pad.data() + grp * blocks * OB,
              out_data + (n * p.out_channels + grp * d.Og) * d.L + oh0 * d.OW, d.Og, OB, rows * pitch, pitch, d.OW,
              d.L, compact});
    }
  });
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_pixels(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p,
                                     const cpu::LevelKernels& level) {
  const ConvDims d(p);
  const Window2d& win = p.win;
  const int OB = static_cast<int>(d.Og);
  TORCH_INTERNAL_ASSERT(OB >= 1 && OB <= 3, "pixel-tile weight gradient for ", OB, " channels per group");
  const int64_t T = cpu::grad_pixel_taps(level.shape, OB), lanes = level.lanes<scalar_t>();
  const int64_t k_pad = (d.K + T - 1) / T * T;
  const int64_t span = (d.OH * d.Wp + lanes - 1) / lanes * lanes;
  std::vector<int64_t> taps = tap_offsets(win, d.Cg, d.Hp, d.Wp, win.dilation[1]);
  taps.resize(k_pad, 0);  // the last tile's extra taps read the image's start; their sums are dropped
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const auto kernel = level.of<scalar_t>().grad_pixel_tiles;

  // One partial sum per batch slice ([groups][OB][k_pad]), merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * OB * k_pad * int64_t{sizeof(scalar_t)});
  at::Tensor partial = at::zeros({slices.count, p.groups, OB, k_pad}, go.options());
  for_each_batch_slice(p.batch, slices, [&](int64_t slice, int64_t n0, int64_t n1) {
    // A vector may run (KW-1)*dw past the last row's taps: zeroed slack keeps reads inside the buffer.
    std::vector<scalar_t> src(d.Cg * d.Hp * d.Wp + d.Wp + lanes, scalar_t(0));
    std::vector<scalar_t> gow(OB * span, scalar_t(0));  // wide grad_output, zero where nothing is read
    scalar_t* acc = partial.mutable_data_ptr<scalar_t>() + slice * p.groups * OB * k_pad;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        pad_input(x_data + (n * p.in_channels + grp * d.Cg) * d.in_plane, src.data(), d.Cg, win, d.Hp, d.Wp);
        for (int64_t o = 0; o < d.Og; ++o) {
          const scalar_t* plane = go_data + (n * p.out_channels + grp * d.Og + o) * d.L;
          for (int64_t oh = 0; oh < d.OH; ++oh) {
            std::copy(plane + oh * d.OW, plane + (oh + 1) * d.OW, gow.data() + o * span + oh * d.Wp);
          }
        }
        kernel({src.data(), taps.data(), k_pad, gow.data(), span, acc + grp * OB * k_pad, OB});
      }
    }
  });
  const at::Tensor sum = sum_slices(partial);
  // [groups][OB][k_pad] -> [groups * Og][Cg][KH][KW]
  return sum.narrow(2, 0, d.K).reshape({p.out_channels, d.Cg, d.KH, d.KW}).contiguous();
}

#define LENET_EXT_INSTANTIATE(T)                                                                           \
  template void conv2d_forward_pixels<T>(const at::Tensor&, const at::Tensor&, const at::Tensor*, at::Tensor&, \
                                         const Conv2dParams&, const cpu::LevelKernels&);                   \
  template at::Tensor conv2d_grad_weight_pixels<T>(const at::Tensor&, const at::Tensor&, const Conv2dParams&, \
                                                   const cpu::LevelKernels&);
LENET_EXT_INSTANTIATE(float)
LENET_EXT_INSTANTIATE(double)
#undef LENET_EXT_INSTANTIATE

}  // namespace lenet_ext
