// conv2d on the CPU: forward, and one backward that computes any subset of (input, weight, bias)
// gradients.
//
// Algorithm: im2col + matrix product, over blocks of output columns.
//   im2col unrolls a group of input channels into a matrix `col` with one row per kernel tap (c, i, j)
//   and one column per output pixel: the input value under that tap, or 0 where the tap falls in the
//   padding. Then, per block of output pixels and per group g,
//     forward        out[g]   = W[g] @ col (+ bias)
//     grad input     gx[g]   += col2im(W[g]^T @ gout[g])     (col2im scatters rows back, summing)
//     grad weight    gW[g]   += gout[g] @ col^T
//   Padding, stride and dilation live entirely in im2col/col2im: each row splits into zero borders and
//   an interior read without branches (valid_outputs in shape.h gives the interior).
//
// Blocks: a block is several whole images (small images, e.g. LeNet's 28x28) or a band of output rows
//   of one image (large images), sized so that its `col` stays near 1 MiB and in cache; one block then
//   feeds one reasonably shaped matrix product instead of many tiny ones. A block of exactly one whole
//   image reads and writes the tensors in place; other blocks gather/scatter through a small buffer.
//   A 1x1, stride-1, unpadded convolution over one whole image needs no unrolling at all.
//
// Layout: kernels read contiguous NCHW (inputs in any other layout are copied once) and write
// contiguous NCHW. bfloat16 is computed in float32 and rounded once at the end.
//
// Threads: with at least as many images as threads, each thread takes a slice of the batch and runs
// single-threaded products; otherwise images run one by one and im2col/col2im and the matrix product
// use the threads. The weight gradient is reduced per batch slice, then the slices are summed in a
// fixed order, so results are bitwise reproducible for a given thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu/common.h"
#include "shape.h"

namespace lenet_ext {
namespace {

constexpr int64_t kBlockBytes = int64_t{1} << 20;

// Output pixels [oh0, oh1) x [0, OW) of images [n0, n1). Column (b, oh, ow) of a block's matrices is
// (b - n0) * rows * OW + (oh - oh0) * OW + ow, with rows = oh1 - oh0.
struct Block {
  int64_t n0, n1, oh0, oh1;
};

// Geometry of the matrix products, and how output pixels are cut into blocks.
struct Gemm {
  int64_t Cg, Og, K, L;  // channels per group in and out, K = Cg*KH*KW taps, L = OH*OW pixels
  int64_t images_per_block, rows_per_block;

  Gemm(const Conv2dParams& p, int64_t elem_size)
      : Cg(p.in_channels / p.groups),
        Og(p.out_channels / p.groups),
        K(p.in_channels / p.groups * p.win.kernel[0] * p.win.kernel[1]),
        L(p.win.out[0] * p.win.out[1]) {
    const int64_t target_cols = std::max<int64_t>(1, kBlockBytes / (std::max<int64_t>(K, 1) * elem_size));
    if (L <= target_cols) {
      images_per_block = std::max<int64_t>(1, target_cols / std::max<int64_t>(L, 1));
      rows_per_block = p.win.out[0];
    } else {
      images_per_block = 1;
      rows_per_block = std::clamp<int64_t>(target_cols / p.win.out[1], 1, p.win.out[0]);
    }
  }

  // columns of the largest block
  int64_t max_cols(int64_t OW) const { return images_per_block * rows_per_block * OW; }
};

// Calls f(block) for every block of the images [n0, n1), in order.
template <typename F>
void for_each_block(const Gemm& g, int64_t n0, int64_t n1, int64_t OH, const F& f) {
  for (int64_t n = n0; n < n1; n += g.images_per_block) {
    if (g.rows_per_block == OH) {
      f(Block{n, std::min(n1, n + g.images_per_block), 0, OH});
      continue;
    }
    for (int64_t oh = 0; oh < OH; oh += g.rows_per_block) {
      f(Block{n, n + 1, oh, std::min(OH, oh + g.rows_per_block)});
    }
  }
}

// Rows of col are the taps (c, i, j); row r starts at col + r * ld, and output pixel (oh, ow) of the
// band [oh0, oh1) is its column (oh - oh0) * OW + ow.
template <typename scalar_t>
void im2col(const scalar_t* x, scalar_t* col, int64_t ld, int64_t channels, const Window2d& w, int64_t oh0,
            int64_t oh1) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1], H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t sh = w.stride[0], sw = w.stride[1];
  at::parallel_for(0, channels * KH * KW, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
      const int64_t tap_h = i * w.dilation[0], tap_w = j * w.dilation[1];
      const Range rows = valid_outputs(H, w.pad[0], tap_h, sh, OH);
      const Range cols = valid_outputs(W, w.pad[1], tap_w, sw, OW);
      const scalar_t* plane = x + c * H * W;
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        scalar_t* d = col + r * ld + (oh - oh0) * OW;
        if (oh < rows.lo || oh >= rows.hi) {
          std::fill(d, d + OW, scalar_t(0));
          continue;
        }
        // input (ih, iw) = (oh*sh - pad_top + tap_h, ow*sw - pad_left + tap_w); base is iw's offset at ow = 0
        const int64_t base = (oh * sh - w.pad[0] + tap_h) * W - w.pad[1] + tap_w;
        std::fill(d, d + cols.lo, scalar_t(0));
        if (sw == 1) {
          std::copy(plane + base + cols.lo, plane + base + cols.hi, d + cols.lo);
        } else {
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) {
            d[ow] = plane[base + ow * sw];
          }
        }
        std::fill(d + cols.hi, d + OW, scalar_t(0));
      }
    }
  });
}

// The adjoint of im2col: adds every row of col back onto the input positions it was read from.
// Channels are independent, so they run in parallel.
template <typename scalar_t>
void col2im(const scalar_t* col, int64_t ld, scalar_t* gx, int64_t channels, const Window2d& w, int64_t oh0,
            int64_t oh1) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1], H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t sh = w.stride[0], sw = w.stride[1];
  at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      scalar_t* plane = gx + c * H * W;
      for (int64_t i = 0; i < KH; ++i) {
        const int64_t tap_h = i * w.dilation[0];
        const Range rows = valid_outputs(H, w.pad[0], tap_h, sh, OH);
        for (int64_t j = 0; j < KW; ++j) {
          const int64_t tap_w = j * w.dilation[1];
          const Range cols = valid_outputs(W, w.pad[1], tap_w, sw, OW);
          const scalar_t* src = col + ((c * KH + i) * KW + j) * ld;
          for (int64_t oh = std::max(oh0, rows.lo); oh < std::min(oh1, rows.hi); ++oh) {
            const int64_t base = (oh * sh - w.pad[0] + tap_h) * W - w.pad[1] + tap_w;
            const scalar_t* s = src + (oh - oh0) * OW;
            for (int64_t ow = cols.lo; ow < cols.hi; ++ow) {
              plane[base + ow * sw] += s[ow];
            }
          }
        }
      }
    }
  });
}

bool is_pointwise(const Window2d& w) {
  return w.kernel[0] == 1 && w.kernel[1] == 1 && w.stride[0] == 1 && w.stride[1] == 1 && w.pad[0] == 0 &&
         w.pad[1] == 0 && w.pad_end[0] == 0 && w.pad_end[1] == 0;
}

// Wraps raw memory as a matrix (no copy) with `like`'s dtype.
at::Tensor as_matrix(const at::Tensor& like, const void* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<void*>(data), {rows, cols}, like.options());
}

// How one block maps onto a tensor with `channels` planes of L = OH*OW pixels per image (the output or
// grad_output): each (image, channel) owns one contiguous segment of `seg` pixels.
struct BlockView {
  int64_t images, seg, cols, first_pixel;
  bool in_place;  // one whole image: the block's matrix is the tensor itself

  BlockView(const Block& b, const Gemm& g, int64_t OW)
      : images(b.n1 - b.n0),
        seg((b.oh1 - b.oh0) * OW),
        cols((b.n1 - b.n0) * (b.oh1 - b.oh0) * OW),
        first_pixel(b.oh0 * OW),
        in_place(b.n1 - b.n0 == 1 && (b.oh1 - b.oh0) * OW == g.L) {}
};

// The Og x cols slice of an NCHW tensor (channels [c0, c0 + Og) of the block), copied into `buf`, or the
// tensor's own memory when the block is one whole image.
template <typename scalar_t>
const scalar_t* gather_block(const scalar_t* t, scalar_t* buf, const Block& b, const BlockView& v, int64_t channels,
                             int64_t c0, int64_t Og, int64_t L) {
  if (v.in_place) {
    return t + (b.n0 * channels + c0) * L;
  }
  for (int64_t o = 0; o < Og; ++o) {
    for (int64_t i = 0; i < v.images; ++i) {
      const scalar_t* src = t + ((b.n0 + i) * channels + c0 + o) * L + v.first_pixel;
      std::copy(src, src + v.seg, buf + o * v.cols + i * v.seg);
    }
  }
  return buf;
}

template <typename scalar_t>
void conv2d_forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                         const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1], OH = p.win.out[0], OW = p.win.out[1];
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  const int64_t max_cols = g.max_cols(OW);

  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = at::empty({g.K * max_cols}, x.options());
    at::Tensor tmp = at::empty({g.Og * max_cols}, x.options());
    for_each_block(g, n0, n1, OH, [&](const Block& b) {
      const BlockView v(b, g, OW);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const int64_t c0 = grp * g.Cg, o0 = grp * g.Og;
        at::Tensor cols;
        if (pointwise && v.in_place) {
          cols = as_matrix(x, x_data + (b.n0 * p.in_channels + c0) * in_plane, g.K, v.cols);
        } else {
          scalar_t* col_data = col.mutable_data_ptr<scalar_t>();
          for (int64_t i = 0; i < v.images; ++i) {
            const scalar_t* xg = x_data + ((b.n0 + i) * p.in_channels + c0) * in_plane;
            im2col(xg, col_data + i * v.seg, v.cols, g.Cg, p.win, b.oh0, b.oh1);
          }
          cols = as_matrix(x, col_data, g.K, v.cols);
        }
        scalar_t* res = v.in_place ? out_data + (b.n0 * p.out_channels + o0) * g.L : tmp.mutable_data_ptr<scalar_t>();
        at::Tensor res_m = as_matrix(out, res, g.Og, v.cols);
        at::mm_out(res_m, w[grp], cols);
        for (int64_t o = 0; o < g.Og; ++o) {
          const scalar_t bo = b_data ? b_data[o0 + o] : scalar_t(0);
          for (int64_t i = 0; i < v.images; ++i) {
            const scalar_t* src = res + o * v.cols + i * v.seg;
            scalar_t* dst = v.in_place ? const_cast<scalar_t*>(src)
                                       : out_data + ((b.n0 + i) * p.out_channels + o0 + o) * g.L + v.first_pixel;
            for (int64_t l = 0; l < v.seg; ++l) {
              dst[l] = src[l] + bo;
            }
          }
        }
      }
    });
  });
}

template <typename scalar_t>
at::Tensor conv2d_grad_input_impl(const at::Tensor& go, const at::Tensor& weight, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1], OH = p.win.out[0], OW = p.win.out[1];
  at::Tensor gx = at::zeros({p.batch, p.in_channels, p.win.in[0], p.win.in[1]}, go.options());
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gx_data = gx.mutable_data_ptr<scalar_t>();
  const int64_t max_cols = g.max_cols(OW);

  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = at::empty({g.K * max_cols}, go.options());
    at::Tensor buf = at::empty({g.Og * max_cols}, go.options());
    for_each_block(g, n0, n1, OH, [&](const Block& b) {
      const BlockView v(b, g, OW);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const int64_t c0 = grp * g.Cg, o0 = grp * g.Og;
        const scalar_t* go_g = gather_block(go_data, buf.mutable_data_ptr<scalar_t>(), b, v, p.out_channels, o0, g.Og, g.L);
        const at::Tensor go_m = as_matrix(go, go_g, g.Og, v.cols);
        scalar_t* gx_first = gx_data + (b.n0 * p.in_channels + c0) * in_plane;
        if (pointwise && v.in_place) {
          at::Tensor gx_m = as_matrix(gx, gx_first, g.K, v.cols);
          at::mm_out(gx_m, w[grp].t(), go_m);
          continue;
        }
        at::Tensor col_m = as_matrix(go, col.mutable_data_ptr<scalar_t>(), g.K, v.cols);
        at::mm_out(col_m, w[grp].t(), go_m);
        for (int64_t i = 0; i < v.images; ++i) {
          col2im(col_m.const_data_ptr<scalar_t>() + i * v.seg, v.cols, gx_first + i * p.in_channels * in_plane, g.Cg,
                 p.win, b.oh0, b.oh1);
        }
      }
    });
  });
  return gx;
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_impl(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1], OH = p.win.out[0], OW = p.win.out[1];
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const int64_t max_cols = g.max_cols(OW);

  // One partial sum per batch slice, merged in slice order below.
  const int64_t slices = batch_slice_count(p.batch);
  at::Tensor partial = at::zeros({slices, p.groups, g.Og, g.K}, go.options());
  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = at::empty({g.K * max_cols}, x.options());
    at::Tensor buf = at::empty({g.Og * max_cols}, go.options());
    at::Tensor acc = partial[batch_slice_of(n0, p.batch)];
    for_each_block(g, n0, n1, OH, [&](const Block& b) {
      const BlockView v(b, g, OW);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const int64_t c0 = grp * g.Cg, o0 = grp * g.Og;
        const scalar_t* go_g = gather_block(go_data, buf.mutable_data_ptr<scalar_t>(), b, v, p.out_channels, o0, g.Og, g.L);
        at::Tensor cols;
        if (pointwise && v.in_place) {
          cols = as_matrix(x, x_data + (b.n0 * p.in_channels + c0) * in_plane, g.K, v.cols);
        } else {
          scalar_t* col_data = col.mutable_data_ptr<scalar_t>();
          for (int64_t i = 0; i < v.images; ++i) {
            im2col(x_data + ((b.n0 + i) * p.in_channels + c0) * in_plane, col_data + i * v.seg, v.cols, g.Cg, p.win,
                   b.oh0, b.oh1);
          }
          cols = as_matrix(x, col_data, g.K, v.cols);
        }
        at::Tensor acc_g = acc[grp];
        acc_g.addmm_(as_matrix(go, go_g, g.Og, v.cols), cols.t());
      }
    });
  });
  at::Tensor gw = partial[0];
  for (int64_t s = 1; s < slices; ++s) {
    gw.add_(partial[s]);
  }
  return gw.view({p.out_channels, g.Cg, p.win.kernel[0], p.win.kernel[1]});
}

// Sum of grad_output over batch and pixels, per output channel, accumulated in double/float.
template <typename scalar_t>
at::Tensor conv2d_grad_bias_impl(const at::Tensor& go, const Conv2dParams& p) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
  const int64_t L = p.win.out[0] * p.win.out[1];
  at::Tensor gb = at::empty({p.out_channels}, go.options());
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gb_data = gb.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, p.out_channels, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      acc_t sum = 0;
      for (int64_t n = 0; n < p.batch; ++n) {
        const scalar_t* row = go_data + (n * p.out_channels + o) * L;  // (n, o) is one output plane
        for (int64_t l = 0; l < L; ++l) {
          sum += row[l];
        }
      }
      gb_data[o] = static_cast<scalar_t>(sum);
    }
  });
  return gb;
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = make_conv2d_params(input, weight, bias, stride, padding, dilation, groups);
  check_cpu_floating("conv2d_forward_cpu", input);
  const at::Tensor x = to_compute(input), w = to_compute(weight);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(to_compute(*bias)) : std::nullopt;
  at::Tensor out = at::empty({p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, x.options());
  if (out.numel() == 0) {
    return out.to(input.scalar_type());
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_forward_cpu", [&] {
    conv2d_forward_impl<scalar_t>(x, w, b ? &*b : nullptr, out, p);
  });
  return out.to(input.scalar_type());
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_conv2d_params(input, weight, std::nullopt, stride, padding, dilation, groups);
  check_cpu_floating("conv2d_backward_cpu", input);
  check_grad_output("lenet_ext.conv2d_backward", grad_output,
                    {p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, input);
  const at::Tensor go = to_compute(grad_output);
  std::optional<at::Tensor> gx, gw, gb;
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "conv2d_backward_cpu", [&] {
    if (output_mask[0]) {
      gx = conv2d_grad_input_impl<scalar_t>(go, to_compute(weight), p).to(input.scalar_type());
    }
    if (output_mask[1]) {
      gw = conv2d_grad_weight_impl<scalar_t>(go, to_compute(input), p).to(input.scalar_type());
    }
    if (output_mask[2]) {
      gb = conv2d_grad_bias_impl<scalar_t>(go, p).to(input.scalar_type());
    }
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CPU, m) {
  m.impl("conv2d_forward", &conv2d_forward_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace lenet_ext
