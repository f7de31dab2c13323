// conv2d on CUDA: forward, and one backward computing any subset of (input, weight, bias) gradients.
//
// Algorithms, as lenet_ext.backends.cuda_conv_algorithm chooses them:
//   "auto" (default)  the kernels below, verified on a GPU; the heuristic is `use_direct`; each family of
//                     the other choices joins "auto" once csrc/cuda/families.h lists a GPU run it passed;
//   "gemm"            the implicit GEMM for every pass, pipelined (float and double: cp.async copies into a
//                     ring of shared-memory stages, k tiles ahead of the products; 16-bit types: the next
//                     k tile's loads in registers), with a strided undilated input gradient split
//                     into stride phases (gemm_gather.h: no products with structural zeros); opt-in, as
//                     "direct";
//   "direct"          the direct kernels of conv2d_items.h for every pass (forward, input gradient with
//                     no taps that only meet a stride's structural zeros, weight gradient reduced in
//                     registers and per block). Not yet run on a GPU, so opt-in;
//   "tensor_cores"    for float16 and bfloat16 on sm_80 and later, the implicit GEMM on tensor cores
//                     (gemm_tc.cuh) for every pass; other dtypes and GPUs as "auto". Opt-in, as "direct".
// The kernels of "auto" and "gemm" (the heuristic is `use_direct` below):
//   * direct forward, for small channel counts like LeNet's (out channels per group <= 32 and
//     C/groups * KH * KW <= 512): one thread per output pixel computes kDirectOC output channels,
//     reading each input tap once and multiplying it by kDirectOC weights held in shared memory. A
//     64-row GEMM tile would be mostly idle for such narrow layers.
//   * implicit GEMM, for everything else, in three forms of one tiled kernel C[m][n] = sum_k A[m][k] B[k][n]:
//       forward        m = out channel, n = (image, oh, ow), k = (in channel, kh, kw); B is the input
//                      gathered on the fly (no im2col buffer);
//       grad input     m = in channel,  n = (image, ih, iw), k = (out channel, kh, kw); B gathers
//                      grad_output at the (oh, ow) that read (ih, iw) through tap (kh, kw) -- a gather, so
//                      no atomics;
//       grad weight    m = out channel, n = (in channel, kh, kw), k = (image, oh, ow); k is split into a
//                      fixed number of chunks (depending only on the shapes), each block writes its
//                      partial tile to a buffer, and a second kernel sums the chunks in order.
//     Tiles are kTileM x kTileN x kTileK in shared memory, each of the 256 threads holds a 4 x 4 block of
//     accumulators in registers, and the forward reads weight rows with float4 loads when they are
//     16-byte aligned. One grid covers (group, m tile, n tile). The kernel, its tile constants and its
//     thread mapping are in gemm.cuh.
//   * grad bias: one block per output channel, a fixed-order tree reduction.
// Every path is deterministic (no atomics), so torch.use_deterministic_algorithms(True) needs nothing.
//
// Layout: contiguous NCHW in and out (other layouts are copied once). Half types are stored in their
// dtype and accumulated in float; float64 in double.
//
// Where the code is: the entry points conv2d_forward_cuda and conv2d_backward_cuda, the direct forward
// and the bias reduction are in this file; the implicit GEMM's kernels in gemm.cuh (CUDA cores) and
// gemm_tc.cuh (tensor cores), what they gather and store per element in gemm_gather.h; the opt-in direct
// kernels' per-element code (work items) in conv2d_items.h, launched by items.cuh; the setting in
// settings.cpp.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "cuda/conv2d_items.h"
#include "cuda/families.h"
#include "cuda/gemm.cuh"
#include "cuda/gemm_tc.cuh"
#include "cuda/items.cuh"
#include "cuda/launch.cuh"
#include "cuda/geom.h"

namespace lenet_ext {
namespace {

using cuda::GemmArgs;
using cuda::GemmShape;
using cuda::kGemmThreads;
using cuda::kTileK;
using cuda::kTileM;
using cuda::kTileN;
using cuda::Mode;
using cuda::Phase;

using conv::kMaxWeightChunks;

// -------------------------------------------------------------------------------------- direct forward

constexpr int kDirectOC = 8;          // output channels per thread
constexpr int kDirectMaxOg = 32;      // the heuristic's limits (see the top of the file)
constexpr int64_t kDirectMaxK = 512;  // C/groups * KH * KW

// Grid: (pixel block, group, chunk of kDirectOC out channels) flattened into x.
template <typename scalar_t, typename index_t>
__global__ void conv2d_direct_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                                             const scalar_t* __restrict__ bias, scalar_t* __restrict__ out,
                                             Geom<index_t> g, index_t pixel_blocks, index_t oc_chunks) {
  using acc = acc_t<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc* w_s = reinterpret_cast<acc*>(smem_raw);  // [k][kDirectOC], k = (c, kh, kw)

  const index_t K = g.Cg * g.KH * g.KW;
  const index_t block = blockIdx.x;
  const index_t pixel_block = block % pixel_blocks;
  const index_t chunk = (block / pixel_blocks) % oc_chunks;
  const index_t grp = block / (pixel_blocks * oc_chunks);
  const index_t o0 = grp * g.Og + chunk * kDirectOC;  // first out channel of this chunk
  const int n_oc = static_cast<int>(imin<index_t>(kDirectOC, g.Og - chunk * kDirectOC));

  for (index_t i = threadIdx.x; i < K * kDirectOC; i += blockDim.x) {
    const index_t k = i / kDirectOC, j = i % kDirectOC;
    w_s[i] = j < n_oc ? static_cast<acc>(weight[(o0 + j) * K + k]) : acc(0);
  }
  __syncthreads();

  const index_t L = g.OH * g.OW;
  const index_t pixel = pixel_block * blockDim.x + threadIdx.x;  // (image, oh, ow)
  if (pixel >= g.N * L) {
    return;
  }
  const index_t img = pixel / L, l = pixel % L;
  const index_t oh = l / g.OW, ow = l % g.OW;
  const index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
  const scalar_t* xg = x + (img * g.C + grp * g.Cg) * g.H * g.W;

  acc sum[kDirectOC];
#pragma unroll
  for (int j = 0; j < kDirectOC; ++j) {
    sum[j] = 0;
  }
  for (index_t c = 0; c < g.Cg; ++c) {
    const scalar_t* plane = xg + c * g.H * g.W;
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
        const acc v = static_cast<acc>(plane[ih * g.W + iw]);
        const acc* wk = w_s + ((c * g.KH + kh) * g.KW + kw) * kDirectOC;
#pragma unroll
        for (int j = 0; j < kDirectOC; ++j) {
          sum[j] += v * wk[j];
        }
      }
    }
  }
  scalar_t* dst = out + (img * g.O + o0) * L + l;
#pragma unroll
  for (int j = 0; j < kDirectOC; ++j) {
    if (j < n_oc) {
      const acc b = bias ? static_cast<acc>(bias[o0 + j]) : acc(0);
      dst[j * L] = static_cast<scalar_t>(sum[j] + b);
    }
  }
}

// grad_bias[o] = sum over images and pixels of grad_output[n][o]: one block per channel, each thread a
// fixed strided subset, then a tree in shared memory. Block x is the channel.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(cuda::kBlock)
    conv2d_grad_bias_kernel(const scalar_t* __restrict__ grad, scalar_t* __restrict__ out, index_t N, index_t O,
                            index_t L) {
  using acc = acc_t<scalar_t>;
  __shared__ acc part[cuda::kBlock];
  const index_t o = blockIdx.x;
  acc sum = 0;
  for (index_t i = threadIdx.x; i < N * L; i += blockDim.x) {
    const index_t img = i / L, l = i % L;
    sum += static_cast<acc>(grad[(img * O + o) * L + l]);
  }
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int half = cuda::kBlock / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      part[threadIdx.x] += part[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[o] = static_cast<scalar_t>(part[0]);
  }
}

// ------------------------------------------------------------------------------------------ launchers

// The heuristic: narrow layers (few output channels per group, short dot products) go direct.
bool use_direct(const Conv2dParams& p) {
  return p.out_per_group() <= kDirectMaxOg && p.weight_row() <= kDirectMaxK;
}

// Block x of a GEMM launch covers (group, m tile, n tile); it must fit CUDA's grid limit.
template <typename index_t>
dim3 gemm_grid(const Geom<index_t>& g, index_t m_tiles, index_t n_tiles, int64_t chunks) {
  const int64_t blocks = static_cast<int64_t>(g.G) * m_tiles * n_tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "lenet_ext.conv2d: the problem needs ", blocks,
              " thread blocks, more than CUDA's grid allows");
  return dim3(static_cast<unsigned int>(blocks), static_cast<unsigned int>(chunks));
}

using cuda_families::Family;

// The pipelined GEMMs (gemm.cuh: asynchronous copies into a ring of shared-memory stages for float and
// double, the next k tile's loads in registers for the 16-bit types): "gemm" names them; "auto" takes
// them once cuda/families.h lists them.
bool staged_gemm() {
  return conv::cuda_takes(Family::kConvGemmPipelined);
}

static_assert(cuda::kTcTileM == kTileM && cuda::kTcTileN == kTileN && cuda::kTcTileK == kTileK,
              "the grid and the weight gradient's chunks are sized in tiles that both GEMMs share");

// Whether the current device has the tensor cores gemm_tc.cuh needs (sm_80: float16 and bfloat16 WMMA),
// asked of the driver once per device.
bool tensor_cores_available() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int8_t> known[kMaxDevices] = {};  // 0 not asked yet, 1 no, 2 yes
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= kMaxDevices) {
    return false;
  }
  if (known[device].load() == 0) {
    int major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    known[device].store(major >= 8 ? 2 : 1);
  }
  return known[device].load() == 2;
}

template <typename scalar_t>
bool use_tensor_cores() {
  constexpr bool half_type = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;
  return half_type && conv::cuda_takes(Family::kConvTensorCores) && tensor_cores_available();
}

// One launch of the implicit GEMM of `mode`: on tensor cores where use_tensor_cores says so, else on CUDA
// cores; under "gemm", float and double through the ring of asynchronous copies (conv2d_gemm_async_kernel),
// the 16-bit types register-staged.
template <Mode mode, typename scalar_t, typename index_t, bool kVecA = false>
void launch_gemm(const GemmArgs<scalar_t>& args, const Geom<index_t>& g, int64_t chunks, index_t k_chunk,
                 const Phase<index_t>& ph = {}) {
  const GemmShape<index_t> s = cuda::gemm_shape<mode, index_t>(g, ph);
  const index_t m_tiles = static_cast<index_t>(ceil_div(s.M, kTileM));
  const index_t n_tiles = static_cast<index_t>(ceil_div(s.N, kTileN));
  const dim3 grid = gemm_grid(g, m_tiles, n_tiles, chunks);
  const cudaStream_t stream = cuda::current_stream();
  if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
    if (use_tensor_cores<scalar_t>()) {
      // the forward's weight rows, copied with cp.async 8 elements at a time where they are 16-byte pieces:
      // rows of a multiple of 8, an aligned weight, and k chunks starting at multiples of 8
      const bool async_a = mode == Mode::kForward && s.K % cuda::kTcPiece == 0 && k_chunk % cuda::kTcPiece == 0 &&
                           reinterpret_cast<uintptr_t>(args.weight) % 16 == 0;
      if (async_a) {
        cuda::conv2d_gemm_tc_kernel<mode, scalar_t, index_t, mode == Mode::kForward>
            <<<grid, cuda::kTcThreads, 0, stream>>>(args, g, ph, m_tiles, n_tiles, k_chunk);
      } else {
        cuda::conv2d_gemm_tc_kernel<mode, scalar_t, index_t, false>
            <<<grid, cuda::kTcThreads, 0, stream>>>(args, g, ph, m_tiles, n_tiles, k_chunk);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  if (staged_gemm()) {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
      cuda::conv2d_gemm_async_kernel<mode, scalar_t, index_t, cuda::kAsyncStages<scalar_t>>
          <<<grid, kGemmThreads, 0, stream>>>(args, g, ph, m_tiles, n_tiles, k_chunk);
    } else {
      cuda::conv2d_gemm_kernel<mode, scalar_t, index_t, kVecA, true>
          <<<grid, kGemmThreads, 0, stream>>>(args, g, ph, m_tiles, n_tiles, k_chunk);
    }
  } else {
    cuda::conv2d_gemm_kernel<mode, scalar_t, index_t, kVecA, false>
        <<<grid, kGemmThreads, 0, stream>>>(args, g, ph, m_tiles, n_tiles, k_chunk);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The strided input gradient split into stride phases ("gemm" and "tensor_cores" name it; "auto" takes it
// once cuda/families.h lists it): strided and undilated convolutions, whose input gradient otherwise
// multiplies (s_h s_w - 1) / (s_h s_w) of its terms by structural zeros.
bool use_phases(const Conv2dParams& p) {
  const Window2d& w = p.win;
  return conv::cuda_takes(Family::kConvPhased) && (w.stride[0] > 1 || w.stride[1] > 1) && w.dilation[0] == 1 &&
         w.dilation[1] == 1;
}

template <typename scalar_t, typename index_t>
void conv2d_forward_impl(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                         const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  const scalar_t* b = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  const conv::CudaAlgorithm algorithm = conv::cuda_conv_algorithm();
  if (algorithm == conv::CudaAlgorithm::kDirect) {
    conv::direct_forward<scalar_t, index_t>(CudaRunner{}, x, w, bias, out, p);
    return;
  }
  const bool as_auto = algorithm == conv::CudaAlgorithm::kAuto ||
                       (algorithm == conv::CudaAlgorithm::kTensorCores && !use_tensor_cores<scalar_t>());
  if (as_auto && use_direct(p)) {
    const int64_t K = static_cast<int64_t>(g.Cg) * g.KH * g.KW;
    const int64_t pixel_blocks = ceil_div(static_cast<int64_t>(g.N) * g.OH * g.OW, cuda::kBlock);
    const int64_t oc_chunks = ceil_div(g.Og, kDirectOC);
    const int64_t blocks = pixel_blocks * oc_chunks * g.G;
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "lenet_ext.conv2d: the problem needs ", blocks,
                " thread blocks, more than CUDA's grid allows");
    const size_t smem = static_cast<size_t>(K) * kDirectOC * sizeof(acc_t<scalar_t>);
    conv2d_direct_forward_kernel<scalar_t, index_t>
        <<<static_cast<unsigned int>(blocks), cuda::kBlock, smem, cuda::current_stream()>>>(
            x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), b, out.mutable_data_ptr<scalar_t>(), g,
            static_cast<index_t>(pixel_blocks), static_cast<index_t>(oc_chunks));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  GemmArgs<scalar_t> args{x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), nullptr, b,
                          out.mutable_data_ptr<scalar_t>(), nullptr};
  const index_t K = cuda::gemm_shape<Mode::kForward, index_t>(g).K;
  if constexpr (std::is_same_v<scalar_t, float>) {
    const bool aligned = reinterpret_cast<uintptr_t>(args.weight) % 16 == 0 && K % 4 == 0;
    if (aligned) {
      launch_gemm<Mode::kForward, scalar_t, index_t, true>(args, g, 1, K);
      return;
    }
  }
  launch_gemm<Mode::kForward, scalar_t, index_t>(args, g, 1, K);
}

template <typename scalar_t, typename index_t>
void conv2d_grad_input_impl(const at::Tensor& go, const at::Tensor& w, at::Tensor& gx, const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  GemmArgs<scalar_t> args{nullptr, w.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), nullptr,
                          gx.mutable_data_ptr<scalar_t>(), nullptr};
  if (use_phases(p)) {
    // one GEMM per stride phase, each over only the taps that reach it (gemm_gather.h); together they
    // write every input pixel once (a phase that no tap reaches writes zeros: K = 0)
    for (index_t ry = 0; ry < g.sh; ++ry) {
      for (index_t rx = 0; rx < g.sw; ++rx) {
        const Phase<index_t> ph = cuda::phase_of(g, ry, rx);
        if (ph.H == 0 || ph.W == 0) {
          continue;
        }
        const index_t K = cuda::gemm_shape<Mode::kGradInputPhased, index_t>(g, ph).K;
        launch_gemm<Mode::kGradInputPhased, scalar_t, index_t>(args, g, 1, K, ph);
      }
    }
    return;
  }
  launch_gemm<Mode::kGradInput, scalar_t, index_t>(args, g, 1, cuda::gemm_shape<Mode::kGradInput, index_t>(g).K);
}

// Split-K: enough chunks to give the GPU ~1024 blocks, each chunk at least 8 k tiles long, at most
// kMaxWeightChunks. The count depends only on the shapes, so the summation order is fixed.
int64_t grad_weight_chunks(int64_t tiles, int64_t K) {
  const int64_t wanted = ceil_div(1024, tiles);
  const int64_t most = std::max<int64_t>(1, K / (8 * kTileK));
  return std::clamp<int64_t>(wanted, 1, std::min<int64_t>(kMaxWeightChunks, most));
}

template <typename scalar_t, typename index_t>
void conv2d_grad_weight_impl(const at::Tensor& go, const at::Tensor& x, at::Tensor& gw, const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  const GemmShape<index_t> s = cuda::gemm_shape<Mode::kGradWeight, index_t>(g);
  const int64_t tiles = static_cast<int64_t>(g.G) * ceil_div(s.M, kTileM) * ceil_div(s.N, kTileN);
  int64_t chunks = grad_weight_chunks(tiles, s.K);
  const int64_t k_chunk = ceil_div(ceil_div(s.K, chunks), kTileK) * kTileK;  // whole k tiles per chunk
  chunks = ceil_div(s.K, k_chunk);
  const auto acc_dtype = std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
  at::Tensor partial = at::empty({chunks, gw.numel()}, gw.options().dtype(acc_dtype));
  GemmArgs<scalar_t> args{x.const_data_ptr<scalar_t>(), nullptr, go.const_data_ptr<scalar_t>(), nullptr, nullptr,
                          partial.mutable_data_ptr<acc_t<scalar_t>>()};
  launch_gemm<Mode::kGradWeight, scalar_t, index_t>(args, g, chunks, static_cast<index_t>(k_chunk));
  CudaRunner{}(conv::SumChunks<scalar_t>{partial.const_data_ptr<acc_t<scalar_t>>(), gw.mutable_data_ptr<scalar_t>(),
                                        gw.numel(), chunks},
               gw.numel());
}

template <typename scalar_t, typename index_t>
void conv2d_grad_bias_impl(const at::Tensor& go, at::Tensor& gb, const Conv2dParams& p) {
  const Geom<index_t> g = geom_of<index_t>(p);
  conv2d_grad_bias_kernel<scalar_t, index_t>
      <<<static_cast<unsigned int>(p.out_channels), cuda::kBlock, 0, cuda::current_stream()>>>(
          go.const_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(), g.N, g.O, g.OH * g.OW);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ----------------------------------------------------------------------------------------- operators

at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor out = at::empty({p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, input.options());
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  if (out.numel() == 0) {
    return out.contiguous(fmt);
  }
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv2d_forward_cuda", [&] {
    with_index_type(conv::fits_int32(p), [&](auto index_zero) {
      conv2d_forward_impl<scalar_t, decltype(index_zero)>(x, w, b ? &*b : nullptr, out, p);
    });
  });
  return out.contiguous(fmt);
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor go = grad_output.contiguous();
  const bool small = conv::fits_int32(p);
  const bool no_terms = go.numel() == 0;  // no output pixels: every gradient is zero
  // the direct kernels' gradients: for every layer when named, for narrow ones when "auto" takes them
  const bool direct = conv::cuda_conv_algorithm() == conv::CudaAlgorithm::kDirect ||
                      (conv::cuda_takes(Family::kConvDirect) && use_direct(p));
  std::optional<at::Tensor> gx, gw, gb;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_backward_cuda", [&] {
    with_index_type(small, [&](auto index_zero) {
      using index_t = decltype(index_zero);
      if (output_mask[0]) {
        gx = no_terms ? at::zeros(input.sizes(), input.options()) : at::empty(input.sizes(), input.options());
        if (!no_terms && gx->numel() > 0) {
          if (direct) {
            conv::direct_grad_input<scalar_t, index_t>(CudaRunner{}, go, weight.contiguous(), *gx, p);
          } else {
            conv2d_grad_input_impl<scalar_t, index_t>(go, weight.contiguous(), *gx, p);
          }
        }
      }
      if (output_mask[1]) {
        gw = no_terms ? at::zeros(weight.sizes(), weight.options()) : at::empty(weight.sizes(), weight.options());
        if (!no_terms && gw->numel() > 0) {
          if (direct) {
            conv::direct_grad_weight<scalar_t, index_t>(CudaRunner{}, go, input.contiguous(), *gw, p);
          } else {
            conv2d_grad_weight_impl<scalar_t, index_t>(go, input.contiguous(), *gw, p);
          }
        }
      }
      if (output_mask[2]) {
        gb = no_terms ? at::zeros({p.out_channels}, weight.options()) : at::empty({p.out_channels}, weight.options());
        if (!no_terms && gb->numel() > 0) {
          conv2d_grad_bias_impl<scalar_t, index_t>(go, *gb, p);
        }
      }
    });
  });
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  return {gx ? gx->contiguous(fmt) : gx, gw ? gw->contiguous(fmt) : gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CUDA, m) {
  m.impl("conv2d_forward", &conv2d_forward_cuda);
  m.impl("conv2d_backward", &conv2d_backward_cuda);
}

}  // namespace lenet_ext
