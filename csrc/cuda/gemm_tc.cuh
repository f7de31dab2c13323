// The implicit GEMM of gemm.cuh on tensor cores, for float16 and bfloat16 (sm_80 and later): the same
// three modes, the same gathers (load_a, load_b) and the same epilogue (store_c), with the tile's
// products done by WMMA's 16 x 16 x 16 matrix multiply-accumulate in float.
//
// A block of kTcThreads (4 warps) computes a kTcTileM x kTcTileN tile of C: warp (wy, wx) owns the
// 32 x 32 quarter at rows 32 wy, columns 32 wx, as 2 x 2 accumulator fragments. Per step of kTcTileK in
// k, the threads gather the A tile (kTcTileM x kTcTileK) and the B tile (kTcTileK x kTcTileN) into shared
// memory in the operands' 16-bit type (the gathered values are 16-bit numbers already: no rounding), and
// each warp multiplies its fragments. At the end the fragments go through shared memory as floats to the
// threads, which write C as gemm.cuh's epilogue does (bias, grad_input or the weight gradient's partial).
//
// Opt-in (lenet_ext.backends.cuda_conv_algorithm("tensor_cores")) until a GPU run has passed its tests.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

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

template <Mode mode, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kTcThreads)
    conv2d_gemm_tc_kernel(GemmArgs<scalar_t> args, Geom<index_t> g, Phase<index_t> ph, index_t m_tiles,
                          index_t n_tiles, index_t k_chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using T = typename WmmaType<scalar_t>::type;
  __shared__ __align__(32) T a_s[kTcTileM * kTcLdA];  // [m][k]
  __shared__ __align__(32) T b_s[kTcTileK * kTcLdB];  // [k][n]
  __shared__ __align__(32) float c_s[kTcTileM * kTcLdC];

  const GemmShape<index_t> shape = gemm_shape<mode, index_t>(g, ph);
  const index_t block = blockIdx.x;
  const index_t n_tile = block % n_tiles;
  const index_t m_tile = (block / n_tiles) % m_tiles;
  const index_t grp = block / (n_tiles * m_tiles);
  const index_t m0 = m_tile * kTcTileM, n0 = n_tile * kTcTileN;
  const index_t k_begin = static_cast<index_t>(blockIdx.y) * k_chunk;
  const index_t k_end = imin(shape.K, k_begin + k_chunk);

  const int tid = threadIdx.x, warp = tid / 32;
  const int wy = warp / (kTcTileN / kTcWarpTile), wx = warp % (kTcTileN / kTcWarpTile);
  // B loads: thread t gathers column t % kTcTileN, k rows t / kTcTileN + (kTcThreads / kTcTileN) * i
  constexpr int kBRows = kTcThreads / kTcTileN;
  const int b_col = tid % kTcTileN, b_k = tid / kTcTileN;
  const Column<index_t> col = column_of<mode, index_t>(g, ph, grp, n0 + b_col, shape.N);

  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> c_frag[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(c_frag[i][j], 0.0f);
    }
  }

  for (index_t k0 = k_begin; k0 < k_end; k0 += kTcTileK) {
    // A tile: element e = (row, kk) = (e / kTcTileK, e % kTcTileK), e = tid + kTcThreads * i
#pragma unroll
    for (int i = 0; i < kTcTileM * kTcTileK / kTcThreads; ++i) {
      const int e = tid + kTcThreads * i;
      const int row = e / kTcTileK, kk = e % kTcTileK;
      const index_t m = m0 + row, k = k0 + kk;
      const float v = m < shape.M && k < k_end ? load_a<mode, scalar_t, index_t>(args, g, ph, grp, m, k) : 0.f;
      a_s[row * kTcLdA + kk] = WmmaType<scalar_t>::from_float(v);
    }
    // B tile
#pragma unroll
    for (int i = 0; i < kTcTileK / kBRows; ++i) {
      const int kk = b_k + kBRows * i;
      const index_t k = k0 + kk;
      const float v = col.valid && k < k_end ? load_b<mode, scalar_t, index_t>(args, g, ph, col, k) : 0.f;
      b_s[kk * kTcLdB + b_col] = WmmaType<scalar_t>::from_float(v);
    }
    __syncthreads();

    wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, T, wmma::row_major> a_frag[2];
    wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, T, wmma::row_major> b_frag[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      wmma::load_matrix_sync(a_frag[i], a_s + (wy * kTcWarpTile + i * kWmma) * kTcLdA, kTcLdA);
      wmma::load_matrix_sync(b_frag[i], b_s + wx * kTcWarpTile + i * kWmma, kTcLdB);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::mma_sync(c_frag[i][j], a_frag[i], b_frag[j], c_frag[i][j]);
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
    const index_t m = m0 + row, n = n0 + cn;
    if (m < shape.M && n < shape.N) {
      store_c<mode, scalar_t, index_t>(args, g, ph, shape, grp, m, n, static_cast<index_t>(blockIdx.y),
                                       c_s[row * kTcLdC + cn]);
    }
  }
#else
  __trap();  // the host launches this only on sm_80 and later (tensor_cores_available)
#endif
}

}  // namespace cuda
}  // namespace lenet_ext
