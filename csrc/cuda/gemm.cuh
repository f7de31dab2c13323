// The implicit-GEMM kernel behind conv2d's CUDA forward, input gradient and weight gradient (conv2d.cu
// says which convolutions take it): C[m][n] = sum_k A[m][k] B[k][n] per group, with A and B gathered
// from the convolution's own tensors on the fly (no im2col buffer); what each mode gathers and where it
// writes is gemm_gather.h.
//
// A block computes a kTileM x kTileN tile of C, stepping through k kTileK at a time with both operand
// tiles in shared memory. Its kGemmThreads threads split the work two ways:
//   loading   A: thread t loads kAVec consecutive k of row t / kALoadersPerRow (one float4 when the
//                weight rows are aligned);
//             B: thread t loads column t % kTileN, k rows t / kTileN + kBRowsPerPass * i;
//   computing thread (ty, tx) = (t / kThreadsN, t % kThreadsN) owns rows ty + kThreadsM * i and
//             columns tx + kThreadsN * j of the tile (i < kThreadM, j < kThreadN), so neighbouring
//             threads write neighbouring outputs.
// The static_asserts below tie this mapping to the tile sizes: change one and they say what else must.
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"
#include "gemm_gather.h"

namespace lenet_ext {
namespace cuda {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kThreadM = 4;  // a thread's block of C: kThreadM x kThreadN accumulators in registers
constexpr int kThreadN = 4;
constexpr int kThreadsM = kTileM / kThreadM;  // the threads as a kThreadsM x kThreadsN grid over the tile
constexpr int kThreadsN = kTileN / kThreadN;
constexpr int kGemmThreads = kThreadsM * kThreadsN;
constexpr int kAVec = 4;                             // A loads: consecutive k per thread (a float4)
constexpr int kALoadersPerRow = kTileK / kAVec;      // threads loading one row of the A tile
constexpr int kBRowsPerPass = kGemmThreads / kTileN;  // k rows of the B tile loaded per pass

static_assert(kTileM % kThreadM == 0 && kTileN % kThreadN == 0, "whole thread blocks per tile");
static_assert(kGemmThreads == 256, "__launch_bounds__ and the occupancy this tile was sized for");
static_assert(kAVec == 4 && kTileK % kAVec == 0, "A's vector loads are float4, within one k tile");
static_assert(kTileM * kALoadersPerRow == kGemmThreads, "A loads: each thread one run of kAVec, once per k tile");
static_assert(kGemmThreads % kTileN == 0 && kTileK % kBRowsPerPass == 0, "B loads: whole rows per pass");

// One (group, m tile, n tile, k chunk) of C = A B. Block x is (group, m tile, n tile) flattened; block y
// is the k chunk (grad weight only; 1 otherwise). kVecA: A rows are 16-byte aligned float rows, read
// four at a time (forward with float weights whose row length is a multiple of 4).
//
// Each k tile is gathered into registers (a Stage: the thread's kAVec values of A and its column's
// kTileK / kBRowsPerPass values of B), then stored to shared memory. kStaged gathers the next k tile's
// stage before the products of the current one, so its global loads are in flight while the tile
// computes (register double buffering); without it, each tile is gathered, stored and computed in turn.
template <Mode mode, typename scalar_t, typename index_t, bool kVecA, bool kStaged = false>
__global__ void __launch_bounds__(kGemmThreads)
    conv2d_gemm_kernel(GemmArgs<scalar_t> args, Geom<index_t> g, Phase<index_t> ph, index_t m_tiles,
                       index_t n_tiles, index_t k_chunk) {
  using acc = acc_t<scalar_t>;
  __shared__ acc a_s[kTileK][kTileM];
  __shared__ acc b_s[kTileK][kTileN];

  const GemmShape<index_t> shape = gemm_shape<mode, index_t>(g, ph);
  const index_t block = blockIdx.x;
  const index_t n_tile = block % n_tiles;
  const index_t m_tile = (block / n_tiles) % m_tiles;
  const index_t grp = block / (n_tiles * m_tiles);
  const index_t m0 = m_tile * kTileM, n0 = n_tile * kTileN;
  const index_t k_begin = static_cast<index_t>(blockIdx.y) * k_chunk;
  const index_t k_end = imin(shape.K, k_begin + k_chunk);

  const int tid = threadIdx.x;  // the mapping at the top of the file
  const int a_row = tid / kALoadersPerRow, a_k = (tid % kALoadersPerRow) * kAVec;
  const int b_col = tid % kTileN, b_k = tid / kTileN;
  const int tx = tid % kThreadsN, ty = tid / kThreadsN;
  const Column<index_t> col = column_of<mode, index_t>(g, ph, grp, n0 + b_col, shape.N);
  const bool a_row_valid = m0 + a_row < shape.M;

  constexpr int kBPerThread = kTileK / kBRowsPerPass;
  struct Stage {
    acc a[kAVec];
    acc b[kBPerThread];
  };
  // the thread's share of the k tile at k0
  auto gather = [&](index_t k0, Stage& st) {
    if constexpr (kVecA) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      const index_t k = k0 + a_k;
      if (a_row_valid && k < k_end) {  // K % 4 == 0 and k0 % 4 == 0, so all four are in range
        v = *reinterpret_cast<const float4*>(args.weight + (grp * g.Og + m0 + a_row) * shape.K + k);
      }
      st.a[0] = v.x;
      st.a[1] = v.y;
      st.a[2] = v.z;
      st.a[3] = v.w;
    } else {
#pragma unroll
      for (int j = 0; j < kAVec; ++j) {
        const index_t k = k0 + a_k + j;
        st.a[j] =
            a_row_valid && k < k_end ? load_a<mode, scalar_t, index_t>(args, g, ph, grp, m0 + a_row, k) : acc(0);
      }
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const index_t k = k0 + b_k + kBRowsPerPass * i;
      st.b[i] = col.valid && k < k_end ? load_b<mode, scalar_t, index_t>(args, g, ph, col, k) : acc(0);
    }
  };
  auto deposit = [&](const Stage& st) {
#pragma unroll
    for (int j = 0; j < kAVec; ++j) {
      a_s[a_k + j][a_row] = st.a[j];
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      b_s[b_k + kBRowsPerPass * i][b_col] = st.b[i];
    }
  };

  acc c_r[kThreadM][kThreadN];
#pragma unroll
  for (int i = 0; i < kThreadM; ++i) {
#pragma unroll
    for (int j = 0; j < kThreadN; ++j) {
      c_r[i][j] = 0;
    }
  }

  Stage stage;
  if constexpr (kStaged) {
    if (k_begin < k_end) {
      gather(k_begin, stage);
    }
  }
  for (index_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    if constexpr (!kStaged) {
      gather(k0, stage);
    }
    deposit(stage);
    __syncthreads();
    if constexpr (kStaged) {
      if (k0 + kTileK < k_end) {
        gather(k0 + kTileK, stage);  // in flight during the products below
      }
    }

#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      acc a_r[kThreadM], b_r[kThreadN];
#pragma unroll
      for (int i = 0; i < kThreadM; ++i) {
        a_r[i] = a_s[kk][ty + kThreadsM * i];
      }
#pragma unroll
      for (int j = 0; j < kThreadN; ++j) {
        b_r[j] = b_s[kk][tx + kThreadsN * j];
      }
#pragma unroll
      for (int i = 0; i < kThreadM; ++i) {
#pragma unroll
        for (int j = 0; j < kThreadN; ++j) {
          c_r[i][j] += a_r[i] * b_r[j];
        }
      }
    }
    __syncthreads();
  }

  // Epilogue: write the thread's kThreadM x kThreadN block.
#pragma unroll
  for (int j = 0; j < kThreadN; ++j) {
    const index_t n = n0 + tx + kThreadsN * j;
#pragma unroll
    for (int i = 0; i < kThreadM; ++i) {
      const index_t m = m0 + ty + kThreadsM * i;
      if (m < shape.M && n < shape.N) {
        const index_t chunk = blockIdx.y;
        store_c<mode, scalar_t, index_t>(args, g, ph, shape, grp, m, n, chunk, c_r[i][j]);
      }
    }
  }
}

}  // namespace cuda
}  // namespace lenet_ext
