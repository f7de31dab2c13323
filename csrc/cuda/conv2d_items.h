// conv2d's direct CUDA kernels, as work items written for host and device alike (as pool2d_items.h is
// for pooling), with the host-side drivers that size and run them. csrc/cuda/conv2d.cu runs the drivers
// with the GPU runner (cuda/items.cuh); the test operator lenet_ext_testing::cuda_conv2d_direct_on_host
// (testing/conv2d_on_host.cpp) runs them with the host runner (testing/items_host.h), so the tests check
// every item's index arithmetic on machines without a GPU.
//
// These are the kernels for narrow layers, where a 64 x 64 GEMM tile is mostly idle: LeNet's convs,
// depthwise convs (one channel per group), the 3-channel stem's input gradient. Each pass gathers, so
// none needs atomics, and every sum has a fixed order:
//   forward      one item per (image, group, run of V output channels, output pixel): the pixel's
//                window, read once per tap and multiplied by V weights;
//   grad input   one item per (image, group, run of V input channels, input pixel): the sum over the
//                output pixels whose window covers it. Along each dimension only the taps k with
//                (i + pad - k * dilation) % stride == 0 reach an output, every s / gcd(s, d)-th tap
//                from the first one: a strided conv's input gradient skips the taps that would multiply
//                a structural zero (CUTLASS's strided dgrad splits the input into phases for the same
//                reason);
//   grad weight  blocks of kThreads threads, one per (chunk of output pixels, group, run of VO output
//                channels, run of VT taps); each thread sums VO x VT products over its share of the
//                chunk's pixels, the block adds up its threads (the runner), and the chunks' partial
//                weights are summed in chunk order by a second pass (SumChunks).
//
// Which passes take these kernels is lenet_ext.backends.cuda_conv_algorithm's to say (conv2d.cu). They
// have not yet run on a GPU, so only "direct" selects them; "auto" takes their gradients for narrow layers
// once csrc/cuda/families.h lists them.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>

#include "checks.h"
#include "cuda/families.h"
#include "cuda/geom.h"

namespace lenet_ext {
namespace conv {

// lenet_ext.backends.cuda_conv_algorithm: "auto" (the kernels verified on a GPU, conv2d.cu's heuristic),
// "gemm" (implicit GEMM for every pass), "direct" (the kernels of this file for every pass) or
// "tensor_cores" (the implicit GEMM on tensor cores for float16 and bfloat16, cuda/gemm_tc.cuh).
enum class CudaAlgorithm : int { kAuto = 0, kGemm = 1, kDirect = 2, kTensorCores = 3 };
CudaAlgorithm cuda_conv_algorithm();  // cuda/settings.cpp

// Whether the setting takes an opt-in conv family of cuda/families.h (conv_gemm_pipelined, conv_phased,
// conv_tensor_cores, conv_direct) for the convolutions it applies to: named by the setting, or "auto"
// and verified (cuda/settings.cpp).
bool cuda_takes(cuda_families::Family family);

// The weight gradient's split-K (GEMM and direct alike): at most this many chunks of output pixels, each
// summed into its own copy of the weight and added up in order afterwards. The cap bounds that buffer at
// 64 weights, which the int32 index check allows for.
constexpr int64_t kMaxWeightChunks = 64;

// True when int32 indices are safe for every conv kernel of this shape (geom.h's rule).
inline bool fits_int32(const Conv2dParams& p) {
  const int64_t in_numel = p.batch * p.in_channels * p.win.in[0] * p.win.in[1];
  const int64_t out_numel = p.batch * p.out_channels * p.win.out[0] * p.win.out[1];
  const int64_t w_numel = p.out_channels * p.weight_row();
  return lenet_ext::fits_int32({in_numel, out_numel, w_numel * kMaxWeightChunks, window_reach(p.win, 0),
                                window_reach(p.win, 1)});
}

// ------------------------------------------------------------------------------------------ the items

// The first tap k < kernel through which input position t (= i + pad before) is read, i.e. with
// (t - k * d) % s == 0; `kernel` if there is none. Such taps repeat every `period` = s / gcd(s, d).
template <typename index_t>
C10_HOST_DEVICE inline index_t first_reaching_tap(index_t t, index_t s, index_t d, index_t period, index_t kernel) {
  const index_t last = imin(period, kernel);
  for (index_t k = 0; k < last; ++k) {
    if ((t - k * d) % s == 0) {
      return k;
    }
  }
  return kernel;
}

// Where a forward or input-gradient item is: i = (((image * G + group) * runs + run) * rows + y) * cols + x,
// over a run of channels of one group and one pixel (y, x) of a rows x cols plane.
template <typename index_t>
struct PixelRun {
  index_t img, grp, run, y, x;

  static int64_t count(const Geom<index_t>& g, index_t runs, index_t rows, index_t cols) {
    return static_cast<int64_t>(g.N) * g.G * runs * rows * cols;
  }

  C10_HOST_DEVICE static PixelRun of(index_t i, const Geom<index_t>& g, index_t runs, index_t rows, index_t cols) {
    PixelRun at;
    at.x = i % cols;
    index_t r = i / cols;
    at.y = r % rows;
    r /= rows;
    at.run = r % runs;
    r /= runs;
    at.grp = r % g.G;
    at.img = r / g.G;
    return at;
  }
};

template <typename scalar_t, typename index_t, int V>
struct DirectForward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* weight;
  const scalar_t* bias;  // may be null
  scalar_t* out;
  Geom<index_t> g;
  index_t runs;  // runs of V output channels per group

  static int64_t items(const Geom<index_t>& g, index_t runs) {
    return PixelRun<index_t>::count(g, runs, g.OH, g.OW);
  }

  // one run of output channels at output pixel (oh, ow)
  C10_HOST_DEVICE void operator()(index_t i) const {
    const PixelRun<index_t> at = PixelRun<index_t>::of(i, g, runs, g.OH, g.OW);
    const index_t img = at.img, grp = at.grp, run = at.run, oh = at.y, ow = at.x;
    const index_t o0 = grp * g.Og + run * V;
    const int n = static_cast<int>(imin<index_t>(V, g.Og - run * V));
    const index_t taps = g.Cg * g.KH * g.KW;
    const scalar_t* xg = x + (img * g.C + grp * g.Cg) * g.H * g.W;
    const scalar_t* w0 = weight + o0 * taps;
    const index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;

    acc sum[V] = {};
    for (index_t c = 0; c < g.Cg; ++c) {
      for (index_t kh = 0; kh < g.KH; ++kh) {
        const index_t ih = ih0 + kh * g.dh;
        if (ih < 0 || ih >= g.H) {
          continue;
        }
        for (index_t kw = 0; kw < g.KW; ++kw) {
          const index_t iw = iw0 + kw * g.dw;
          if (iw < 0 || iw >= g.W) {
            continue;
          }
          const acc v = static_cast<acc>(xg[(c * g.H + ih) * g.W + iw]);
          const index_t tap = (c * g.KH + kh) * g.KW + kw;
LENET_EXT_UNROLL
          for (int j = 0; j < V; ++j) {
            if (j < n) {
              sum[j] += v * static_cast<acc>(w0[j * taps + tap]);
            }
          }
        }
      }
    }
    const index_t L = g.OH * g.OW;
    scalar_t* dst = out + (img * g.O + o0) * L + oh * g.OW + ow;
LENET_EXT_UNROLL
    for (int j = 0; j < V; ++j) {
      if (j < n) {
        dst[j * L] = static_cast<scalar_t>(sum[j] + (bias ? static_cast<acc>(bias[o0 + j]) : acc(0)));
      }
    }
  }
};

template <typename scalar_t, typename index_t, int V>
struct DirectGradInput {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;
  const scalar_t* grad;  // grad_output
  const scalar_t* weight;
  scalar_t* grad_input;
  Geom<index_t> g;
  index_t runs;                // runs of V input channels per group
  index_t period_h, period_w;  // s / gcd(s, d) per dimension

  static int64_t items(const Geom<index_t>& g, index_t runs) {
    return PixelRun<index_t>::count(g, runs, g.H, g.W);
  }

  // one run of input channels at input pixel (ih, iw)
  C10_HOST_DEVICE void operator()(index_t i) const {
    const PixelRun<index_t> at = PixelRun<index_t>::of(i, g, runs, g.H, g.W);
    const index_t img = at.img, grp = at.grp, run = at.run, ih = at.y, iw = at.x;
    const index_t c0 = run * V;
    const int n = static_cast<int>(imin<index_t>(V, g.Cg - c0));
    const index_t khw = g.KH * g.KW;
    const index_t th0 = ih + g.ph, tw0 = iw + g.pw;
    const index_t kh0 = first_reaching_tap(th0, g.sh, g.dh, period_h, g.KH);
    const index_t kw0 = first_reaching_tap(tw0, g.sw, g.dw, period_w, g.KW);

    acc sum[V] = {};
    for (index_t o = 0; o < g.Og; ++o) {
      const index_t oc = grp * g.Og + o;
      const scalar_t* gp = grad + (img * g.O + oc) * g.OH * g.OW;
      const scalar_t* wp = weight + (oc * g.Cg + c0) * khw;
      for (index_t kh = kh0; kh < g.KH; kh += period_h) {
        const index_t th = th0 - kh * g.dh;
        if (th < 0) {
          break;  // later taps reach further up
        }
        const index_t oh = th / g.sh;
        if (oh >= g.OH) {
          continue;
        }
        for (index_t kw = kw0; kw < g.KW; kw += period_w) {
          const index_t tw = tw0 - kw * g.dw;
          if (tw < 0) {
            break;
          }
          const index_t ow = tw / g.sw;
          if (ow >= g.OW) {
            continue;
          }
          const acc v = static_cast<acc>(gp[oh * g.OW + ow]);
          const index_t tap = kh * g.KW + kw;
LENET_EXT_UNROLL
          for (int j = 0; j < V; ++j) {
            if (j < n) {
              sum[j] += v * static_cast<acc>(wp[j * khw + tap]);
            }
          }
        }
      }
    }
    const index_t HW = g.H * g.W;
    scalar_t* dst = grad_input + (img * g.C + grp * g.Cg + c0) * HW + ih * g.W + iw;
LENET_EXT_UNROLL
    for (int j = 0; j < V; ++j) {
      if (j < n) {
        dst[j * HW] = static_cast<scalar_t>(sum[j]);
      }
    }
  }
};

// A block of work for run.block_sums: the partial weight gradient of VO output channels x VT taps
// (weight row positions (c, kh, kw)) over one chunk of output pixels.
template <typename scalar_t, typename index_t, int VO, int VT>
struct DirectGradWeight {
  using index_type = index_t;
  using acc_type = acc_t<scalar_t>;
  using acc = acc_type;
  static constexpr int kThreads = 256;
  static constexpr int kValues = VO * VT;  // sum r is (output channel o0 + r / VT, tap t0 + r % VT)
  const scalar_t* grad;  // grad_output
  const scalar_t* x;
  acc* partial;  // [chunk][O][Cg * KH * KW]
  Geom<index_t> g;
  index_t o_runs, t_runs;  // runs of VO output channels per group, of VT taps per weight row
  index_t chunk_pixels;    // output pixels (image, oh, ow) per chunk

  struct Where {
    index_t chunk, grp, o0, t0;
    int n_o, n_t;
  };

  // block = ((chunk * G + group) * o_runs + o_run) * t_runs + t_run
  C10_HOST_DEVICE Where where(index_t block) const {
    const index_t t_run = block % t_runs;
    index_t r = block / t_runs;
    const index_t o_run = r % o_runs;
    r /= o_runs;
    const index_t grp = r % g.G, chunk = r / g.G;
    const index_t taps = g.Cg * g.KH * g.KW;
    return {chunk, grp, o_run * VO, t_run * VT, static_cast<int>(imin<index_t>(VO, g.Og - o_run * VO)),
            static_cast<int>(imin<index_t>(VT, taps - t_run * VT))};
  }

  C10_HOST_DEVICE void thread_sums(index_t block, int tid, acc (&part)[kValues]) const {
    const Where at = where(block);
    // each tap's input plane offset and its (row, column) offset from the output pixel's window origin
    index_t plane[VT], dy[VT], dx[VT];
    const index_t khw = g.KH * g.KW;
LENET_EXT_UNROLL
    for (int t = 0; t < VT; ++t) {
      const index_t tap = at.t0 + imin<index_t>(t, at.n_t - 1);  // past the row's end: a copy, never stored
      const index_t c = tap / khw, k = tap % khw;
      plane[t] = c * g.H * g.W;
      dy[t] = (k / g.KW) * g.dh - g.ph;
      dx[t] = (k % g.KW) * g.dw - g.pw;
    }
LENET_EXT_UNROLL
    for (int r = 0; r < kValues; ++r) {
      part[r] = 0;
    }
    const index_t L = g.OH * g.OW;
    const index_t begin = at.chunk * chunk_pixels;
    const index_t end = imin<index_t>(g.N * L, begin + chunk_pixels);
    for (index_t px = begin + tid; px < end; px += kThreads) {
      const index_t img = px / L, l = px % L;
      const index_t y = (l / g.OW) * g.sh, xo = (l % g.OW) * g.sw;
      acc go[VO];
      const scalar_t* gp = grad + (img * g.O + at.grp * g.Og + at.o0) * L + l;
LENET_EXT_UNROLL
      for (int j = 0; j < VO; ++j) {
        go[j] = j < at.n_o ? static_cast<acc>(gp[j * L]) : acc(0);
      }
      const scalar_t* xp = x + (img * g.C + at.grp * g.Cg) * g.H * g.W;
LENET_EXT_UNROLL
      for (int t = 0; t < VT; ++t) {
        const index_t ih = y + dy[t], iw = xo + dx[t];
        if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
          continue;
        }
        const acc v = static_cast<acc>(xp[plane[t] + ih * g.W + iw]);
LENET_EXT_UNROLL
        for (int j = 0; j < VO; ++j) {
          part[j * VT + t] += go[j] * v;
        }
      }
    }
  }

  C10_HOST_DEVICE void store(index_t block, int r, acc sum) const {
    const Where at = where(block);
    const int j = r / VT, t = r % VT;
    if (j < at.n_o && t < at.n_t) {
      const int64_t w_numel = static_cast<int64_t>(g.O) * g.Cg * g.KH * g.KW;
      const index_t w_index = (at.grp * g.Og + at.o0 + j) * (g.Cg * g.KH * g.KW) + at.t0 + t;
      partial[at.chunk * w_numel + w_index] = sum;
    }
  }
};

// out[i] = sum over chunks of partial[chunk][i], in chunk order (the weight gradients' second pass).
template <typename scalar_t>
struct SumChunks {
  using index_type = int64_t;  // cheap next to the first pass; any weight size
  const acc_t<scalar_t>* partial;
  scalar_t* out;
  int64_t numel, chunks;

  C10_HOST_DEVICE void operator()(int64_t i) const {
    acc_t<scalar_t> sum = 0;
    for (int64_t s = 0; s < chunks; ++s) {
      sum += partial[s * numel + i];
    }
    out[i] = static_cast<scalar_t>(sum);
  }
};

// ---------------------------------------------------------------------------------------- the drivers
// Each takes contiguous NCHW tensors with at least one element in every operand and result, runs on
// `run` (HostRunner or CudaRunner), and writes its result in place.

// V, the channels an item computes: 1 where a group has one channel (depthwise), else up to 8.
template <typename F>
void with_channel_run(int64_t channels, const F& f) {
  if (channels == 1) {
    f(std::integral_constant<int, 1>{});
  } else if (channels <= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

template <typename scalar_t, typename index_t, typename Runner>
void direct_forward(const Runner& run, const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias,
                    at::Tensor& out, const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  with_channel_run(p.out_per_group(), [&](auto v) {
    constexpr int V = decltype(v)::value;
    const auto runs = static_cast<index_t>(ceil_div(p.out_per_group(), V));
    const DirectForward<scalar_t, index_t, V> op{x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                                 bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                                                 out.mutable_data_ptr<scalar_t>(), g, runs};
    run(op, op.items(g, runs));
  });
}

template <typename scalar_t, typename index_t, typename Runner>
void direct_grad_input(const Runner& run, const at::Tensor& go, const at::Tensor& w, at::Tensor& gx,
                       const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  auto period = [](int64_t s, int64_t d) { return static_cast<index_t>(s / std::gcd(s, d)); };
  with_channel_run(p.in_per_group(), [&](auto v) {
    constexpr int V = decltype(v)::value;
    const auto runs = static_cast<index_t>(ceil_div(p.in_per_group(), V));
    const DirectGradInput<scalar_t, index_t, V> op{
        go.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g, runs,
        period(p.win.stride[0], p.win.dilation[0]), period(p.win.stride[1], p.win.dilation[1])};
    run(op, op.items(g, runs));
  });
}

// Blocks the direct weight gradient aims for (a few per SM of a large GPU), and the fewest output pixels
// a thread sums per chunk; the chunk count depends only on the shapes, so the summation order is fixed.
constexpr int64_t kDirectWeightBlocks = 1024;
constexpr int64_t kMinPixelsPerThread = 4;

template <typename scalar_t, typename index_t, typename Runner>
void direct_grad_weight(const Runner& run, const at::Tensor& go, const at::Tensor& x, at::Tensor& gw,
                        const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  auto launch = [&](auto vo, auto vt) {
    constexpr int VO = decltype(vo)::value, VT = decltype(vt)::value;
    using Op = DirectGradWeight<scalar_t, index_t, VO, VT>;
    const int64_t o_runs = ceil_div(p.out_per_group(), VO), t_runs = ceil_div(p.weight_row(), VT);
    const int64_t tiles = p.groups * o_runs * t_runs;
    const int64_t pixels = p.batch * p.win.out[0] * p.win.out[1];
    const int64_t most = std::max<int64_t>(1, ceil_div(pixels, Op::kThreads * kMinPixelsPerThread));
    const int64_t wanted = std::clamp<int64_t>(ceil_div(kDirectWeightBlocks, tiles), 1, most);
    const int64_t chunk_pixels = ceil_div(pixels, std::min(wanted, kMaxWeightChunks));
    const int64_t chunks = ceil_div(pixels, chunk_pixels);
    const auto acc_dtype = std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
    at::Tensor partial = at::empty({chunks, gw.numel()}, gw.options().dtype(acc_dtype));
    const Op op{go.const_data_ptr<scalar_t>(),
                x.const_data_ptr<scalar_t>(),
                partial.mutable_data_ptr<acc_t<scalar_t>>(),
                g,
                static_cast<index_t>(o_runs),
                static_cast<index_t>(t_runs),
                static_cast<index_t>(chunk_pixels)};
    run.block_sums(op, chunks * tiles);
    run(SumChunks<scalar_t>{partial.const_data_ptr<acc_t<scalar_t>>(), gw.mutable_data_ptr<scalar_t>(), gw.numel(),
                            chunks},
        gw.numel());
  };
  // one output channel per group (depthwise): all the registers go to taps
  if (p.out_per_group() == 1) {
    launch(std::integral_constant<int, 1>{}, std::integral_constant<int, 16>{});
  } else {
    launch(std::integral_constant<int, 4>{}, std::integral_constant<int, 8>{});
  }
}

}  // namespace conv
}  // namespace lenet_ext
