// conv2d on the CPU by im2col + matrix product: the general algorithm, for any stride, dilation, padding
// and groups (forward, input gradient and weight gradient).
//
// im2col unrolls a group of input channels into a matrix `col` with one row per kernel tap (c, i, j)
// and one column per output pixel: the input value under that tap, or 0 where the tap falls in the
// padding. Then, per block of output pixels and per group g,
//   forward        out[g]   = W[g] @ col (+ bias)
//   grad input     gx[g]   += col2im(W[g]^T @ gout[g])     (col2im scatters rows back, summing)
//   grad weight    gW[g]   += gout[g] @ col^T
// Padding, stride and dilation live entirely in im2col/col2im: each row splits into zero borders and
// an interior read without branches (valid_outputs in shape.h gives the interior).
//
// Blocks: a block is several whole images (small images, e.g. LeNet's 28x28) or a band of output rows
//   of one image (large images), sized so that its `col` stays near 1 MiB, in the L2 cache: one block
//   then feeds one reasonably shaped matrix product instead of many tiny ones, and the unrolled columns
//   never leave the cache. Output pixels sit in the block's matrices `pitch` columns per output row.
//
// Wide layout (stride 1): the input is zero-padded once per image, and pitch is the padded width Wp.
//   Then tap (c, i, j) of output pixel (oh, ow) reads padded[c][(oh + i*dh) * Wp + ow + j*dw]: for a
//   whole band of rows, one contiguous run of the padded plane. Every im2col row becomes one copy with
//   no border logic, at the price of Wp - OW extra columns per output row, which are computed and
//   dropped (forward) or zeroed (backward, so they contribute nothing).
//   Strided convolutions use the general im2col with pitch OW and explicit borders.
// A 1x1, stride-1, unpadded convolution is a plain matrix product per image: no unrolling at all.
//
// Threads: with at least as many images as threads, the batch is cut into fixed slices (about four per
// thread) that the threads take from a queue, running single-threaded products; otherwise images run
// one by one and im2col/col2im and the matrix product use the threads. The weight gradient is reduced
// per batch slice, then the slices are summed in a fixed order, so results are bitwise reproducible for
// a given thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/conv2d_common.h"
#include "cpu/memory.h"

namespace lenet_ext {
namespace {

// A block's unrolled columns: 1 MiB, about half of a core's L2 on the machines we measured, and at least
// 256 columns, below which a matrix product runs well under its speed.
constexpr int64_t kBlockBytes = int64_t{1} << 20;
constexpr int64_t kMinColumns = 256;

bool is_pointwise(const Window2d& w) {
  return w.kernel[0] == 1 && w.kernel[1] == 1 && w.stride[0] == 1 && w.stride[1] == 1 && w.pad[0] == 0 &&
         w.pad[1] == 0 && w.pad_end[0] == 0 && w.pad_end[1] == 0;
}

// Output pixels [oh0, oh1) x [0, OW) of images [n0, n1).
struct Block {
  int64_t n0, n1, oh0, oh1;
  bool first_band() const { return oh0 == 0; }
};

// Geometry of the matrix products and of the blocks.
struct Gemm : ConvDims {
  bool wide;             // stride 1: im2col rows are contiguous runs of the padded input
  bool padded;           // wide and some padding: the input is copied into a zero-padded buffer
  int64_t pitch;         // block matrix columns per output row: Wp (wide) or OW
  int64_t images_per_block, rows_per_block;

  Gemm(const Conv2dParams& p, int64_t elem_size) : ConvDims(p) {
    const Window2d& w = p.win;
    wide = is_stride1(w);
    padded = wide && (w.pad[0] + w.pad[1] + w.pad_end[0] + w.pad_end[1]) > 0;
    pitch = wide ? Wp : OW;
    // A block keeps its unrolled columns near kBlockBytes, but never below kMinColumns: a deep
    // convolution (512 channels x 3x3 has 4608 taps) would otherwise cut its blocks so thin that the
    // matrix product, not the copy, became the cost.
    const int64_t target_cols =
        std::max<int64_t>(kMinColumns, kBlockBytes / (std::max<int64_t>(K, 1) * elem_size));
    const int64_t image_cols = std::max<int64_t>(OH * pitch, 1);
    if (is_pointwise(w)) {
      // Each image is its own matrix, read and written in place: no unrolling, no bands.
      images_per_block = 1;
      rows_per_block = OH;
    } else if (image_cols <= target_cols) {
      images_per_block = target_cols / image_cols;
      rows_per_block = OH;
    } else {
      images_per_block = 1;
      rows_per_block = std::clamp<int64_t>(target_cols / pitch, 1, OH);
    }
  }

  int64_t max_cols() const { return images_per_block * rows_per_block * pitch; }
  int64_t padded_image() const { return Cg * Hp * Wp; }  // one group of one image in the padded buffer
};

// Calls f(block) for every block of the images [n0, n1), in order; the bands of one image are
// consecutive, first band first.
template <typename F>
void for_each_block(const Gemm& g, int64_t n0, int64_t n1, const F& f) {
  for (int64_t n = n0; n < n1; n += g.images_per_block) {
    if (g.rows_per_block == g.OH) {
      f(Block{n, std::min(n1, n + g.images_per_block), 0, g.OH});
      continue;
    }
    for (int64_t oh = 0; oh < g.OH; oh += g.rows_per_block) {
      f(Block{n, n + 1, oh, std::min(g.OH, oh + g.rows_per_block)});
    }
  }
}

// Where a block's columns are: image i of the block starts at column i * seg, output row oh at
// (oh - oh0) * pitch within it.
struct BlockView {
  int64_t images, rows, seg, cols;
  bool in_place;  // one whole image with pitch OW: the block's matrix is the NCHW tensor itself

  BlockView(const Block& b, const Gemm& g)
      : images(b.n1 - b.n0),
        rows(b.oh1 - b.oh0),
        seg((b.oh1 - b.oh0) * g.pitch),
        cols((b.n1 - b.n0) * (b.oh1 - b.oh0) * g.pitch),
        in_place(b.n1 - b.n0 == 1 && b.oh1 - b.oh0 == g.OH && g.pitch == g.OW) {}
};

// General im2col (any stride): row (c, i, j) of col starts at col + r * ld; output pixel (oh, ow) of the
// band [oh0, oh1) is column (oh - oh0) * OW + ow. Taps in the padding read 0.
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
        for (int64_t ow = cols.lo; ow < cols.hi; ++ow) {
          d[ow] = plane[base + ow * sw];
        }
        std::fill(d + cols.hi, d + OW, scalar_t(0));
      }
    }
  });
}

// Wide im2col (stride 1) from a padded Hp x Wp image: row (c, i, j) is the contiguous run of the padded
// plane that starts at tap (i, j) of output row oh0. With `zero_extra`, the Wp - OW columns of each
// output row that belong to no output are set to 0 (needed when col is reduced against grad_output).
template <typename scalar_t>
void im2col_wide(const scalar_t* xp, scalar_t* col, int64_t ld, int64_t channels, const Window2d& w,
                 const Gemm& g, int64_t oh0, int64_t oh1, bool zero_extra) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1];
  const int64_t run = (oh1 - oh0 - 1) * g.Wp + g.OW;  // the last output row needs only OW columns
  at::parallel_for(0, channels * KH * KW, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
      const scalar_t* src = xp + (c * g.Hp + oh0 + i * w.dilation[0]) * g.Wp + j * w.dilation[1];
      scalar_t* d = col + r * ld;
      std::copy(src, src + run, d);
      std::fill(d + run, d + (oh1 - oh0) * g.Wp, scalar_t(0));
      if (zero_extra) {
        for (int64_t oh = oh0; oh + 1 < oh1; ++oh) {
          std::fill(d + (oh - oh0) * g.Wp + g.OW, d + (oh - oh0 + 1) * g.Wp, scalar_t(0));
        }
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

// The adjoint of im2col_wide, into a padded Hp x Wp gradient buffer: only the OW real columns of each
// output row are added, so nothing from the extra columns can leak into real positions.
template <typename scalar_t>
void col2im_wide(const scalar_t* col, int64_t ld, scalar_t* gxp, int64_t channels, const Window2d& w,
                 const Gemm& g, int64_t oh0, int64_t oh1) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1];
  at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = 0; i < KH; ++i) {
        for (int64_t j = 0; j < KW; ++j) {
          const scalar_t* src = col + ((c * KH + i) * KW + j) * ld;
          scalar_t* dst = gxp + (c * g.Hp + oh0 + i * w.dilation[0]) * g.Wp + j * w.dilation[1];
          for (int64_t oh = 0; oh < oh1 - oh0; ++oh) {
            const scalar_t* s = src + oh * g.Wp;
            scalar_t* d = dst + oh * g.Wp;
            for (int64_t ow = 0; ow < g.OW; ++ow) {
              d[ow] += s[ow];
            }
          }
        }
      }
    }
  });
}


// Wraps raw memory as a matrix (no copy) with `like`'s dtype.
at::Tensor as_matrix(const at::Tensor& like, const void* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<void*>(data), {rows, cols}, like.options());
}

// Per-thread buffers, and the unrolled input of one group of a block.
template <typename scalar_t>
struct Workspace {
  const Conv2dParams& p;
  const Gemm& g;
  at::Tensor col, mat, padded;  // K x cols, Og x cols, the block's images zero-padded (wide layout)

  Workspace(const Conv2dParams& p_, const Gemm& g_, const at::TensorOptions& opt) : p(p_), g(g_) {
    col = cpu::empty_fresh({g.K * g.max_cols()}, opt);
    mat = cpu::empty_fresh({g.Og * g.max_cols()}, opt);
    if (g.padded) {
      padded = cpu::empty_fresh({g.images_per_block * p.groups * g.padded_image()}, opt);
    }
  }

  // Pads the block's images once, at their first band (wide layout with padding only).
  void pad_block(const scalar_t* x, const Block& b) {
    if (!g.padded || !b.first_band()) {
      return;
    }
    const int64_t in_plane = p.win.in[0] * p.win.in[1];
    for (int64_t n = b.n0; n < b.n1; ++n) {
      scalar_t* dst = padded.mutable_data_ptr<scalar_t>() + (n - b.n0) * p.groups * g.padded_image();
      pad_input(x + n * p.in_channels * in_plane, dst, p.in_channels, p.win, g.Hp, g.Wp);
    }
  }

  // The (padded) input of image n, group grp, as the wide layout reads it.
  const scalar_t* wide_source(const scalar_t* x, const Block& b, int64_t n, int64_t grp) const {
    if (g.padded) {
      return padded.const_data_ptr<scalar_t>() + ((n - b.n0) * p.groups + grp) * g.padded_image();
    }
    return x + (n * p.in_channels + grp * g.Cg) * p.win.in[0] * p.win.in[1];
  }

  // The K x cols matrix of group grp's taps over the block.
  at::Tensor unroll(const at::Tensor& like, const scalar_t* x, const Block& b, const BlockView& v, int64_t grp,
                    bool zero_extra) {
    const int64_t in_plane = p.win.in[0] * p.win.in[1];
    if (is_pointwise(p.win) && v.in_place) {
      return as_matrix(like, x + (b.n0 * p.in_channels + grp * g.Cg) * in_plane, g.K, v.cols);
    }
    scalar_t* col_data = col.mutable_data_ptr<scalar_t>();
    for (int64_t n = b.n0; n < b.n1; ++n) {
      scalar_t* dst = col_data + (n - b.n0) * v.seg;
      if (g.wide) {
        im2col_wide(wide_source(x, b, n, grp), dst, v.cols, g.Cg, p.win, g, b.oh0, b.oh1, zero_extra);
      } else {
        im2col(x + (n * p.in_channels + grp * g.Cg) * in_plane, dst, v.cols, g.Cg, p.win, b.oh0, b.oh1);
      }
    }
    return as_matrix(like, col_data, g.K, v.cols);
  }

  // Channels [c0, c0 + Og) of an NCHW tensor with `channels` planes per image, over the block, as an
  // Og x cols matrix (extra wide-layout columns zeroed). In place when the block allows it.
  at::Tensor gather(const at::Tensor& like, const scalar_t* t, const Block& b, const BlockView& v, int64_t channels,
                    int64_t c0) {
    if (v.in_place) {
      return as_matrix(like, t + (b.n0 * channels + c0) * g.L, g.Og, v.cols);
    }
    scalar_t* m = mat.mutable_data_ptr<scalar_t>();
    for (int64_t o = 0; o < g.Og; ++o) {
      for (int64_t n = b.n0; n < b.n1; ++n) {
        for (int64_t oh = b.oh0; oh < b.oh1; ++oh) {
          const scalar_t* src = t + ((n * channels + c0 + o) * g.OH + oh) * g.OW;
          scalar_t* dst = m + o * v.cols + (n - b.n0) * v.seg + (oh - b.oh0) * g.pitch;
          std::copy(src, src + g.OW, dst);
          std::fill(dst + g.OW, dst + g.pitch, scalar_t(0));
        }
      }
    }
    return as_matrix(like, m, g.Og, v.cols);
  }
};


}  // namespace

template <typename scalar_t>
void conv2d_forward_im2col(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                         const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;

  for_each_batch_slice(p.batch, BatchSlices(p.batch, 0, g.images_per_block), [&](int64_t, int64_t n0, int64_t n1) {
    Workspace<scalar_t> ws(p, g, x.options());
    for_each_block(g, n0, n1, [&](const Block& b) {
      const BlockView v(b, g);
      ws.pad_block(x_data, b);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const int64_t o0 = grp * g.Og;
        const at::Tensor cols = ws.unroll(x, x_data, b, v, grp, /*zero_extra=*/false);
        scalar_t* res = v.in_place ? out_data + (b.n0 * p.out_channels + o0) * g.L
                                   : ws.mat.template mutable_data_ptr<scalar_t>();
        at::Tensor res_m = as_matrix(out, res, g.Og, v.cols);
        at::mm_out(res_m, w[grp], cols);
        // Scatter the real columns to NCHW, adding the bias on the way.
        for (int64_t o = 0; o < g.Og; ++o) {
          const scalar_t bo = b_data ? b_data[o0 + o] : scalar_t(0);
          for (int64_t n = b.n0; n < b.n1; ++n) {
            for (int64_t oh = b.oh0; oh < b.oh1; ++oh) {
              const scalar_t* src = res + o * v.cols + (n - b.n0) * v.seg + (oh - b.oh0) * g.pitch;
              scalar_t* dst = out_data + ((n * p.out_channels + o0 + o) * g.OH + oh) * g.OW;
              for (int64_t ow = 0; ow < g.OW; ++ow) {
                dst[ow] = src[ow] + bo;
              }
            }
          }
        }
      }
    });
  });
}


template <typename scalar_t>
at::Tensor conv2d_grad_input_im2col(const at::Tensor& go, const at::Tensor& weight, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const int64_t in_plane = p.win.in[0] * p.win.in[1];
  at::Tensor gx = cpu::zeros_fresh({p.batch, p.in_channels, p.win.in[0], p.win.in[1]}, go.options());
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gx_data = gx.mutable_data_ptr<scalar_t>();

  for_each_batch_slice(p.batch, BatchSlices(p.batch, 0, g.images_per_block), [&](int64_t, int64_t n0, int64_t n1) {
    Workspace<scalar_t> ws(p, g, go.options());  // ws.padded holds the padded input gradient
    for_each_block(g, n0, n1, [&](const Block& b) {
      const BlockView v(b, g);
      if (g.padded && b.first_band()) {
        ws.padded.zero_();
      }
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const at::Tensor go_m = ws.gather(go, go_data, b, v, p.out_channels, grp * g.Og);
        scalar_t* gx_first = gx_data + (b.n0 * p.in_channels + grp * g.Cg) * in_plane;
        if (is_pointwise(p.win) && v.in_place) {
          at::Tensor gx_m = as_matrix(gx, gx_first, g.K, v.cols);
          at::mm_out(gx_m, w[grp].t(), go_m);
          continue;
        }
        at::Tensor col_m = as_matrix(go, ws.col.template mutable_data_ptr<scalar_t>(), g.K, v.cols);
        at::mm_out(col_m, w[grp].t(), go_m);
        for (int64_t n = b.n0; n < b.n1; ++n) {
          const scalar_t* src = col_m.const_data_ptr<scalar_t>() + (n - b.n0) * v.seg;
          if (g.wide) {
            scalar_t* dst = const_cast<scalar_t*>(ws.wide_source(gx_data, b, n, grp));
            col2im_wide(src, v.cols, dst, g.Cg, p.win, g, b.oh0, b.oh1);
          } else {
            col2im(src, v.cols, gx_data + (n * p.in_channels + grp * g.Cg) * in_plane, g.Cg, p.win, b.oh0, b.oh1);
          }
        }
      }
      if (g.padded && b.oh1 == g.OH) {  // the images are complete: copy the padded gradients' interiors
        for (int64_t n = b.n0; n < b.n1; ++n) {
          const scalar_t* gxp = ws.wide_source(gx_data, b, n, 0);
          for (int64_t c = 0; c < p.in_channels; ++c) {
            for (int64_t h = 0; h < p.win.in[0]; ++h) {
              const scalar_t* src = gxp + (c * g.Hp + h + p.win.pad[0]) * g.Wp + p.win.pad[1];
              std::copy(src, src + p.win.in[1], gx_data + ((n * p.in_channels + c) * p.win.in[0] + h) * p.win.in[1]);
            }
          }
        }
      }
    });
  });
  return gx;
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_im2col(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();

  // One partial sum per batch slice, merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * g.Og * g.K * int64_t{sizeof(scalar_t)}, g.images_per_block);
  at::Tensor partial = at::zeros({slices.count, p.groups, g.Og, g.K}, go.options());
  for_each_batch_slice(p.batch, slices, [&](int64_t slice, int64_t n0, int64_t n1) {
    Workspace<scalar_t> ws(p, g, x.options());
    at::Tensor acc = partial[slice];
    for_each_block(g, n0, n1, [&](const Block& b) {
      const BlockView v(b, g);
      ws.pad_block(x_data, b);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const at::Tensor go_m = ws.gather(go, go_data, b, v, p.out_channels, grp * g.Og);
        const at::Tensor cols = ws.unroll(x, x_data, b, v, grp, /*zero_extra=*/true);
        at::Tensor acc_g = acc[grp];
        acc_g.addmm_(go_m, cols.t());
      }
    });
  });
  return sum_slices(partial).view({p.out_channels, g.Cg, p.win.kernel[0], p.win.kernel[1]});
}


#define LENET_EXT_INSTANTIATE(T)                                                                          \
  template void conv2d_forward_im2col<T>(const at::Tensor&, const at::Tensor&, const at::Tensor*, at::Tensor&, \
                                         const Conv2dParams&);                                            \
  template at::Tensor conv2d_grad_input_im2col<T>(const at::Tensor&, const at::Tensor&, const Conv2dParams&); \
  template at::Tensor conv2d_grad_weight_im2col<T>(const at::Tensor&, const at::Tensor&, const Conv2dParams&);
LENET_EXT_INSTANTIATE(float)
LENET_EXT_INSTANTIATE(double)
#undef LENET_EXT_INSTANTIATE

}  // namespace lenet_ext
