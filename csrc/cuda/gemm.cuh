// The implicit-GEMM kernel behind conv2d's CUDA forward, input gradient and weight gradient (conv2d.cu
// says which convolutions take it): C[m][n] = sum_k A[m][k] B[k][n] per group, with A and B gathered
// from the convolution's own tensors on the fly (no im2col buffer).
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

enum class Mode { kForward, kGradInput, kGradWeight };

// Sizes of the GEMM for one group.
template <typename index_t>
struct GemmShape {
  index_t M, N, K;
};

template <Mode mode, typename index_t>
__host__ __device__ GemmShape<index_t> gemm_shape(const Geom<index_t>& g) {
  const index_t khw = g.KH * g.KW;
  if constexpr (mode == Mode::kForward) {
    return {g.Og, g.N * g.OH * g.OW, g.Cg * khw};
  } else if constexpr (mode == Mode::kGradInput) {
    return {g.Cg, g.N * g.H * g.W, g.Og * khw};
  } else {
    return {g.Og, g.Cg * khw, g.N * g.OH * g.OW};
  }
}

// Pointers for one launch. `a` and `b` are the two operands in the conv's own tensors (the kernel
// gathers), `c` the output; `partial` is grad weight's per-chunk buffer.
template <typename scalar_t>
struct GemmArgs {
  const scalar_t* x;       // forward / grad weight: input
  const scalar_t* weight;  // forward / grad input
  const scalar_t* grad;    // grad input / grad weight: grad_output
  const scalar_t* bias;    // forward, may be null
  scalar_t* out;           // forward: output, grad input: grad_input
  acc_t<scalar_t>* partial;  // grad weight: [chunks][O][Cg*KH*KW]
};

// A[m][k] of the GEMM (m < M and k < K are checked by the caller).
template <Mode mode, typename scalar_t, typename index_t>
__device__ __forceinline__ acc_t<scalar_t> load_a(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                                  index_t grp, index_t m, index_t k) {
  using acc = acc_t<scalar_t>;
  if constexpr (mode == Mode::kForward) {
    // weight[grp*Og + m][k], k = (c, kh, kw)
    return static_cast<acc>(args.weight[(grp * g.Og + m) * (g.Cg * g.KH * g.KW) + k]);
  } else if constexpr (mode == Mode::kGradInput) {
    // k = (o, kh, kw): weight[grp*Og + o][m][kh][kw]
    const index_t khw = g.KH * g.KW;
    const index_t o = k / khw, r = k % khw;
    return static_cast<acc>(args.weight[((grp * g.Og + o) * g.Cg + m) * khw + r]);
  } else {
    // k = (image, oh, ow): grad_output[image][grp*Og + m][oh][ow]
    const index_t L = g.OH * g.OW;
    const index_t img = k / L, l = k % L;
    return static_cast<acc>(args.grad[(img * g.O + grp * g.Og + m) * L + l]);
  }
}

// What a thread knows about its B column n, computed once per tile.
template <typename index_t>
struct Column {
  bool valid;
  index_t base;  // offset of the column's image/channel plane in the gathered tensor
  index_t y, x;  // forward: (ih0, iw0); grad input: (ih + ph, iw + pw); grad weight: tap offsets
};

template <Mode mode, typename index_t>
__device__ __forceinline__ Column<index_t> column_of(const Geom<index_t>& g, index_t grp, index_t n, index_t N) {
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

// B[k][n] for the thread's column (k < K is checked by the caller); 0 where the tap reads padding.
template <Mode mode, typename scalar_t, typename index_t>
__device__ __forceinline__ acc_t<scalar_t> load_b(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                                  const Column<index_t>& col, index_t k) {
  using acc = acc_t<scalar_t>;
  if constexpr (mode == Mode::kForward) {
    // k = (c, kh, kw)
    const index_t khw = g.KH * g.KW;
    const index_t c = k / khw, r = k % khw;
    const index_t ih = col.y + (r / g.KW) * g.dh, iw = col.x + (r % g.KW) * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
      return acc(0);
    }
    return static_cast<acc>(args.x[col.base + (c * g.H + ih) * g.W + iw]);
  } else if constexpr (mode == Mode::kGradInput) {
    // k = (o, kh, kw): the output (oh, ow) with oh*sh + kh*dh = ih + ph, if it exists
    const index_t khw = g.KH * g.KW;
    const index_t o = k / khw, r = k % khw;
    const index_t th = col.y - (r / g.KW) * g.dh, tw = col.x - (r % g.KW) * g.dw;
    if (th < 0 || tw < 0 || th % g.sh != 0 || tw % g.sw != 0) {
      return acc(0);
    }
    const index_t oh = th / g.sh, ow = tw / g.sw;
    if (oh >= g.OH || ow >= g.OW) {
      return acc(0);
    }
    return static_cast<acc>(args.grad[col.base + (o * g.OH + oh) * g.OW + ow]);
  } else {
    // k = (image, oh, ow)
    const index_t L = g.OH * g.OW;
    const index_t img = k / L, l = k % L;
    const index_t ih = (l / g.OW) * g.sh + col.y, iw = (l % g.OW) * g.sw + col.x;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
      return acc(0);
    }
    return static_cast<acc>(args.x[img * g.C * g.H * g.W + col.base + ih * g.W + iw]);
  }
}

// Writes C[m][n] of group grp (m < M and n < N are checked by the caller) where its mode keeps it: the
// output plus bias (forward), grad_input, or this k chunk's (block y's) partial weight gradient.
template <Mode mode, typename scalar_t, typename index_t>
__device__ __forceinline__ void store_c(const GemmArgs<scalar_t>& args, const Geom<index_t>& g,
                                        const GemmShape<index_t>& shape, index_t grp, index_t m, index_t n,
                                        acc_t<scalar_t> value) {
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
  } else {
    // partial[chunk][grp*Og + m][n]: n runs over one weight row (c, kh, kw)
    args.partial[(static_cast<index_t>(blockIdx.y) * g.O + grp * g.Og + m) * shape.N + n] = value;
  }
}

// One (group, m tile, n tile, k chunk) of C = A B. Block x is (group, m tile, n tile) flattened; block y
// is the k chunk (grad weight only; 1 otherwise). kVecA: A rows are 16-byte aligned float rows, read
// four at a time (forward with float weights whose row length is a multiple of 4).
template <Mode mode, typename scalar_t, typename index_t, bool kVecA>
__global__ void __launch_bounds__(kGemmThreads)
    conv2d_gemm_kernel(GemmArgs<scalar_t> args, Geom<index_t> g, index_t m_tiles, index_t n_tiles,
                       index_t k_chunk) {
  using acc = acc_t<scalar_t>;
  __shared__ acc a_s[kTileK][kTileM];
  __shared__ acc b_s[kTileK][kTileN];

  const GemmShape<index_t> shape = gemm_shape<mode, index_t>(g);
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
  const Column<index_t> col = column_of<mode, index_t>(g, grp, n0 + b_col, shape.N);
  const bool a_row_valid = m0 + a_row < shape.M;

  acc c_r[kThreadM][kThreadN];
#pragma unroll
  for (int i = 0; i < kThreadM; ++i) {
#pragma unroll
    for (int j = 0; j < kThreadN; ++j) {
      c_r[i][j] = 0;
    }
  }

  for (index_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    // A tile: kTileM rows x kTileK k
    if constexpr (kVecA) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      const index_t k = k0 + a_k;
      if (a_row_valid && k < k_end) {  // K % 4 == 0 and k0 % 4 == 0, so all four are in range
        v = *reinterpret_cast<const float4*>(args.weight + (grp * g.Og + m0 + a_row) * shape.K + k);
      }
      a_s[a_k + 0][a_row] = v.x;
      a_s[a_k + 1][a_row] = v.y;
      a_s[a_k + 2][a_row] = v.z;
      a_s[a_k + 3][a_row] = v.w;
    } else {
#pragma unroll
      for (int j = 0; j < kAVec; ++j) {
        const index_t k = k0 + a_k + j;
        a_s[a_k + j][a_row] =
            a_row_valid && k < k_end ? load_a<mode, scalar_t, index_t>(args, g, grp, m0 + a_row, k) : acc(0);
      }
    }
    // B tile: kTileK k x kTileN columns
#pragma unroll
    for (int i = 0; i < kTileK / kBRowsPerPass; ++i) {
      const int kk = b_k + kBRowsPerPass * i;
      const index_t k = k0 + kk;
      b_s[kk][b_col] = col.valid && k < k_end ? load_b<mode, scalar_t, index_t>(args, g, col, k) : acc(0);
    }
    __syncthreads();

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
        store_c<mode, scalar_t, index_t>(args, g, shape, grp, m, n, c_r[i][j]);
      }
    }
  }
}

}  // namespace cuda
}  // namespace lenet_ext
