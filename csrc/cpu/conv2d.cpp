// conv2d on the CPU: forward, and one backward that computes any subset of (input, weight, bias)
// gradients.
//
// im2col + matrix product, over blocks of output columns (the general algorithm).
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
//   feeds one reasonably shaped matrix product instead of many tiny ones. Output pixels sit in the
//   block's matrices `pitch` columns per output row.
//
// Wide layout (stride 1): the input is zero-padded once per image, and pitch is the padded width Wp.
//   Then tap (c, i, j) of output pixel (oh, ow) reads padded[c][(oh + i*dh) * Wp + ow + j*dw]: for a
//   whole band of rows, one contiguous run of the padded plane. Every im2col row becomes one copy with
//   no border logic, at the price of Wp - OW extra columns per output row, which are computed and
//   dropped (forward) or zeroed (backward, so they contribute nothing).
//   Strided convolutions use the general im2col with pitch OW and explicit borders.
//   A 1x1, stride-1, unpadded convolution over one whole image needs no unrolling at all.
//
// Direct kernels (no unrolled copy of the input): register tiles accumulate every tap into a block of
// outputs held in vector registers.
//   pixel tiles   stride 1: OB output channels x V vectors of consecutive output positions, in the wide
//                 layout or, when that would drop too many columns, a compact one (KW shifted copies
//                 of the input). Several channel blocks share a tile's input (64 -> 64 3x3, LeNet).
//   channel tiles strided, 4 to 32 output channels per group: up to 12 pixels of a row x one vector of
//                 channels;
//   weight grad   tiles of taps x a vector of output channels, summed over the pixels; for stride 1 and
//                 at most 3 output channels per group (depthwise), taps x vectors of positions instead;
//   input grad    for stride 1, a convolution of the padded grad_output with the flipped, transposed
//                 weight, which then runs through the direct forward.
//   choose_forward_kernel and choose_weight_grad below are the heuristics; lenet_ext.backends.conv_algorithm
//   overrides them.
//
// Layout: kernels read contiguous NCHW (inputs in any other layout are copied once) and write
// contiguous NCHW. bfloat16 is computed in float32 and rounded once at the end.
//
// Threads: with at least as many images as threads, the batch is cut into fixed slices (about four per
// thread) that the threads take from a queue, running single-threaded products; otherwise images run
// one by one and im2col/col2im and the matrix product use the threads. The direct forwards queue single
// (image, group) items. The weight gradient is reduced per batch slice, then the slices are summed in a
// fixed order, so results are bitwise reproducible for a given thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/common.h"
#include "shape.h"

namespace lenet_ext {
namespace {

constexpr int64_t kBlockBytes = int64_t{1} << 20;

// lenet_ext.backends.conv_algorithm("auto" | "direct" | "im2col") sets this through the
// lenet_ext::_set_conv_algorithm operator.
constexpr int64_t kAlgorithmAuto = 0, kAlgorithmDirect = 1, kAlgorithmIm2col = 2;
std::atomic<int64_t> g_conv_algorithm{kAlgorithmAuto};

int64_t conv_algorithm_override() {
  return g_conv_algorithm.load(std::memory_order_relaxed);
}

// -1 only reads the setting.
int64_t set_conv_algorithm(int64_t algorithm) {
  if (algorithm == -1) {
    return conv_algorithm_override();
  }
  TORCH_CHECK(algorithm >= kAlgorithmAuto && algorithm <= kAlgorithmIm2col,
              "lenet_ext: unknown conv algorithm code ", algorithm);
  return g_conv_algorithm.exchange(algorithm);
}

// Output pixels [oh0, oh1) x [0, OW) of images [n0, n1).
struct Block {
  int64_t n0, n1, oh0, oh1;
  bool first_band() const { return oh0 == 0; }
};

// Geometry of the matrix products and of the blocks.
struct Gemm {
  int64_t Cg, Og, K, L;  // channels per group in and out, K = Cg*KH*KW taps, L = OH*OW pixels
  int64_t OH, OW;
  bool wide;             // stride 1: im2col rows are contiguous runs of the padded input
  bool padded;           // wide and some padding: the input is copied into a zero-padded buffer
  int64_t Hp, Wp;        // the (padded) input plane the wide layout reads
  int64_t pitch;         // block matrix columns per output row: Wp (wide) or OW
  int64_t images_per_block, rows_per_block;

  Gemm(const Conv2dParams& p, int64_t elem_size) {
    const Window2d& w = p.win;
    Cg = p.in_channels / p.groups;
    Og = p.out_channels / p.groups;
    K = Cg * w.kernel[0] * w.kernel[1];
    OH = w.out[0];
    OW = w.out[1];
    L = OH * OW;
    wide = w.stride[0] == 1 && w.stride[1] == 1;
    padded = wide && (w.pad[0] + w.pad[1] + w.pad_end[0] + w.pad_end[1]) > 0;
    Hp = w.in[0] + w.pad[0] + w.pad_end[0];
    Wp = w.in[1] + w.pad[1] + w.pad_end[1];
    pitch = wide ? Wp : OW;
    const int64_t target_cols = std::max<int64_t>(1, kBlockBytes / (std::max<int64_t>(K, 1) * elem_size));
    const int64_t image_cols = std::max<int64_t>(OH * pitch, 1);
    if (image_cols <= target_cols) {
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

// Copies `channels` planes of one image into the middle of Hp x Wp planes, and zeroes their borders.
template <typename scalar_t>
void pad_input(const scalar_t* x, scalar_t* xp, int64_t channels, const Window2d& w, int64_t Hp, int64_t Wp) {
  const int64_t H = w.in[0], W = w.in[1], top = w.pad[0], left = w.pad[1], right = Wp - left - W;
  for (int64_t c = 0; c < channels; ++c) {
    scalar_t* plane = xp + c * Hp * Wp;
    // the top rows and the first row's left border (with no rows, the plane may end first)
    std::fill(plane, plane + std::min(top * Wp + left, Hp * Wp), scalar_t(0));
    for (int64_t h = 0; h < H; ++h) {
      scalar_t* row = plane + (top + h) * Wp + left;
      std::copy(x + (c * H + h) * W, x + (c * H + h + 1) * W, row);
      // this row's right border and the next row's left border (or the bottom rows after the last)
      std::fill(row + W, row + W + right + (h + 1 < H ? left : 0), scalar_t(0));
    }
    std::fill(plane + (top + H) * Wp, plane + Hp * Wp, scalar_t(0));
  }
}

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

bool is_pointwise(const Window2d& w) {
  return w.kernel[0] == 1 && w.kernel[1] == 1 && w.stride[0] == 1 && w.stride[1] == 1 && w.pad[0] == 0 &&
         w.pad[1] == 0 && w.pad_end[0] == 0 && w.pad_end[1] == 0;
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
    col = at::empty({g.K * g.max_cols()}, opt);
    mat = at::empty({g.Og * g.max_cols()}, opt);
    if (g.padded) {
      padded = at::empty({g.images_per_block * p.groups * g.padded_image()}, opt);
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

template <typename scalar_t>
void conv2d_forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                         const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;

  for_each_batch_slice(p.batch, BatchSlices(p.batch), [&](int64_t, int64_t n0, int64_t n1) {
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

// ---------------------------------------------------------------------------------------------
// Channel tiles: the direct forward for strided convolutions with 4 to 32 output channels per group.
// No unrolled copy of the input: each register tile holds P consecutive output pixels of one row x OV
// output channels, and for every tap (c, i, j) adds one input value per pixel (a broadcast) times the
// OV weights of that tap (one vector load). The channel loop is what the compiler vectorises; the
// P x OV accumulators stay in registers. Any stride and dilation: pixel p of the tile reads the padded
// input at p * stride. Results go to a pixel-major buffer, then to NCHW with the bias.

// A GCC/Clang vector of N scalars (plain scalar arrays this large are not kept in registers). The
// attribute needs a concrete element type, hence the specialisations.
template <typename T, int N>
struct Vec;
template <int N>
struct Vec<float, N> {
  typedef float type __attribute__((vector_size(N * sizeof(float))));
};
template <int N>
struct Vec<double, N> {
  typedef double type __attribute__((vector_size(N * sizeof(double))));
};

template <int P, int OV, typename scalar_t>
void direct_tile(const scalar_t* src, int64_t sw, const int64_t* taps, int64_t K, const scalar_t* wt, int64_t ldw,
                 scalar_t* dst, int64_t ldd) {
  using vec_t = typename Vec<scalar_t, OV>::type;
  vec_t acc[P];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
    acc[p] = vec_t{};
  }
  for (int64_t t = 0; t < K; ++t) {
    const scalar_t* s = src + taps[t];
    vec_t wv;
    std::memcpy(&wv, wt + t * ldw, sizeof(vec_t));
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      acc[p] += s[p * sw] * wv;
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
    std::memcpy(dst + p * ldd, &acc[p], sizeof(vec_t));
  }
}

// A tile of exactly `pixels` (1 to 12) output pixels.
template <int OV, typename scalar_t, int... Ps>
void direct_tile_of(int64_t pixels, const scalar_t* src, int64_t sw, const int64_t* taps, int64_t K,
                    const scalar_t* wt, int64_t ldw, scalar_t* dst, int64_t ldd, std::integer_sequence<int, Ps...>) {
  ((pixels == Ps + 1 ? direct_tile<Ps + 1, OV>(src, sw, taps, K, wt, ldw, dst, ldd) : void()), ...);
}

// One output row, OV channels, cut into tiles of at most 12 pixels and nearly equal width: every tile
// then keeps enough independent accumulators in flight (a row of 14 as 7 + 7, not 12 + 2, whose
// 2-pixel tile would wait on its own latency for as long as the 12-pixel one computes).
template <int OV, typename scalar_t>
void direct_row(const scalar_t* src, int64_t sw, const int64_t* taps, int64_t K, const scalar_t* wt, int64_t ldw,
                scalar_t* dst, int64_t ldd, int64_t OW) {
  constexpr int kMaxTile = 12;
  const int64_t tiles = (OW + kMaxTile - 1) / kMaxTile;
  for (int64_t t = 0, ow = 0; t < tiles; ++t) {
    const int64_t width = OW / tiles + (t < OW % tiles ? 1 : 0);
    direct_tile_of<OV>(width, src + ow * sw, sw, taps, K, wt, ldw, dst + ow * ldd, ldd,
                       std::make_integer_sequence<int, kMaxTile>{});
    ow += width;
  }
}

// The per-slice partial sums ([slices][...]) added up in slice order, which keeps results reproducible.
at::Tensor sum_slices(const at::Tensor& partial) {
  at::Tensor sum = partial[0];
  for (int64_t s = 1; s < partial.size(0); ++s) {
    sum.add_(partial[s]);
  }
  return sum;
}

// The offset of each tap (c, i, j), in that order, from a window's origin in `channels` planes of Hp rows
// of `pitch` elements, where kernel column j adds j * j_step: in a padded image (pitch Wp) j_step is the
// column dilation; in the compact layout's shifted copies (pitch OW) it is one copy's size.
std::vector<int64_t> tap_offsets(const Window2d& win, int64_t channels, int64_t Hp, int64_t pitch, int64_t j_step) {
  const int64_t KH = win.kernel[0], KW = win.kernel[1];
  std::vector<int64_t> taps(channels * KH * KW);
  for (int64_t r = 0; r < channels * KH * KW; ++r) {
    const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
    taps[r] = (c * Hp + i * win.dilation[0]) * pitch + j * j_step;
  }
  return taps;
}

// Per group, the weights as K x width, tap-major (one row of output channels per tap), with zero columns
// past the group's Og channels: what the direct tiles load or broadcast per tap.
at::Tensor tap_major_weights(const at::Tensor& weight, const Conv2dParams& p, int64_t width) {
  const int64_t Og = p.out_channels / p.groups, K = weight.numel() / std::max<int64_t>(p.out_channels, 1);
  at::Tensor wt = at::zeros({p.groups, K, width}, weight.options());
  wt.narrow(2, 0, Og).copy_(weight.view({p.groups, Og, K}).transpose(1, 2));
  return wt;
}

template <int OV, typename scalar_t>
void conv2d_forward_direct(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                           const Conv2dParams& p) {
  const Window2d& win = p.win;
  const int64_t Cg = p.in_channels / p.groups, Og = p.out_channels / p.groups;
  const int64_t KH = win.kernel[0], KW = win.kernel[1], K = Cg * KH * KW;
  const int64_t OH = win.out[0], OW = win.out[1];
  const int64_t Hp = win.in[0] + win.pad[0] + win.pad_end[0], Wp = win.in[1] + win.pad[1] + win.pad_end[1];
  const int64_t og_pad = (Og + OV - 1) / OV * OV;

  const at::Tensor wt = tap_major_weights(weight, p, og_pad);
  const std::vector<int64_t> taps = tap_offsets(win, Cg, Hp, Wp, win.dilation[1]);
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* wt_data = wt.const_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const int64_t in_plane = win.in[0] * win.in[1], L = OH * OW;

  // (image, group) pairs are independent: no reduction, so any split across threads is deterministic.
  WorkQueue queue(p.batch * p.groups);
  run_workers(p.batch * p.groups, [&] {
    std::vector<scalar_t> src(Cg * Hp * Wp);
    std::vector<scalar_t> res(L * og_pad);  // pixel-major: res[l * og_pad + o]
    for (int64_t q; queue.pop(q);) {
      const int64_t n = q / p.groups, grp = q % p.groups;
      pad_input(x_data + (n * p.in_channels + grp * Cg) * in_plane, src.data(), Cg, win, Hp, Wp);
      for (int64_t o = 0; o < og_pad; o += OV) {
        for (int64_t oh = 0; oh < OH; ++oh) {
          direct_row<OV>(src.data() + oh * win.stride[0] * Wp, win.stride[1], taps.data(), K,
                         wt_data + grp * K * og_pad + o, og_pad, res.data() + oh * OW * og_pad + o, og_pad, OW);
        }
      }
      for (int64_t o = 0; o < Og; ++o) {
        const int64_t oc = grp * Og + o;
        const scalar_t bo = b_data ? b_data[oc] : scalar_t(0);
        scalar_t* dst = out_data + (n * p.out_channels + oc) * L;
        for (int64_t l = 0; l < L; ++l) {
          dst[l] = res[l * og_pad + o] + bo;
        }
      }
    }
  });
}

// Pixel-vectorised direct forward, for stride 1. A tile holds OB output channels x V vectors of
// consecutive output positions: per tap it loads V input vectors and broadcasts OB weights, so V * OB
// multiply-adds share V + OB loads. Across pixels a vector is always full, even when a group has few
// output channels. Wider groups take several channel blocks per pixel tile, which keeps the tile's input
// in L1 while each block's weights (contiguous, OB per tap) stream from L2.
//
// Positions follow one of two layouts of the source, both of which make every tap a contiguous run:
//   wide     the zero-padded image, `pitch` = Wp; output (oh, ow) is position oh * Wp + ow, and the
//            Wp - OW extra positions per row are computed and dropped (see the top of this file);
//   compact  KW copies of the padded image, copy j shifted left by j * dw and cut to OW columns;
//            `pitch` = OW, so positions are exactly the NCHW output plane and nothing is dropped. It
//            costs KW copies of the input, and pays off when Wp - OW is a large part of OW (LeNet's
//            10- and 28-wide outputs).

// The accumulators start at the bias (`b`, OB values); rows [0, rows) of the result are stored to
// dst + ob * ldd.
template <int OB, int V, typename scalar_t>
void pixel_tile(const scalar_t* src, const int64_t* taps, int64_t K, const scalar_t* wt, const scalar_t* b,
                scalar_t* dst, int64_t ldd, int64_t rows) {
  constexpr int kLanes = 64 / sizeof(scalar_t);
  using vec_t = typename Vec<scalar_t, kLanes>::type;
  vec_t acc[OB][V];
#pragma GCC unroll 16
  for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      acc[ob][v] = b[ob] + vec_t{};
    }
  }
  for (int64_t t = 0; t < K; ++t) {
    vec_t xs[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      std::memcpy(&xs[v], src + taps[t] + v * kLanes, sizeof(vec_t));
    }
    const scalar_t* wv = wt + t * OB;
#pragma GCC unroll 16
    for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        acc[ob][v] += wv[ob] * xs[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int ob = 0; ob < OB; ++ob) {
    if (ob < rows) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        std::memcpy(dst + ob * ldd + v * kLanes, &acc[ob][v], sizeof(vec_t));
      }
    }
  }
}

// A tile of `vectors` (1 to V) vectors: the last, partial tile of a plane.
template <int OB, typename scalar_t, int... Vs>
void pixel_tile_of(int64_t vectors, const scalar_t* src, const int64_t* taps, int64_t K, const scalar_t* wt,
                   const scalar_t* b, scalar_t* dst, int64_t ldd, std::integer_sequence<int, Vs...>) {
  ((vectors == Vs + 1 ? pixel_tile<OB, Vs + 1>(src, taps, K, wt, b, dst, ldd, OB) : void()), ...);
}

// `rows` rows of `cols` elements, from src (row pitch ls) to dst (row pitch ld). Rows are moved in whole
// vectors, which may run past a row's end: into the next row, which is written afterwards, or into the
// slack after the destination. A read never runs past `src_end`.
template <typename scalar_t>
void copy_rows(const scalar_t* src, int64_t ls, const scalar_t* src_end, scalar_t* dst, int64_t ld, int64_t rows,
               int64_t cols) {
  constexpr int kLanes = 64 / sizeof(scalar_t);
  using vec_t = typename Vec<scalar_t, kLanes>::type;
  const int64_t chunks = (cols + kLanes - 1) / kLanes;
  int64_t r = 0;
  for (; r < rows && src_end - (src + r * ls) >= chunks * kLanes; ++r) {
    for (int64_t k = 0; k < chunks; ++k) {
      vec_t v;
      std::memcpy(&v, src + r * ls + k * kLanes, sizeof(vec_t));
      std::memcpy(dst + r * ld + k * kLanes, &v, sizeof(vec_t));
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

// Which layout: an estimate of each one's extra work per image, in cycles of a core doing 2 x 16
// multiply-adds a cycle. The wide layout computes (Wp - OW) * OH dropped positions of K * og_pad
// multiply-adds each, and stores each output row of each channel through the tile buffer (about 8 cycles);
// the compact one copies KW * Cg * Hp short rows (about 6 cycles each, measured on LeNet's layers) and
// holds KW times the input, which must stay within kBlockBytes (64 -> 64 on 56 x 56 slowed down by 20%
// when its 2.5 MB copies left L2). The estimate picks compact for LeNet's forwards and 3 -> 16 on 32 x 32,
// wide for LeNet's input gradients and 64 -> 64, as measured.
bool compact_pixels(const Conv2dParams& p, int64_t og_pad, int64_t element_size) {
  const Window2d& w = p.win;
  const int64_t Cg = p.in_channels / p.groups, Og = p.out_channels / p.groups;
  const int64_t K = Cg * w.kernel[0] * w.kernel[1], OH = w.out[0], OW = w.out[1];
  const int64_t Hp = w.in[0] + w.pad[0] + w.pad_end[0], Wp = w.in[1] + w.pad[1] + w.pad_end[1];
  if (w.kernel[1] * Cg * Hp * OW * element_size > kBlockBytes) {
    return false;
  }
  const double wide_extra = double(Wp - OW) * OH * K * og_pad / 32 + 8.0 * Og * OH;
  const double compact_extra = 6.0 * w.kernel[1] * Cg * Hp;
  return compact_extra < wide_extra;
}

template <int OB, int V, typename scalar_t>
void conv2d_forward_pixels(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                           const Conv2dParams& p) {
  constexpr int64_t kLanes = 64 / sizeof(scalar_t), kTile = V * kLanes;
  const Window2d& win = p.win;
  const int64_t Cg = p.in_channels / p.groups, Og = p.out_channels / p.groups;
  const int64_t blocks = (Og + OB - 1) / OB;
  const int64_t KH = win.kernel[0], KW = win.kernel[1], K = Cg * KH * KW;
  const int64_t OH = win.out[0], OW = win.out[1], L = OH * OW;
  const int64_t Hp = win.in[0] + win.pad[0] + win.pad_end[0], Wp = win.in[1] + win.pad[1] + win.pad_end[1];
  const bool compact = compact_pixels(p, blocks * OB, sizeof(scalar_t));
  const int64_t pitch = compact ? OW : Wp, span = OH * pitch;
  const int64_t source = compact ? KW * Cg * Hp * OW : Cg * Hp * Wp;
  // Tiles may read up to a tile past the last position, and a wide tap sits up to (KW-1)*dw past its
  // row: slack after the source keeps every read inside the buffer. Only dropped lanes read it (zeros,
  // or what the compact copies' whole-vector rows ran into).
  const int64_t slack = Wp + kTile;
  const std::vector<int64_t> taps = tap_offsets(win, Cg, Hp, pitch, compact ? Cg * Hp * OW : win.dilation[1]);
  // [groups][blocks][K][OB]: each channel block's weights are contiguous, OB per tap.
  const at::Tensor wt = tap_major_weights(weight, p, blocks * OB)
                            .view({p.groups, K, blocks, OB})
                            .permute({0, 2, 1, 3})
                            .contiguous();
  std::vector<scalar_t> b_pad(p.groups * blocks * OB, scalar_t(0));  // the bias, blocks * OB per group
  for (int64_t oc = 0; bias && oc < p.out_channels; ++oc) {
    b_pad[oc / Og * blocks * OB + oc % Og] = bias->const_data_ptr<scalar_t>()[oc];
  }
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* x_end = x_data + x.numel();
  const scalar_t* wt_data = wt.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const int64_t in_plane = win.in[0] * win.in[1];

  WorkQueue queue(p.batch * p.groups);  // (image, group) pairs
  run_workers(p.batch * p.groups, [&] {
    std::vector<scalar_t> src(source + slack, scalar_t(0));
    alignas(64) scalar_t res[OB * kTile];  // a tile's results, OB rows of kTile positions
    for (int64_t q; queue.pop(q);) {
      const int64_t n = q / p.groups, grp = q % p.groups;
      const scalar_t* xg = x_data + (n * p.in_channels + grp * Cg) * in_plane;
      if (compact) {
        shifted_copies(xg, x_end, src.data(), Cg, win, Hp);
      } else {
        pad_input(xg, src.data(), Cg, win, Hp, Wp);
      }
      for (int64_t l = 0; l < span; l += kTile) {
        const int64_t end = std::min(l + kTile, span);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const scalar_t* wb = wt_data + (grp * blocks + blk) * K * OB;
          const scalar_t* bb = b_pad.data() + (grp * blocks + blk) * OB;
          const int64_t o0 = grp * Og + blk * OB, rows = std::min<int64_t>(OB, Og - blk * OB);
          scalar_t* plane = out_data + (n * p.out_channels + o0) * L;
          if (compact && end - l == kTile) {  // positions are the output plane's: store in place
            pixel_tile<OB, V>(src.data() + l, taps.data(), K, wb, bb, plane + l, L, rows);
            continue;
          }
          if (end - l == kTile) {
            pixel_tile<OB, V>(src.data() + l, taps.data(), K, wb, bb, res, kTile, OB);
          } else {
            pixel_tile_of<OB>((end - l + kLanes - 1) / kLanes, src.data() + l, taps.data(), K, wb, bb, res, kTile,
                              std::make_integer_sequence<int, V>{});
          }
          // Store the tile's real outputs: runs of consecutive columns below OW (one run when compact).
          for (int64_t pos = l; pos < end;) {
            const int64_t oh = pos / pitch, ow = pos % pitch;
            const int64_t stop = compact ? end : std::min(end, oh * pitch + OW);
            for (int64_t ob = 0; ob < rows && pos < stop; ++ob) {  // pos >= stop: a dropped column
              const scalar_t* r = res + ob * kTile + pos - l;
              std::copy(r, r + (stop - pos), plane + ob * L + oh * OW + ow);
            }
            pos = compact ? end : (oh + 1) * pitch;
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Direct weight gradient with channel tiles, for 4 to 32 output channels per group (choose_weight_grad):
// register tiles of T taps x OV output channels, each accumulating x(tap, pixel) * grad_out(pixel, channels) over every output pixel of an
// image. grad_output is first made pixel-major per image, so each pixel is one vector load.

template <int T, int OV, typename scalar_t>
void wgrad_tile(const scalar_t* src, const int64_t* taps, const scalar_t* gop, int64_t ldg, const Window2d& win,
                int64_t Wp, scalar_t* dst, int64_t ldd) {
  using vec_t = typename Vec<scalar_t, OV>::type;
  vec_t acc[T];
  int64_t tap[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    acc[t] = vec_t{};
    tap[t] = taps[t];
  }
  const int64_t OH = win.out[0], OW = win.out[1], sh = win.stride[0], sw = win.stride[1];
  for (int64_t oh = 0; oh < OH; ++oh) {
    const scalar_t* row = src + oh * sh * Wp;
    const scalar_t* g = gop + oh * OW * ldg;
    for (int64_t ow = 0; ow < OW; ++ow) {
      vec_t gv;
      std::memcpy(&gv, g + ow * ldg, sizeof(vec_t));
      const scalar_t* px = row + ow * sw;
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        acc[t] += px[tap[t]] * gv;
      }
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    vec_t d;
    std::memcpy(&d, dst + t * ldd, sizeof(vec_t));
    d += acc[t];
    std::memcpy(dst + t * ldd, &d, sizeof(vec_t));
  }
}

template <int OV, typename scalar_t, int... Ts>
void wgrad_rest(int64_t rem, const scalar_t* src, const int64_t* taps, const scalar_t* gop, int64_t ldg,
                const Window2d& win, int64_t Wp, scalar_t* dst, int64_t ldd, std::integer_sequence<int, Ts...>) {
  ((rem == Ts + 1 ? wgrad_tile<Ts + 1, OV>(src, taps, gop, ldg, win, Wp, dst, ldd) : void()), ...);
}

template <int OV, typename scalar_t>
at::Tensor conv2d_grad_weight_direct(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const Window2d& win = p.win;
  const int64_t Cg = p.in_channels / p.groups, Og = p.out_channels / p.groups;
  const int64_t KH = win.kernel[0], KW = win.kernel[1], K = Cg * KH * KW;
  const int64_t L = win.out[0] * win.out[1];
  const int64_t Hp = win.in[0] + win.pad[0] + win.pad_end[0], Wp = win.in[1] + win.pad[1] + win.pad_end[1];
  const int64_t og_pad = (Og + OV - 1) / OV * OV, in_plane = win.in[0] * win.in[1];
  const std::vector<int64_t> taps = tap_offsets(win, Cg, Hp, Wp, win.dilation[1]);
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  constexpr int kTile = 12;

  // One partial sum per batch slice ([groups][K][og_pad]), merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * K * og_pad * int64_t{sizeof(scalar_t)});
  at::Tensor partial = at::zeros({slices.count, p.groups, K, og_pad}, go.options());
  for_each_batch_slice(p.batch, slices, [&](int64_t slice, int64_t n0, int64_t n1) {
    std::vector<scalar_t> src(Cg * Hp * Wp);
    std::vector<scalar_t> gop(L * og_pad, scalar_t(0));  // pixel-major grad_output: gop[l * og_pad + o]
    scalar_t* acc = partial.template mutable_data_ptr<scalar_t>() + slice * p.groups * K * og_pad;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        pad_input(x_data + (n * p.in_channels + grp * Cg) * in_plane, src.data(), Cg, win, Hp, Wp);
        for (int64_t o = 0; o < Og; ++o) {
          const scalar_t* plane = go_data + (n * p.out_channels + grp * Og + o) * L;
          for (int64_t l = 0; l < L; ++l) {
            gop[l * og_pad + o] = plane[l];
          }
        }
        scalar_t* acc_g = acc + grp * K * og_pad;
        for (int64_t o = 0; o < og_pad; o += OV) {
          int64_t t = 0;
          for (; t + kTile <= K; t += kTile) {
            wgrad_tile<kTile, OV>(src.data(), taps.data() + t, gop.data() + o, og_pad, win, Wp,
                                  acc_g + t * og_pad + o, og_pad);
          }
          if (t < K) {
            wgrad_rest<OV>(K - t, src.data(), taps.data() + t, gop.data() + o, og_pad, win, Wp, acc_g + t * og_pad + o,
                           og_pad, std::make_integer_sequence<int, kTile - 1>{});
          }
        }
      }
    }
  });
  const at::Tensor sum = sum_slices(partial);
  // [groups][K][og_pad] -> [groups * Og][Cg][KH][KW]
  return sum.narrow(2, 0, Og).transpose(1, 2).reshape({p.out_channels, Cg, KH, KW}).contiguous();
}

// Weight gradient for stride 1 and at most 3 output channels per group (depthwise), where the channel
// tiles above would be mostly empty. Vectorised across positions of the wide layout instead: for each of
// T taps and OB output channels, a vector accumulates grad_output(position) * input(position + tap) over
// the positions of an image; grad_output is first laid out wide, with zeros in the dropped columns, so
// they add nothing. The lanes are summed at the end of each image, in a fixed order.
template <int OB, int T, typename scalar_t>
void wgrad_pixel_tile(const scalar_t* src, const int64_t* taps, const scalar_t* gow, int64_t span, scalar_t* dst,
                      int64_t K) {
  constexpr int kLanes = 64 / sizeof(scalar_t);
  using vec_t = typename Vec<scalar_t, kLanes>::type;
  vec_t acc[OB][T];
  int64_t tap[T];
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t) {
    tap[t] = taps[t];
#pragma GCC unroll 4
    for (int ob = 0; ob < OB; ++ob) {
      acc[ob][t] = vec_t{};
    }
  }
  for (int64_t pos = 0; pos < span; pos += kLanes) {
    vec_t g[OB];
#pragma GCC unroll 4
    for (int ob = 0; ob < OB; ++ob) {
      std::memcpy(&g[ob], gow + ob * span + pos, sizeof(vec_t));
    }
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t) {
      vec_t v;
      std::memcpy(&v, src + pos + tap[t], sizeof(vec_t));
#pragma GCC unroll 4
      for (int ob = 0; ob < OB; ++ob) {
        acc[ob][t] += g[ob] * v;
      }
    }
  }
#pragma GCC unroll 4
  for (int ob = 0; ob < OB; ++ob) {
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t) {
      scalar_t sum = 0;
      for (int i = 0; i < kLanes; ++i) {
        sum += acc[ob][t][i];
      }
      dst[ob * K + t] += sum;
    }
  }
}

template <int OB, typename scalar_t>
at::Tensor conv2d_grad_weight_pixels(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  constexpr int64_t kLanes = 64 / sizeof(scalar_t), T = 24 / OB;
  const Window2d& win = p.win;
  const int64_t Cg = p.in_channels / p.groups;
  const int64_t KH = win.kernel[0], KW = win.kernel[1], K = Cg * KH * KW, k_pad = (K + T - 1) / T * T;
  const int64_t OH = win.out[0], OW = win.out[1], L = OH * OW;
  const int64_t Hp = win.in[0] + win.pad[0] + win.pad_end[0], Wp = win.in[1] + win.pad[1] + win.pad_end[1];
  const int64_t span = (OH * Wp + kLanes - 1) / kLanes * kLanes, in_plane = win.in[0] * win.in[1];
  std::vector<int64_t> taps = tap_offsets(win, Cg, Hp, Wp, win.dilation[1]);
  taps.resize(k_pad, 0);  // the last tile's extra taps read the image's start; their sums are dropped
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();

  // One partial sum per batch slice ([groups][OB][k_pad]), merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * OB * k_pad * int64_t{sizeof(scalar_t)});
  at::Tensor partial = at::zeros({slices.count, p.groups, OB, k_pad}, go.options());
  for_each_batch_slice(p.batch, slices, [&](int64_t slice, int64_t n0, int64_t n1) {
    // A vector may run (KW-1)*dw past the last row's taps: zeroed slack keeps reads inside the buffer.
    std::vector<scalar_t> src(Cg * Hp * Wp + Wp + kLanes, scalar_t(0));
    std::vector<scalar_t> gow(OB * span, scalar_t(0));  // wide grad_output, zero where nothing is read
    scalar_t* acc = partial.template mutable_data_ptr<scalar_t>() + slice * p.groups * OB * k_pad;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        pad_input(x_data + (n * p.in_channels + grp * Cg) * in_plane, src.data(), Cg, win, Hp, Wp);
        for (int64_t o = 0; o < p.out_channels / p.groups; ++o) {
          const scalar_t* plane = go_data + (n * p.out_channels + grp * (p.out_channels / p.groups) + o) * L;
          for (int64_t oh = 0; oh < OH; ++oh) {
            std::copy(plane + oh * OW, plane + (oh + 1) * OW, gow.data() + o * span + oh * Wp);
          }
        }
        for (int64_t t = 0; t < k_pad; t += T) {
          wgrad_pixel_tile<OB, T>(src.data(), taps.data() + t, gow.data(), span, acc + grp * OB * k_pad + t, k_pad);
        }
      }
    }
  });
  const at::Tensor sum = sum_slices(partial);
  // [groups][OB][k_pad] -> [groups * Og][Cg][KH][KW]
  const int64_t Og = p.out_channels / p.groups;
  return sum.narrow(1, 0, Og).narrow(2, 0, K).reshape({p.out_channels, Cg, KH, KW}).contiguous();
}

template <typename scalar_t>
at::Tensor conv2d_grad_input_impl(const at::Tensor& go, const at::Tensor& weight, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const int64_t in_plane = p.win.in[0] * p.win.in[1];
  at::Tensor gx = at::zeros({p.batch, p.in_channels, p.win.in[0], p.win.in[1]}, go.options());
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gx_data = gx.mutable_data_ptr<scalar_t>();

  for_each_batch_slice(p.batch, BatchSlices(p.batch), [&](int64_t, int64_t n0, int64_t n1) {
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
at::Tensor conv2d_grad_weight_impl(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const Gemm g(p, sizeof(scalar_t));
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();

  // One partial sum per batch slice, merged in slice order below.
  const BatchSlices slices(p.batch, p.groups * g.Og * g.K * int64_t{sizeof(scalar_t)});
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

// Sum of grad_output over batch and pixels, per output channel. Each plane is summed in 16 interleaved
// lanes (vectorised, in a fixed order), and the plane sums are accumulated in double/float.
template <typename scalar_t>
at::Tensor conv2d_grad_bias_impl(const at::Tensor& go, const Conv2dParams& p) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
  constexpr int kLanes = 16;
  using vec_t = typename Vec<scalar_t, kLanes>::type;
  const int64_t L = p.win.out[0] * p.win.out[1];
  at::Tensor gb = at::empty({p.out_channels}, go.options());
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gb_data = gb.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, p.out_channels, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      acc_t sum = 0;
      for (int64_t n = 0; n < p.batch; ++n) {
        const scalar_t* row = go_data + (n * p.out_channels + o) * L;  // (n, o) is one output plane
        vec_t lanes{};
        int64_t l = 0;
        for (; l + kLanes <= L; l += kLanes) {
          vec_t v;
          std::memcpy(&v, row + l, sizeof(vec_t));
          lanes += v;
        }
        acc_t plane = 0;
        for (int i = 0; i < kLanes; ++i) {
          plane += lanes[i];
        }
        for (; l < L; ++l) {
          plane += row[l];
        }
        sum += plane;
      }
      gb_data[o] = static_cast<scalar_t>(sum);
    }
  });
  return gb;
}

// The forward algorithm (see the top of this file); lenet_ext.backends.conv_algorithm overrides it.
//   pixel tiles    stride 1, except 1x1 convolutions with more than 8 output channels per group (the
//                  matrix product needs no unrolling there), up to 1152 taps per output (128 channels
//                  x 3x3). Past that, im2col's matrix product wins (256 x 3x3 measured 0.63x torch
//                  for pixel tiles, 0.71x for im2col).
//   channel tiles  strided, 4 to 32 output channels per group, at most 1024 taps (too thin for a
//                  matrix-product library to reach its speed).
//   im2col         everything else.
// The numbers behind it come from `lenet-ext bench --conv-algorithm direct|im2col` and a sweep of
// channel counts and image sizes (float32, this repository's 2-core AVX-512 machine).
enum class ForwardKernel { kIm2col, kPixelTiles, kChannelTiles };

ForwardKernel choose_forward_kernel(const Conv2dParams& p) {
  const bool stride1 = p.win.stride[0] == 1 && p.win.stride[1] == 1;
  const int64_t forced = conv_algorithm_override();
  if (forced == kAlgorithmIm2col) {
    return ForwardKernel::kIm2col;
  }
  if (forced == kAlgorithmDirect) {
    return stride1 ? ForwardKernel::kPixelTiles : ForwardKernel::kChannelTiles;
  }
  const int64_t Og = p.out_channels / p.groups;
  const int64_t K = p.in_channels / p.groups * p.win.kernel[0] * p.win.kernel[1];
  if (stride1) {
    const bool pointwise = p.win.kernel[0] == 1 && p.win.kernel[1] == 1;
    return K <= 1152 && (Og <= 8 || !pointwise) ? ForwardKernel::kPixelTiles : ForwardKernel::kIm2col;
  }
  return K <= 1024 && Og >= 4 && Og <= 32 ? ForwardKernel::kChannelTiles : ForwardKernel::kIm2col;
}

// The weight gradient's algorithm: channel tiles (taps x a vector of output channels) for 4 to 32 output
// channels per group and at most 1024 taps; pixel tiles (taps x positions) for stride 1 and at most 3
// output channels per group (depthwise); im2col otherwise. Wider groups measured no better on channel
// tiles at stride 1 (64 -> 64 3x3: 0.91x torch direct, 0.87x im2col) and far worse strided (the 7x7
// stride-2 stem: 0.21x direct, 0.64x im2col). "direct" forces whichever direct kernel fits.
enum class WeightGradKernel { kIm2col, kPixelTiles, kChannelTiles };

WeightGradKernel choose_weight_grad(const Conv2dParams& p) {
  const int64_t forced = conv_algorithm_override();
  const int64_t Og = p.out_channels / p.groups;
  const int64_t K = p.in_channels / p.groups * p.win.kernel[0] * p.win.kernel[1];
  const bool stride1 = p.win.stride[0] == 1 && p.win.stride[1] == 1;
  if (forced == kAlgorithmIm2col) {
    return WeightGradKernel::kIm2col;
  }
  if (stride1 && Og <= 3 && (forced == kAlgorithmDirect || K <= 1024)) {
    return WeightGradKernel::kPixelTiles;
  }
  if (Og >= 4 && (forced == kAlgorithmDirect || (K <= 1024 && Og <= 32))) {
    return WeightGradKernel::kChannelTiles;
  }
  return WeightGradKernel::kIm2col;
}

// The pixel tiles' channel block: about 24 accumulators per tile, and of 8, 6 and 4 channels the block
// that pads the group's channels the least (ties to the larger block).
int64_t pixel_block(int64_t Og) {
  int64_t best = 8;
  for (const int64_t ob : {6, 4}) {
    if ((Og + ob - 1) / ob * ob < (Og + best - 1) / best * best) {
      best = ob;
    }
  }
  return best;
}

template <typename scalar_t>
void conv2d_forward_any(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                        const Conv2dParams& p) {
  const int64_t Og = p.out_channels / p.groups;
  const ForwardKernel kernel = choose_forward_kernel(p);
  if (kernel == ForwardKernel::kIm2col) {
    conv2d_forward_impl<scalar_t>(x, w, bias, out, p);
  } else if (kernel == ForwardKernel::kPixelTiles) {
    const int64_t ob = pixel_block(Og);
    if (ob == 4) {
      conv2d_forward_pixels<4, 6, scalar_t>(x, w, bias, out, p);
    } else if (ob == 6) {
      conv2d_forward_pixels<6, 4, scalar_t>(x, w, bias, out, p);
    } else {
      conv2d_forward_pixels<8, 3, scalar_t>(x, w, bias, out, p);
    }
  } else if (Og <= 8) {
    conv2d_forward_direct<8, scalar_t>(x, w, bias, out, p);
  } else {
    conv2d_forward_direct<16, scalar_t>(x, w, bias, out, p);
  }
}

// For a stride-1 convolution, the input gradient is itself a convolution: of grad_output, padded by
// d*(k-1) - p on each side, with the weight flipped in space and transposed (per group) between input
// and output channels. When that convolution suits the direct kernel, use it; returns an undefined
// tensor otherwise (negative padding, strides, or shapes the heuristic gives to im2col).
template <typename scalar_t>
at::Tensor conv2d_grad_input_as_conv(const at::Tensor& go, const at::Tensor& w, const Conv2dParams& p) {
  const Window2d& win = p.win;
  if (win.stride[0] != 1 || win.stride[1] != 1 || win.in[0] == 0 || win.in[1] == 0) {
    return {};  // (an empty input plane would be an invalid convolution's output)
  }
  std::array<int64_t, 4> pads{};
  for (int d = 0; d < 2; ++d) {
    const int64_t span = win.dilation[d] * (win.kernel[d] - 1);
    pads[2 * d] = span - win.pad[d];
    pads[2 * d + 1] = span - win.pad_end[d];
    if (pads[2 * d] < 0 || pads[2 * d + 1] < 0) {
      return {};
    }
  }
  const int64_t Og = p.out_channels / p.groups, Cg = p.in_channels / p.groups;
  const at::Tensor wt = w.view({p.groups, Og, Cg, win.kernel[0], win.kernel[1]})
                            .flip({3, 4})
                            .transpose(1, 2)
                            .reshape({p.in_channels, Og, win.kernel[0], win.kernel[1]})
                            .contiguous();
  const Conv2dParams q = make_conv2d_params(go, wt, std::nullopt, {1, 1}, pads,
                                            {win.dilation[0], win.dilation[1]}, p.groups);
  if (choose_forward_kernel(q) == ForwardKernel::kIm2col) {
    return {};
  }
  at::Tensor gx = at::empty({p.batch, p.in_channels, win.in[0], win.in[1]}, go.options());
  conv2d_forward_any<scalar_t>(go, wt, nullptr, gx, q);
  return gx;
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = make_conv2d_params(input, weight, bias, stride, padding, dilation, groups);
  check_cpu_floating("conv2d_forward_cpu", input);
  const at::Tensor x = to_compute(input), w = to_compute(weight);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(to_compute(*bias)) : std::nullopt;
  at::Tensor out = at::empty({p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, x.options());
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  if (out.numel() == 0) {
    return out.to(input.scalar_type(), false, false, fmt);
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_forward_cpu", [&] {
    conv2d_forward_any<scalar_t>(x, w, b ? &*b : nullptr, out, p);
  });
  return out.to(input.scalar_type(), false, false, fmt);
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = make_conv2d_params(input, weight, std::nullopt, stride, padding, dilation, groups);
  check_cpu_floating("conv2d_backward_cpu", input);
  check_grad_output("lenet_ext.conv2d_backward", grad_output,
                    {p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, input);
  const at::Tensor go = to_compute(grad_output);
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  std::optional<at::Tensor> gx, gw, gb;
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "conv2d_backward_cpu", [&] {
    if (output_mask[0]) {
      const at::Tensor w = to_compute(weight);
      at::Tensor g = conv2d_grad_input_as_conv<scalar_t>(go, w, p);
      gx = (g.defined() ? g : conv2d_grad_input_impl<scalar_t>(go, w, p)).to(input.scalar_type(), false, false, fmt);
    }
    if (output_mask[1]) {
      const at::Tensor x = to_compute(input);
      const int64_t Og = p.out_channels / p.groups;
      at::Tensor g;
      switch (choose_weight_grad(p)) {
        case WeightGradKernel::kPixelTiles:
          g = Og == 1   ? conv2d_grad_weight_pixels<1, scalar_t>(go, x, p)
              : Og == 2 ? conv2d_grad_weight_pixels<2, scalar_t>(go, x, p)
                        : conv2d_grad_weight_pixels<3, scalar_t>(go, x, p);
          // Its dropped positions multiply a zero gradient by real inputs: an inf or NaN there makes NaN
          // where torch, which never reads them, is finite. Such a result is computed again by im2col.
          if (!g.isfinite().all().item<bool>()) {
            g = conv2d_grad_weight_impl<scalar_t>(go, x, p);
          }
          break;
        case WeightGradKernel::kChannelTiles:
          g = Og <= 8 ? conv2d_grad_weight_direct<8, scalar_t>(go, x, p)
                      : conv2d_grad_weight_direct<16, scalar_t>(go, x, p);
          break;
        case WeightGradKernel::kIm2col:
          g = conv2d_grad_weight_impl<scalar_t>(go, x, p);
          break;
      }
      gw = g.to(input.scalar_type(), false, false, fmt);
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

// A setting, not a computation: no tensor argument, so it is registered for every backend at once.
TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_conv_algorithm", &set_conv_algorithm);
}

}  // namespace lenet_ext
