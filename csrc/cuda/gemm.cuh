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
//
// Two mainloops share that mapping, the products (multiply_tile) and the epilogue (store_tile):
//   conv2d_gemm_kernel        loads each k tile into registers, then shared memory, one tile at a time
//                             (the kernel verified on a GPU), or with the next tile's loads in flight
//                             during the products (kStaged; opt-in);
//   conv2d_gemm_async_kernel  copies k tiles straight into a ring of shared-memory stages with cp.async,
//                             kStages - 1 tiles ahead (float and double; opt-in).
#pragma once

#include <cuda_pipeline.h>

#include <cstdint>
#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/gemm_gather.h"

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

// Thread threadIdx.x's roles, the mapping at the top of the file: the A run it loads (row, first k), the B
// column and first k row it loads, and its place (tx, ty) in the compute grid.
struct GemmThread {
  int a_row, a_k, b_col, b_k, tx, ty;
};

__device__ __forceinline__ GemmThread gemm_thread() {
  const int tid = threadIdx.x;
  return {tid / kALoadersPerRow, (tid % kALoadersPerRow) * kAVec, tid % kTileN, tid / kTileN, tid % kThreadsN,
          tid / kThreadsN};
}

// The block's tile of C: group, first row and column, and its range of k.
template <typename index_t>
struct GemmTile {
  index_t grp, m0, n0, k_begin, k_end;
};

template <typename index_t, int kM = kTileM, int kN = kTileN>
__device__ __forceinline__ GemmTile<index_t> gemm_tile(const GemmShape<index_t>& shape, index_t m_tiles,
                                                       index_t n_tiles, index_t k_chunk) {
  const index_t block = blockIdx.x;
  const index_t n_tile = block % n_tiles;
  const index_t m_tile = (block / n_tiles) % m_tiles;
  const index_t k_begin = static_cast<index_t>(blockIdx.y) * k_chunk;
  return {block / (n_tiles * m_tiles), m_tile * kM, n_tile * kN, k_begin, imin(shape.K, k_begin + k_chunk)};
}

// Thread (ty, tx)'s products of one k tile held in shared memory: a_s[k][m], b_s[k][n].
template <typename acc>
__device__ __forceinline__ void multiply_tile(acc (&c_r)[kThreadM][kThreadN], const acc (&a_s)[kTileK][kTileM],
                                              const acc (&b_s)[kTileK][kTileN], int ty, int tx) {
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
}

// Epilogue: thread (ty, tx) writes its kThreadM x kThreadN block of the tile.
template <Mode mode, typename scalar_t, typename index_t>
__device__ __forceinline__ void store_tile(const acc_t<scalar_t> (&c_r)[kThreadM][kThreadN],
                                           const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                           const Phase<index_t>& ph, const GemmShape<index_t>& shape,
                                           const GemmTile<index_t>& t, int ty, int tx) {
#pragma unroll
  for (int j = 0; j < kThreadN; ++j) {
    const index_t n = t.n0 + tx + kThreadsN * j;
#pragma unroll
    for (int i = 0; i < kThreadM; ++i) {
      const index_t m = t.m0 + ty + kThreadsM * i;
      if (m < shape.M && n < shape.N) {
        const index_t chunk = blockIdx.y;
        store_c<mode, scalar_t, index_t>(args, g, ph, shape, t.grp, m, n, chunk, c_r[i][j]);
      }
    }
  }
}

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
  const GemmTile<index_t> t = gemm_tile<index_t>(shape, m_tiles, n_tiles, k_chunk);
  const index_t grp = t.grp, m0 = t.m0, n0 = t.n0, k_begin = t.k_begin, k_end = t.k_end;

  const auto [a_row, a_k, b_col, b_k, tx, ty] = gemm_thread();
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

  acc c_r[kThreadM][kThreadN] = {};  // the thread's block of C

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

    multiply_tile<acc>(c_r, a_s, b_s, ty, tx);
    __syncthreads();
  }

  store_tile<mode, scalar_t, index_t>(c_r, args, g, ph, shape, t, ty, tx);
}

// The same tile of C = A B, fed by asynchronous copies (cp.async on sm_80 and later, through CUDA's
// pipeline primitives, which copy synchronously on older GPUs) into a ring of kStages shared-memory
// stages, for types whose operands are stored as they are accumulated (float, double): every A and B
// element is one element of a tensor (a_at, b_at) or a zero (a padding tap, a stride's structural zero,
// past the tile's end), so each is copied straight from global to shared memory, kStages - 1 k tiles
// ahead of the products, with no registers to stage them in and one barrier per k tile (CUTLASS's
// multistage mainloop, with its zero fill for what a tap does not read).
//
// Iteration i computes k tile i from stage i % kStages. Before it, wait_prior(kStages - 2) completes this
// thread's copies of tile i (the copy groups are one per tile, committed in order, empty past the last),
// and the barrier makes every thread's copies visible and every thread done with tile i - 1, whose stage
// the copies of tile i + kStages - 1 then refill.
template <Mode mode, typename scalar_t, typename index_t, int kStages>
__global__ void __launch_bounds__(kGemmThreads)
    conv2d_gemm_async_kernel(GemmArgs<scalar_t> args, Geom<index_t> g, Phase<index_t> ph, index_t m_tiles,
                             index_t n_tiles, index_t k_chunk) {
  static_assert(std::is_same_v<acc_t<scalar_t>, scalar_t> && (sizeof(scalar_t) == 4 || sizeof(scalar_t) == 8),
                "copied as stored: 4- or 8-byte types accumulated in themselves");
  static_assert(kStages >= 2, "a ring: the copies of one stage while another computes");
  __shared__ __align__(16) scalar_t a_s[kStages][kTileK][kTileM];
  __shared__ __align__(16) scalar_t b_s[kStages][kTileK][kTileN];

  const GemmShape<index_t> shape = gemm_shape<mode, index_t>(g, ph);
  const GemmTile<index_t> t = gemm_tile<index_t>(shape, m_tiles, n_tiles, k_chunk);
  const auto [a_row, a_k, b_col, b_k, tx, ty] = gemm_thread();
  const Column<index_t> col = column_of<mode, index_t>(g, ph, t.grp, t.n0 + b_col, shape.N);
  const bool a_row_valid = t.m0 + a_row < shape.M;
  const scalar_t* a_src = a_source<mode, scalar_t>(args);
  const scalar_t* b_src = b_source<mode, scalar_t>(args);

  // one element to shared memory: from src, or zeros without a read (src is then any valid address)
  auto copy = [](scalar_t* dst, const scalar_t* src, bool valid) {
    __pipeline_memcpy_async(dst, src, sizeof(scalar_t), valid ? 0 : sizeof(scalar_t));
  };
  // the thread's copies of the k tile at k0 into stage s
  auto copy_tile = [&](index_t k0, int s) {
#pragma unroll
    for (int j = 0; j < kAVec; ++j) {
      const index_t k = k0 + a_k + j;
      const bool valid = a_row_valid && k < t.k_end;
      copy(&a_s[s][a_k + j][a_row], valid ? a_src + a_at<mode, index_t>(g, ph, t.grp, t.m0 + a_row, k) : a_src,
           valid);
    }
#pragma unroll
    for (int i = 0; i < kTileK / kBRowsPerPass; ++i) {
      const index_t k = k0 + b_k + kBRowsPerPass * i;
      const index_t at = col.valid && k < t.k_end ? b_at<mode, index_t>(g, ph, col, k) : index_t{-1};
      copy(&b_s[s][b_k + kBRowsPerPass * i][b_col], at < 0 ? b_src : b_src + at, at >= 0);
    }
  };

  scalar_t c_r[kThreadM][kThreadN] = {};  // the thread's block of C

  const index_t tiles = t.k_begin < t.k_end ? (t.k_end - t.k_begin + kTileK - 1) / kTileK : 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles) {
      copy_tile(t.k_begin + s * kTileK, s);
    }
    __pipeline_commit();
  }
  for (index_t i = 0; i < tiles; ++i) {
    __pipeline_wait_prior(kStages - 2);
    __syncthreads();
    const index_t ahead = i + kStages - 1;
    if (ahead < tiles) {
      copy_tile(t.k_begin + ahead * kTileK, static_cast<int>(ahead % kStages));
    }
    __pipeline_commit();
    multiply_tile<scalar_t>(c_r, a_s[i % kStages], b_s[i % kStages], ty, tx);
  }

  store_tile<mode, scalar_t, index_t>(c_r, args, g, ph, shape, t, ty, tx);
}

// The async kernel's ring: three stages of float (24 KB), two of double (32 KB), under the 48 KB of static
// shared memory a block may have.
template <typename scalar_t>
constexpr int kAsyncStages = sizeof(scalar_t) == 4 ? 3 : 2;

}  // namespace cuda
}  // namespace lenet_ext
