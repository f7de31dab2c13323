// The implicit GEMM of gemm.cuh on tensor cores, for float16 and bfloat16 (sm_80 and later): the same
// three modes, the same gathers (load_a, load_b) and the same epilogue (store_c), with the tile's
// products done by WMMA's 16 x 16 x 16 matrix multiply-accumulate in float.
//
// A block of kTcThreads (4 warps) computes a kTcTileM x kTcTileN tile of C: warp (wy, wx) owns the
// 32 x 32 quarter at rows 32 wy, columns 32 wx, as 2 x 2 accumulator fragments. Per step of kTcTileK in
// k, the threads fill the A tile (kTcTileM x kTcTileK) and the B tile (kTcTileK x kTcTileN) of one of two
// shared-memory stages in the operands' 16-bit type (the gathered values are 16-bit numbers already: no
// rounding), while each warp multiplies its fragments from the other stage: the forward's weight rows
// arrive by cp.async where they are aligned, everything else is gathered into registers during the
// products and stored after them. At the end the fragments go through shared memory as floats to the
// threads, which write C as gemm.cuh's epilogue does (bias, grad_input or the weight gradient's partial).
//
// Opt-in (lenet_ext.backends.cuda_conv_algorithm("tensor_cores")) until a GPU run has passed its tests.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cuda_pipeline.h>

#include <type_traits>

#include "cuda/gemm.cuh"

namespace lenet_ext {
namespace cuda {

constexpr int kTcTileM = 64;
constexpr int kTcTileN = 64;
constexpr int kTcTileK = 16;
constexpr int kWmma = 16;             // WMMA's m = n = k for 16-bit operands
constexpr int kTcWarpTile = 32;       // each warp: 32 x 32 of C, 2 x 2 fragments
constexpr int kTcThreads = 4 * 32;    // (kTcTileM / kTcWarpTile) x (kTcTileN / kTcWarpTile) warps
constexpr int kTcLdA = kTcTileK + 8;  // shared-memory row lengths: multiples of 8 (WMMA's rule for 16-bit
constexpr int kTcLdB = kTcTileN + 8;  // types), padded against bank conflicts
constexpr int kTcLdC = kTcTileN + 4;  // floats: a multiple of 4

static_assert(kTcTileM % kTcWarpTile == 0 && kTcTileN % kTcWarpTile == 0 && kTcWarpTile % kWmma == 0);
static_assert(kTcThreads == (kTcTileM / kTcWarpTile) * (kTcTileN / kTcWarpTile) * 32, "one warp per quarter");
static_assert(kTcTileK == kWmma, "one WMMA k step per tile");
static_assert((kTcTileM * kTcTileK) % kTcThreads == 0 && (kTcTileK * kTcTileN) % kTcThreads == 0,
              "whole loads per thread");

// The CUDA type WMMA takes for a 16-bit c10 type.
template <typename scalar_t>
struct WmmaType;
template <>
struct WmmaType<c10::Half> {
  using type = __half;
  static __device__ __forceinline__ type from_float(float v) { return __float2half(v); }
};
template <>
struct WmmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
  static __device__ __forceinline__ type from_float(float v) { return __float2bfloat16(v); }
};

// Two shared-memory stages: the products of k tile i read stage i % 2 while tile i + 1 fills the other.
// kAsyncA: A is the forward's weight rows, 16-byte aligned with K a multiple of 8 (conv2d.cu checks), so
// each thread copies one 8-element piece of the A tile with cp.async, with no registers; the rest (B
// always, A otherwise) is gathered into registers during the products and stored after them. One
// barrier per k tile.
constexpr int kTcStages = 2;
constexpr int kTcPiece = 8;  // 16-bit elements per 16-byte cp.async
static_assert(kTcTileM * kTcTileK == kTcPiece * kTcThreads, "kAsyncA: one piece of the A tile per thread");
static_assert((kTcLdA * 2) % 16 == 0 && kTcTileK % kTcPiece == 0, "kAsyncA: 16-byte aligned pieces in a_s");

template <Mode mode, typename scalar_t, typename index_t, bool kAsyncA = false>
__global__ void __launch_bounds__(kTcThreads)
    conv2d_gemm_tc_kernel(GemmArgs<scalar_t> args, Geom<index_t> g, Phase<index_t> ph, index_t m_tiles,
                          index_t n_tiles, index_t k_chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static_assert(!kAsyncA || mode == Mode::kForward, "only the forward's A is whole weight rows");
  namespace wmma = nvcuda::wmma;
  using T = typename WmmaType<scalar_t>::type;
  __shared__ __align__(32) T a_s[kTcStages][kTcTileM * kTcLdA];  // [m][k]
  __shared__ __align__(32) T b_s[kTcStages][kTcTileK * kTcLdB];  // [k][n]
  __shared__ __align__(32) float c_s[kTcTileM * kTcLdC];

  const GemmShape<index_t> shape = gemm_shape<mode, index_t>(g, ph);
  const GemmTile<index_t> t = gemm_tile<index_t, kTcTileM, kTcTileN>(shape, m_tiles, n_tiles, k_chunk);

  const int tid = threadIdx.x, warp = tid / 32;
  const int wy = warp / (kTcTileN / kTcWarpTile), wx = warp % (kTcTileN / kTcWarpTile);
  // B loads: thread t gathers column t % kTcTileN, k rows t / kTcTileN + (kTcThreads / kTcTileN) * i
  constexpr int kBRows = kTcThreads / kTcTileN;
  constexpr int kAPerThread = kTcTileM * kTcTileK / kTcThreads, kBPerThread = kTcTileK / kBRows;
  const int b_col = tid % kTcTileN, b_k = tid / kTcTileN;
  const Column<index_t> col = column_of<mode, index_t>(g, ph, t.grp, t.n0 + b_col, shape.N);

  // the thread's registers for one k tile: its gathered A elements (unless kAsyncA) and B elements
  struct Stage {
    float a[kAPerThread];
    float b[kBPerThread];
  };
  auto gather = [&](index_t k0, Stage& st) {
    if constexpr (!kAsyncA) {
      // A element e = (row, kk) = (e / kTcTileK, e % kTcTileK), e = tid + kTcThreads * i
#pragma unroll
      for (int i = 0; i < kAPerThread; ++i) {
        const int e = tid + kTcThreads * i;
        const index_t m = t.m0 + e / kTcTileK, k = k0 + e % kTcTileK;
        st.a[i] = m < shape.M && k < t.k_end ? load_a<mode, scalar_t, index_t>(args, g, ph, t.grp, m, k) : 0.f;
      }
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const index_t k = k0 + b_k + kBRows * i;
      st.b[i] = col.valid && k < t.k_end ? load_b<mode, scalar_t, index_t>(args, g, ph, col, k) : 0.f;
    }
  };
  auto deposit = [&](const Stage& st, int s) {
    if constexpr (!kAsyncA) {
#pragma unroll
      for (int i = 0; i < kAPerThread; ++i) {
        const int e = tid + kTcThreads * i;
        a_s[s][(e / kTcTileK) * kTcLdA + e % kTcTileK] = WmmaType<scalar_t>::from_float(st.a[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      b_s[s][(b_k + kBRows * i) * kTcLdB + b_col] = WmmaType<scalar_t>::from_float(st.b[i]);
    }
  };
  // kAsyncA: piece tid of the A tile at k0 (row tid / 2, k from (tid % 2) * 8), copied as it is, or zeros
  auto copy_a = [&](index_t k0, int s) {
    if constexpr (kAsyncA) {
      const int row = tid / (kTcTileK / kTcPiece), kk = (tid % (kTcTileK / kTcPiece)) * kTcPiece;
      const index_t m = t.m0 + row, k = k0 + kk;
      const bool valid = m < shape.M && k < t.k_end;  // K % 8 == 0: a piece is wholly in or out
      // a zero-filled piece reads nothing; its source is any valid address
      const scalar_t* src = valid ? args.weight + a_at<mode, index_t>(g, ph, t.grp, m, k) : args.weight;
      __pipeline_memcpy_async(&a_s[s][row * kTcLdA + kk], src, 16, valid ? 0 : 16);
      __pipeline_commit();
    }
  };

  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> c_frag[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(c_frag[i][j], 0.0f);
    }
  }

  const index_t tiles = t.k_begin < t.k_end ? (t.k_end - t.k_begin + kTcTileK - 1) / kTcTileK : 0;
  Stage stage;
  if (tiles > 0) {
    copy_a(t.k_begin, 0);
    gather(t.k_begin, stage);
    deposit(stage, 0);
    if constexpr (kAsyncA) {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
  }
  for (index_t i = 0; i < tiles; ++i) {
    const int cur = static_cast<int>(i % kTcStages), next = cur ^ 1;
    const bool more = i + 1 < tiles;
    if (more) {  // tile i + 1's copies and loads, in flight during the products below
      copy_a(t.k_begin + (i + 1) * kTcTileK, next);
      gather(t.k_begin + (i + 1) * kTcTileK, stage);
    }

    wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, T, wmma::row_major> a_frag[2];
    wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, T, wmma::row_major> b_frag[2];
#pragma unroll
    for (int f = 0; f < 2; ++f) {
      wmma::load_matrix_sync(a_frag[f], a_s[cur] + (wy * kTcWarpTile + f * kWmma) * kTcLdA, kTcLdA);
      wmma::load_matrix_sync(b_frag[f], b_s[cur] + wx * kTcWarpTile + f * kWmma, kTcLdB);
    }
#pragma unroll
    for (int f = 0; f < 2; ++f) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::mma_sync(c_frag[f][j], a_frag[f], b_frag[j], c_frag[f][j]);
      }
    }

    if (more) {
      deposit(stage, next);
      if constexpr (kAsyncA) {
        __pipeline_wait_prior(0);
      }
    }
    __syncthreads();
  }

  // Epilogue: the fragments to shared memory, then each thread writes elements tid, tid + kTcThreads, ...
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(c_s + (wy * kTcWarpTile + i * kWmma) * kTcLdC + wx * kTcWarpTile + j * kWmma,
                              c_frag[i][j], kTcLdC, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int e = tid; e < kTcTileM * kTcTileN; e += kTcThreads) {
    const int row = e / kTcTileN, cn = e % kTcTileN;  // consecutive threads: consecutive n
    const index_t m = t.m0 + row, n = t.n0 + cn;
    if (m < shape.M && n < shape.N) {
      store_c<mode, scalar_t, index_t>(args, g, ph, shape, t.grp, m, n, static_cast<index_t>(blockIdx.y),
                                       c_s[row * kTcLdC + cn]);
    }
  }
#else
  __trap();  // the host launches this only on sm_80 and later (tensor_cores_available)
#endif
}

}  // namespace cuda
}  // namespace lenet_ext
