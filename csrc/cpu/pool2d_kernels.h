// The table of per-level pooling kernels (max and avg forwards in float, double and bfloat16; the avg
// backward's gathers in float and double), and the jobs they take. bfloat16 is read and written as stored and
// computed in float (PoolCompute), so a job's input and output are its storage type X and its scratch and
// divisors the compute type.
//
// cpu/pool2d.cpp owns the checks, the tensors, the threads and the scratch; the kernels behind this table
// own only the loops, compiled once per instruction-set level (cpu/pool2d_tiles.h, included by each
// cpu/level_*.cpp) so that their vectors are the level's own registers. Plain C++ (see cpu/vec.h).
//
// Indices inside the kernels are PoolIndex<T>: an integer as wide as T, so that one comparison mask of T
// values selects both the value and its index (int32 for float: the driver keeps planes under 2^31
// elements there). They are widened to int64 when stored.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/kernels.h"

namespace lenet_ext {
namespace cpu {

// bfloat16 as stored: the bits of c10::BFloat16 (the kernels read and write it through memcpy only).
struct bf16_t {
  uint16_t bits;
};
static_assert(sizeof(bf16_t) == 2);

// The type a kernel computes in: bfloat16 in float, the others as themselves.
template <typename X>
using PoolCompute = std::conditional_t<std::is_same_v<X, bf16_t>, float, X>;

template <typename T>
using PoolIndex = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// The window geometry of one call: input H x W, output OH x OW, kernel, stride, padding, dilation.
struct PoolGeometry {
  int64_t H, W, OH, OW;
  int64_t KH, KW, sh, sw, ph, pw, dh, dw;
};

// NCHW: output rows [r0, r1), row r = plane * OH + oh, of contiguous planes. Separable: each input row's
// window maxima (or sums) over the KW columns go to a ring of (KH - 1) * dh + 1 rows, then each output
// row folds its KH rows of the ring.
template <typename X, typename T = PoolCompute<X>>
struct PoolRowsJob {
  const X* x;                // the input planes
  X* y;                      // the output planes
  int64_t* ind;              // max: the indices (flat positions in the plane), or null for values only
  const T* div;              // avg: OH x OW divisors, shared by every plane; null for max
  T* ring;                   // scratch: ring_rows x OW values
  PoolIndex<T>* ring_index;  // scratch: ring_rows x OW indices (max with indices)
  int64_t r0, r1;
  PoolGeometry g;
};

// channels_last: output rows [r0, r1) of NHWC images, row r = n * OH + oh, each OW pixels of C channels.
template <typename X, typename T = PoolCompute<X>>
struct PoolPixelsJob {
  const X* x;    // NHWC input
  X* y;          // NHWC output
  int64_t* ind;  // max: the indices, or null for values only
  const T* div;  // avg: OH x OW divisors; null for max
  int64_t C;
  int64_t r0, r1;
  PoolGeometry g;
};

// avg backward, channels_last: input rows [r0, r1), row r = n * H + ih. Each input pixel gathers the shares
// (grad / divisor) of the windows that cover it and is written once: no zero-fill, no read-modify-write.
template <typename T>
struct PoolGatherJob {
  const T* go;   // NHWC output gradient
  T* gx;         // NHWC input gradient, written
  const T* div;  // OH x OW divisors
  int64_t C;
  int64_t r0, r1;
  PoolGeometry g;
};

// avg backward, NCHW, stride 1: input rows [r0, r1), row r = plane * H + ih, of contiguous planes. Each input
// row gathers its windows' shares and is written once. Separable: each output-gradient row becomes a row of
// per-input-column shares (the sum over the windows covering that column of grad / divisor) in a ring of
// KH rows, and each input row sums the ring rows of the output rows whose windows cover it.
template <typename T>
struct PoolGatherRowsJob {
  const T* go;  // NCHW output gradient
  T* gx;        // NCHW input gradient, written
  const T* div; // OH x OW divisors, shared by every plane
  T* ring;      // scratch: KH x W shares
  int64_t r0, r1;
  PoolGeometry g;
};

template <typename T>
struct PoolKernels {
  void (*max_rows)(const PoolRowsJob<T>&);
  void (*avg_rows)(const PoolRowsJob<T>&);
  void (*max_pixels)(const PoolPixelsJob<T>&);
  void (*avg_pixels)(const PoolPixelsJob<T>&);
  void (*avg_gather_pixels)(const PoolGatherJob<T>&);
  void (*avg_gather_rows)(const PoolGatherRowsJob<T>&);
};

struct PoolLevelKernels {
  PoolKernels<float> f32;
  PoolKernels<double> f64;
  PoolKernels<bf16_t> bf16;  // the forwards only

  template <typename X>
  const PoolKernels<X>& of() const {
    if constexpr (std::is_same_v<X, float>) {
      return f32;
    } else if constexpr (std::is_same_v<X, double>) {
      return f64;
    } else {
      return bf16;
    }
  }
};

// One per compiled level (cpu/level_*.cpp, through cpu/pool2d_tiles.h).
const PoolLevelKernels& pool_kernels_default();
#ifdef LENET_EXT_X86_LEVELS
const PoolLevelKernels& pool_kernels_avx2();
const PoolLevelKernels& pool_kernels_avx512();
#endif

// The pooling kernels of the level in use (the one active_kernels() runs).
inline const PoolLevelKernels& active_pool_kernels() {
  switch (active_kernels().level) {
#ifdef LENET_EXT_X86_LEVELS
    case Level::kAvx2:
      return pool_kernels_avx2();
    case Level::kAvx512:
      return pool_kernels_avx512();
#endif
    default:
      return pool_kernels_default();
  }
}

}  // namespace cpu
}  // namespace lenet_ext
