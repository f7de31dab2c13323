// What conv2d's implicit GEMMs (cuda/gemm.cuh on CUDA cores, cuda/gemm_tc.cuh on tensor cores) gather
// and where they write: C[m][n] = sum_k A[m][k] B[k][n] per group, with A and B read from the
// convolution's own tensors (no im2col buffer). Plain host-and-device code, so the test operator
// lenet_ext_testing::cuda_conv2d_gemm_on_host (testing/conv2d_on_host.cpp) runs the same gathers on the
// CPU and tests check them.
//
// The GEMM of each mode:
//   forward             m = out channel, n = (image, oh, ow), k = (in channel, kh, kw)
//   grad input          m = in channel,  n = (image, ih, iw), k = (out channel, kh, kw): B gathers
//                       grad_output at the (oh, ow) that read (ih, iw) through tap (kh, kw), or 0
//   grad input, phased  the same for a strided, undilated convolution, one GEMM per stride phase (ry, rx):
//                       n runs over the input pixels with (ih + pad_top) % sh == ry (and so for columns),
//                       k over the taps kh = ry + sh * t that reach them, so no product meets a structural
//                       zero (CUTLASS's strided dgrad splits the same way);
//   grad weight         m = out channel, n = (in channel, kh, kw), k = (image, oh, ow), in chunks of k.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "cuda/geom.h"

namespace lenet_ext {
namespace cuda {

enum class Mode { kForward, kGradInput, kGradInputPhased, kGradWeight };

// One stride phase of a strided input gradient (Mode::kGradInputPhased): the input pixels
// (ih0 + sh * i, iw0 + sw * j) for i < H, j < W, and the taps (ry + sh * t, rx + sw * u) for t < TH,
// u < TW, where ry = (ih0 + pad_top) % sh and rx likewise. Unused by the other modes.
template <typename index_t>
struct Phase {
  index_t ry = 0, rx = 0;
  index_t ih0 = 0, iw0 = 0;
  index_t H = 0, W = 0;
  index_t TH = 0, TW = 0;
};

// Phase (ry, rx) of the input gradient of g (sh, sw > 1 or not; dilation 1).
template <typename index_t>
Phase<index_t> phase_of(const Geom<index_t>& g, index_t ry, index_t rx) {
  Phase<index_t> ph;
  ph.ry = ry;
  ph.rx = rx;
  // the first ih >= 0 with (ih + pad) % s == r
  ph.ih0 = ((ry - g.ph) % g.sh + g.sh) % g.sh;
  ph.iw0 = ((rx - g.pw) % g.sw + g.sw) % g.sw;
  ph.H = ph.ih0 < g.H ? (g.H - ph.ih0 + g.sh - 1) / g.sh : 0;
  ph.W = ph.iw0 < g.W ? (g.W - ph.iw0 + g.sw - 1) / g.sw : 0;
  ph.TH = ry < g.KH ? (g.KH - ry + g.sh - 1) / g.sh : 0;
  ph.TW = rx < g.KW ? (g.KW - rx + g.sw - 1) / g.sw : 0;
  return ph;
}

// Sizes of the GEMM for one group.
template <typename index_t>
struct GemmShape {
  index_t M, N, K;
};

template <Mode mode, typename index_t>
C10_HOST_DEVICE inline GemmShape<index_t> gemm_shape(const Geom<index_t>& g, const Phase<index_t>& ph = {}) {
  const index_t khw = g.KH * g.KW;
  if constexpr (mode == Mode::kForward) {
    return {g.Og, g.N * g.OH * g.OW, g.Cg * khw};
  } else if constexpr (mode == Mode::kGradInput) {
    return {g.Cg, g.N * g.H * g.W, g.Og * khw};
  } else if constexpr (mode == Mode::kGradInputPhased) {
    return {g.Cg, g.N * ph.H * ph.W, g.Og * ph.TH * ph.TW};
  } else {
    return {g.Og, g.Cg * khw, g.N * g.OH * g.OW};
  }
}

// Pointers for one launch: the conv's own tensors, which the GEMM gathers from, the output, and the
// weight gradient's per-chunk buffer.
template <typename scalar_t>
struct GemmArgs {
  const scalar_t* x;       // forward / grad weight: input
  const scalar_t* weight;  // forward / grad input
  const scalar_t* grad;    // grad input / grad weight: grad_output
  const scalar_t* bias;    // forward, may be null
  scalar_t* out;           // forward: output, grad input: grad_input
  acc_t<scalar_t>* partial;  // grad weight: [chunks][O][Cg*KH*KW]
};

// Where A[m][k] of the GEMM lives (m < M and k < K are checked by the caller): its offset in a_source's
// tensor. Every A element is an element of the weight (forward, input gradient) or of grad_output (weight
// gradient), so a kernel may copy it as it is (cp.async) or load and convert it (load_a).
template <Mode mode, typename scalar_t>
C10_HOST_DEVICE inline const scalar_t* a_source(const GemmArgs<scalar_t>& args) {
  return mode == Mode::kGradWeight ? args.grad : args.weight;
}

template <Mode mode, typename index_t>
C10_HOST_DEVICE inline index_t a_at(const Geom<index_t>& g, const Phase<index_t>& ph, index_t grp, index_t m,
                                    index_t k) {
  if constexpr (mode == Mode::kForward) {
    // weight[grp*Og + m][k], k = (c, kh, kw)
    return (grp * g.Og + m) * (g.Cg * g.KH * g.KW) + k;
  } else if constexpr (mode == Mode::kGradInput) {
    // k = (o, kh, kw): weight[grp*Og + o][m][kh][kw]
    const index_t khw = g.KH * g.KW;
    const index_t o = k / khw, r = k % khw;
    return ((grp * g.Og + o) * g.Cg + m) * khw + r;
  } else if constexpr (mode == Mode::kGradInputPhased) {
    // k = (o, t, u): weight[grp*Og + o][m][ry + sh*t][rx + sw*u]
    const index_t taps = ph.TH * ph.TW;
    const index_t o = k / taps, r = k % taps;
    const index_t kh = ph.ry + g.sh * (r / ph.TW), kw = ph.rx + g.sw * (r % ph.TW);
    return (((grp * g.Og + o) * g.Cg + m) * g.KH + kh) * g.KW + kw;
  } else {
    // k = (image, oh, ow): grad_output[image][grp*Og + m][oh][ow]
    const index_t L = g.OH * g.OW;
    const index_t img = k / L, l = k % L;
    return (img * g.O + grp * g.Og + m) * L + l;
  }
}

// A[m][k] of the GEMM (m < M and k < K are checked by the caller).
template <Mode mode, typename scalar_t, typename index_t>
C10_HOST_DEVICE inline acc_t<scalar_t> load_a(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                              const Phase<index_t>& ph, index_t grp, index_t m, index_t k) {
  return static_cast<acc_t<scalar_t>>(a_source<mode, scalar_t>(args)[a_at<mode, index_t>(g, ph, grp, m, k)]);
}

// What a thread knows about its B column n, computed once per tile.
template <typename index_t>
struct Column {
  bool valid;
  index_t base;  // offset of the column's image/channel plane in the gathered tensor
  index_t y, x;  // forward: (ih0, iw0); grad input: (ih + ph, iw + pw); grad weight: tap offsets
};

template <Mode mode, typename index_t>
C10_HOST_DEVICE inline Column<index_t> column_of(const Geom<index_t>& g, const Phase<index_t>& ph, index_t grp,
                                                 index_t n, index_t N) {
  Column<index_t> col{n < N, 0, 0, 0};
  if (!col.valid) {
    return col;
  }
  if constexpr (mode == Mode::kForward) {
    // n = (image, oh, ow); the column reads input planes of this image's group
    const index_t L = g.OH * g.OW;
    const index_t img = n / L, l = n % L;
    col.base = (img * g.C + grp * g.Cg) * g.H * g.W;
    col.y = (l / g.OW) * g.sh - g.ph;
    col.x = (l % g.OW) * g.sw - g.pw;
  } else if constexpr (mode == Mode::kGradInput) {
    // n = (image, ih, iw); the column reads grad_output planes of this image's group
    const index_t HW = g.H * g.W;
    const index_t img = n / HW, p = n % HW;
    col.base = (img * g.O + grp * g.Og) * g.OH * g.OW;
    col.y = p / g.W + g.ph;
    col.x = p % g.W + g.pw;
  } else if constexpr (mode == Mode::kGradInputPhased) {
    // n = (image, i, j): input pixel (ih0 + sh*i, iw0 + sw*j) of the phase
    const index_t HW = ph.H * ph.W;
    const index_t img = n / HW, p = n % HW;
    col.base = (img * g.O + grp * g.Og) * g.OH * g.OW;
    col.y = ph.ih0 + g.sh * (p / ph.W) + g.ph;
    col.x = ph.iw0 + g.sw * (p % ph.W) + g.pw;
  } else {
    // n = (c, kh, kw); the column reads input channel grp*Cg + c of every image
    const index_t khw = g.KH * g.KW;
    const index_t c = n / khw, r = n % khw;
    col.base = (grp * g.Cg + c) * g.H * g.W;
    col.y = (r / g.KW) * g.dh - g.ph;
    col.x = (r % g.KW) * g.dw - g.pw;
  }
  return col;
}

// Where B[k][n] lives for the thread's column (k < K is checked by the caller): its offset in b_source's
// tensor (the input, or grad_output for the input gradients), or -1 where the tap reads padding or meets
// a stride's structural zero (B is 0 there).
template <Mode mode, typename scalar_t>
C10_HOST_DEVICE inline const scalar_t* b_source(const GemmArgs<scalar_t>& args) {
  return mode == Mode::kGradInput || mode == Mode::kGradInputPhased ? args.grad : args.x;
}

template <Mode mode, typename index_t>
C10_HOST_DEVICE inline index_t b_at(const Geom<index_t>& g, const Phase<index_t>& ph, const Column<index_t>& col,
                                    index_t k) {
  if constexpr (mode == Mode::kForward) {
    // k = (c, kh, kw)
    const index_t khw = g.KH * g.KW;
    const index_t c = k / khw, r = k % khw;
    const index_t ih = col.y + (r / g.KW) * g.dh, iw = col.x + (r % g.KW) * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
      return -1;
    }
    return col.base + (c * g.H + ih) * g.W + iw;
  } else if constexpr (mode == Mode::kGradInput) {
    // k = (o, kh, kw): the output (oh, ow) with oh*sh + kh*dh = ih + ph, if it exists
    const index_t khw = g.KH * g.KW;
    const index_t o = k / khw, r = k % khw;
    const index_t th = col.y - (r / g.KW) * g.dh, tw = col.x - (r % g.KW) * g.dw;
    if (th < 0 || tw < 0 || th % g.sh != 0 || tw % g.sw != 0) {
      return -1;
    }
    const index_t oh = th / g.sh, ow = tw / g.sw;
    if (oh >= g.OH || ow >= g.OW) {
      return -1;
    }
    return col.base + (o * g.OH + oh) * g.OW + ow;
  } else if constexpr (mode == Mode::kGradInputPhased) {
    // k = (o, t, u): tap (ry + sh*t, rx + sw*u) reaches output ((ih + ph - kh) / sh, ...) exactly
    const index_t taps = ph.TH * ph.TW;
    const index_t o = k / taps, r = k % taps;
    const index_t th = col.y - ph.ry - g.sh * (r / ph.TW), tw = col.x - ph.rx - g.sw * (r % ph.TW);
    if (th < 0 || tw < 0) {
      return -1;
    }
    const index_t oh = th / g.sh, ow = tw / g.sw;
    if (oh >= g.OH || ow >= g.OW) {
      return -1;
    }
    return col.base + (o * g.OH + oh) * g.OW + ow;
  } else {
    // k = (image, oh, ow)
    const index_t L = g.OH * g.OW;
    const index_t img = k / L, l = k % L;
    const index_t ih = (l / g.OW) * g.sh + col.y, iw = (l % g.OW) * g.sw + col.x;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
      return -1;
    }
    return img * g.C * g.H * g.W + col.base + ih * g.W + iw;
  }
}

// B[k][n] for the thread's column (k < K is checked by the caller); 0 where the tap reads padding.
template <Mode mode, typename scalar_t, typename index_t>
C10_HOST_DEVICE inline acc_t<scalar_t> load_b(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                              const Phase<index_t>& ph, const Column<index_t>& col, index_t k) {
  const index_t at = b_at<mode, index_t>(g, ph, col, k);
  return at < 0 ? acc_t<scalar_t>(0) : static_cast<acc_t<scalar_t>>(b_source<mode, scalar_t>(args)[at]);
}

// Writes C[m][n] of group grp (m < M and n < N are checked by the caller) where its mode keeps it: the
// output plus bias (forward), grad_input, or k chunk `chunk`'s partial weight gradient.
template <Mode mode, typename scalar_t, typename index_t>
C10_HOST_DEVICE inline void store_c(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                    const Phase<index_t>& ph, const GemmShape<index_t>& shape, index_t grp,
                                    index_t m, index_t n, index_t chunk, acc_t<scalar_t> value) {
  using acc = acc_t<scalar_t>;
  if constexpr (mode == Mode::kForward) {
    // n = (image, l): out[image][grp*Og + m][l]
    const index_t L = g.OH * g.OW;
    const index_t img = n / L, l = n % L;
    const index_t o = grp * g.Og + m;
    const acc b = args.bias ? static_cast<acc>(args.bias[o]) : acc(0);
    args.out[(img * g.O + o) * L + l] = static_cast<scalar_t>(value + b);
  } else if constexpr (mode == Mode::kGradInput) {
    // n = (image, p): grad_input[image][grp*Cg + m][p]
    const index_t HW = g.H * g.W;
    const index_t img = n / HW, p = n % HW;
    args.out[(img * g.C + grp * g.Cg + m) * HW + p] = static_cast<scalar_t>(value);
  } else if constexpr (mode == Mode::kGradInputPhased) {
    // n = (image, i, j): grad_input[image][grp*Cg + m][ih0 + sh*i][iw0 + sw*j]
    const index_t HW = ph.H * ph.W;
    const index_t img = n / HW, p = n % HW;
    const index_t ih = ph.ih0 + g.sh * (p / ph.W), iw = ph.iw0 + g.sw * (p % ph.W);
    args.out[((img * g.C + grp * g.Cg + m) * g.H + ih) * g.W + iw] = static_cast<scalar_t>(value);
  } else {
    // partial[chunk][grp*Og + m][n]: n runs over one weight row (c, kh, kw)
    args.partial[(chunk * g.O + grp * g.Og + m) * shape.N + n] = value;
  }
}

}  // namespace cuda
}  // namespace lenet_ext
