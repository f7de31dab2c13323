// conv2d on the CPU: forward, and one backward that computes any subset of (input, weight, bias)
// gradients.
//
// Algorithm: im2col + matrix product, per image and per group.
//   im2col unrolls one image's group of channels into a (C_g*KH*KW) x (OH*OW) matrix `col` whose row
//   (c, i, j) holds, for every output pixel, the input value under kernel tap (i, j) of channel c, or
//   0 where the tap falls in the padding. Then
//     forward        out[n, g]   = W[g] @ col(x[n, g]) (+ bias)
//     grad input     gx[n, g]    = col2im(W[g]^T @ gout[n, g])     (col2im scatters rows back, summing)
//     grad weight    gW[g]      += gout[n, g] @ col(x[n, g])^T
//   A 1x1, stride-1, unpadded convolution needs no unrolling: the image itself is `col`.
//   Padding, stride and dilation live entirely in im2col/col2im: each row splits into zero borders and
//   an interior read without branches (valid_outputs in shape.h gives the interior).
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

// Rows of col are (c, i, j); one row is OH*OW long.
template <typename scalar_t>
void im2col(const scalar_t* x, scalar_t* col, int64_t channels, const Window2d& w) {
  const int64_t KH = w.kernel[0], KW = w.kernel[1], H = w.in[0], W = w.in[1], OH = w.out[0], OW = w.out[1];
  const int64_t sh = w.stride[0], sw = w.stride[1];
  at::parallel_for(0, channels * KH * KW, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
      const int64_t tap_h = i * w.dilation[0], tap_w = j * w.dilation[1];
      const Range rows = valid_outputs(H, w.pad[0], tap_h, sh, OH);
      const Range cols = valid_outputs(W, w.pad[1], tap_w, sw, OW);
      const scalar_t* plane = x + c * H * W;
      scalar_t* dst = col + r * OH * OW;
      std::fill(dst, dst + rows.lo * OW, scalar_t(0));
      for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
        scalar_t* d = dst + oh * OW;
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
      std::fill(dst + rows.hi * OW, dst + OH * OW, scalar_t(0));
    }
  });
}

// The adjoint of im2col: adds every row of col back onto the input positions it was read from.
// gx must be zeroed by the caller. Channels are independent, so they run in parallel.
template <typename scalar_t>
void col2im(const scalar_t* col, scalar_t* gx, int64_t channels, const Window2d& w) {
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
          const scalar_t* src = col + ((c * KH + i) * KW + j) * OH * OW;
          for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
            const int64_t base = (oh * sh - w.pad[0] + tap_h) * W - w.pad[1] + tap_w;
            const scalar_t* s = src + oh * OW;
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

// Geometry of one (image, group) matrix product.
struct Gemm {
  int64_t Cg, Og, K, L;  // channels per group in and out, K = Cg*KH*KW, L = OH*OW
  explicit Gemm(const Conv2dParams& p)
      : Cg(p.in_channels / p.groups),
        Og(p.out_channels / p.groups),
        K(p.in_channels / p.groups * p.win.kernel[0] * p.win.kernel[1]),
        L(p.win.out[0] * p.win.out[1]) {}
};

// Wraps a raw block of `x`'s storage as a matrix (no copy).
at::Tensor as_matrix(const at::Tensor& like, const void* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<void*>(data), {rows, cols}, like.options());
}

template <typename scalar_t>
void conv2d_forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, at::Tensor& out,
                         const Conv2dParams& p) {
  const Gemm g(p);
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1];
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  const scalar_t* b_data = bias ? bias->const_data_ptr<scalar_t>() : nullptr;

  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = pointwise ? at::Tensor() : at::empty({g.K, g.L}, x.options());
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        // (n, grp * Cg) is the first input channel of this group in image n
        const scalar_t* xg = x_data + (n * p.in_channels + grp * g.Cg) * in_plane;
        if (!pointwise) {
          im2col(xg, col.mutable_data_ptr<scalar_t>(), g.Cg, p.win);
        }
        scalar_t* og = out_data + (n * p.out_channels + grp * g.Og) * g.L;
        at::Tensor out_g = as_matrix(out, og, g.Og, g.L);
        at::mm_out(out_g, w[grp], pointwise ? as_matrix(x, xg, g.K, g.L) : col);
        if (b_data) {
          for (int64_t o = 0; o < g.Og; ++o) {
            const scalar_t b = b_data[grp * g.Og + o];
            scalar_t* row = og + o * g.L;
            for (int64_t l = 0; l < g.L; ++l) {
              row[l] += b;
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
at::Tensor conv2d_grad_input_impl(const at::Tensor& go, const at::Tensor& weight, const Conv2dParams& p) {
  const Gemm g(p);
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1];
  at::Tensor gx = at::zeros({p.batch, p.in_channels, p.win.in[0], p.win.in[1]}, go.options());
  const at::Tensor w = weight.view({p.groups, g.Og, g.K});
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gx_data = gx.mutable_data_ptr<scalar_t>();

  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = pointwise ? at::Tensor() : at::empty({g.K, g.L}, go.options());
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const at::Tensor go_g = as_matrix(go, go_data + (n * p.out_channels + grp * g.Og) * g.L, g.Og, g.L);
        scalar_t* gxg = gx_data + (n * p.in_channels + grp * g.Cg) * in_plane;
        if (pointwise) {
          at::Tensor gx_g = as_matrix(gx, gxg, g.K, g.L);
          at::mm_out(gx_g, w[grp].t(), go_g);
        } else {
          at::mm_out(col, w[grp].t(), go_g);
          col2im(col.const_data_ptr<scalar_t>(), gxg, g.Cg, p.win);
        }
      }
    }
  });
  return gx;
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_impl(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const Gemm g(p);
  const bool pointwise = is_pointwise(p.win);
  const int64_t in_plane = p.win.in[0] * p.win.in[1];
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();

  // One partial sum per batch slice, merged in slice order below.
  const int64_t slices = batch_slice_count(p.batch);
  at::Tensor partial = at::zeros({slices, p.groups, g.Og, g.K}, go.options());
  for_each_batch_slice(p.batch, [&](int64_t n0, int64_t n1) {
    at::Tensor col = pointwise ? at::Tensor() : at::empty({g.K, g.L}, x.options());
    at::Tensor acc = partial[batch_slice_of(n0, p.batch)];
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        const at::Tensor go_g = as_matrix(go, go_data + (n * p.out_channels + grp * g.Og) * g.L, g.Og, g.L);
        const scalar_t* xg = x_data + (n * p.in_channels + grp * g.Cg) * in_plane;
        if (!pointwise) {
          im2col(xg, col.mutable_data_ptr<scalar_t>(), g.Cg, p.win);
        }
        at::Tensor acc_g = acc[grp];
        acc_g.addmm_(go_g, (pointwise ? as_matrix(x, xg, g.K, g.L) : col).t());
      }
    }
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
