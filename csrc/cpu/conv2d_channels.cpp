// conv2d on the CPU by channel tiles: the direct forward for strided convolutions, and the weight
// gradient, for 4 or more output channels per group (cpu/conv2d.cpp chooses).
//
// Forward: no unrolled copy of the input. Each register tile (cpu/tiles.h) holds P consecutive output
// pixels of one row x OV output channels, and for every tap (c, i, j) adds one input value per pixel (a
// broadcast) times the OV weights of that tap (one vector load). Any stride and dilation: pixel p of the
// tile reads the padded input at p * stride. Each tile transposes its results in registers and stores
// them to NCHW with the bias, or (when its pixels are few against a vector, cpu/tiles.h) a band of them
// goes to a pixel-major buffer, then to NCHW.
//
// Weight gradient: register tiles of T taps x OV output channels, each accumulating
// input(tap, pixel) * grad_output(pixel, channels) over every output pixel of an image. grad_output is
// first made pixel-major per image, so each pixel is one vector load.
//
// OV is 8 to 64 channels (the group's channels, padded; wider on levels with more registers); P and T
// follow the level's registers.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "cpu/conv2d_common.h"

namespace lenet_ext {
namespace {

int64_t padded(int64_t Og, int OV) {
  return (Og + OV - 1) / OV * OV;
}

// The channels per tile: 8 for narrow groups; otherwise the widest of 16, 32, 64 that the level allows
// (cpu::max_channel_width) among those that pad the group least.
int channel_width(int64_t Og, const cpu::LevelShape& shape, int elem_bytes) {
  if (Og <= 8) {
    return 8;
  }
  int best = 16;
  for (int ov = 32; ov <= cpu::max_channel_width(shape, elem_bytes); ov *= 2) {
    if (padded(Og, ov) <= padded(Og, best)) {
      best = ov;
    }
  }
  return best;
}

}  // namespace

template <typename scalar_t>
void conv2d_forward_channels(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                             const Conv2dParams& p, const cpu::LevelKernels& level) {
  const ConvDims d(p);
  const Window2d& win = p.win;
  const int OV = channel_width(d.Og, level.shape, sizeof(scalar_t));
  const int64_t og_pad = padded(d.Og, OV);
  const at::Tensor wt = tap_major_weights<scalar_t>(weight, p, og_pad);
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* wt_data = wt.const_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const auto kernel = level.of<scalar_t>().channel_tiles;

  // Work items: (image, group, band of output rows), independent (no reduction), so any split across
  // threads is deterministic. A band is about kBandBytes of output (where the tiles do not store in place,
  // its pixel-major results stay in cache until they are moved out), and reads the padded input rows it
  // needs, copied for it alone: threads share an image (a batch smaller than the threads still uses them
  // all), and the last items are short (a thread slowed down at the end holds the others up by one band,
  // not one image). On this project's 2-vCPU VM, whose two threads share about one core's throughput, bands
  // and whole images measured the same (the stem at batch 8 and 1, AVX2): the gain is for real cores.
  const RowBands bands(d, win, std::min(d.OH, cpu::band_rows(d.OW * og_pad * int64_t{sizeof(scalar_t)})));
  const std::vector<int64_t> taps = tap_offsets(win, d.Cg, bands.in_rows, d.Wp, win.dilation[1]);
  WorkQueue queue(bands.items(p.batch, p.groups));
  run_workers(bands.items(p.batch, p.groups), [&] {
    std::vector<scalar_t> src(d.Cg * bands.in_rows * d.Wp);
    std::vector<scalar_t> res(bands.rows * d.OW * og_pad);  // pixel-major: res[l * og_pad + o]
    for (int64_t q; queue.pop(q);) {
      const auto [n, grp, oh0, rows] = bands.item(q, p.groups, d.OH);
      pad_rows(x_data + (n * p.in_channels + grp * d.Cg) * d.in_plane, src.data(), d.Cg, win, bands.in_rows, d.Wp,
               oh0 * win.stride[0]);
      kernel({src.data(), taps.data(), d.K, wt_data + grp * d.K * og_pad, res.data(), OV, og_pad, rows, d.OW, d.Wp,
              win.stride[0], win.stride[1], out_data + (n * p.out_channels + grp * d.Og) * d.L + oh0 * d.OW, d.L,
              b_data ? b_data + grp * d.Og : nullptr, d.Og});
    }
  });
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_channels(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p,
                                       const cpu::LevelKernels& level) {
  const ConvDims d(p);
  const Window2d& win = p.win;
  const int OV = channel_width(d.Og, level.shape, sizeof(scalar_t));
  const int64_t og_pad = padded(d.Og, OV);
  const std::vector<int64_t> taps = tap_offsets(win, d.Cg, d.Hp, d.Wp, win.dilation[1]);
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const auto kernel = level.of<scalar_t>().grad_channel_tiles;
  const auto transpose = level.of<scalar_t>().transpose;

  // One partial sum per batch slice ([groups][K][og_pad]), merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * d.K * og_pad * int64_t{sizeof(scalar_t)});
  at::Tensor partial = at::zeros({slices.count, p.groups, d.K, og_pad}, go.options());
  for_each_batch_slice(p.batch, slices, [&](int64_t slice, int64_t n0, int64_t n1) {
    std::vector<scalar_t> src(d.Cg * d.Hp * d.Wp);
    std::vector<scalar_t> gop(d.L * og_pad, scalar_t(0));  // pixel-major grad_output: gop[l * og_pad + o]
    scalar_t* acc = partial.mutable_data_ptr<scalar_t>() + slice * p.groups * d.K * og_pad;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        pad_input(x_data + (n * p.in_channels + grp * d.Cg) * d.in_plane, src.data(), d.Cg, win, d.Hp, d.Wp);
        transpose(go_data + (n * p.out_channels + grp * d.Og) * d.L, d.L, gop.data(), og_pad, d.Og, d.L, nullptr);
        kernel({src.data(), taps.data(), d.K, gop.data(), acc + grp * d.K * og_pad, OV, og_pad, d.OH, d.OW, d.Wp,
                win.stride[0], win.stride[1]});
      }
    }
  });
  const at::Tensor sum = sum_slices(partial);
  // [groups][K][og_pad] -> [groups * Og][Cg][KH][KW]
  return sum.narrow(2, 0, d.Og).transpose(1, 2).reshape({p.out_channels, d.Cg, d.KH, d.KW}).contiguous();
}

#define LENET_EXT_INSTANTIATE(T)                                                                             \
  template void conv2d_forward_channels<T>(const at::Tensor&, const at::Tensor&, const at::Tensor*, at::Tensor&, \
                                           const Conv2dParams&, const cpu::LevelKernels&);                   \
  template at::Tensor conv2d_grad_weight_channels<T>(const at::Tensor&, const at::Tensor&, const Conv2dParams&, \
                                                     const cpu::LevelKernels&);
LENET_EXT_INSTANTIATE(float)
LENET_EXT_INSTANTIATE(double)
#undef LENET_EXT_INSTANTIATE

}  // namespace lenet_ext
