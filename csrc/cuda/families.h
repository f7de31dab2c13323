// The CUDA kernel families, and the GPU runs that each has passed its parity tests on: the one place the
// defaults read. Plain host code, so CPU-only builds and tests see the same table.
//
// Every lenet_ext.backends switch of the CUDA kernels (cuda_conv_algorithm, cuda_pool_layout,
// cuda_pool_planar, cuda_fused_block) defaults to "auto", and "auto" takes a family only when a row of
// kVerified names it; until then its kernels run only when the switch names them. A row is added after a
// GPU run of scripts/gpu_check.sh in which the family's parity tests passed (the tests force every family)
// and its timings were no worse than what "auto" ran before; it names that run's GPU, torch, commit and
// date. lenet_ext.backends.cuda_verified() shows the table.
//
// The families, and what "auto" does with each once it is verified (conv2d.cu and settings.cpp
// read `verified`):
//   conv_gemm            the implicit GEMM, one k tile at a time (cuda/gemm.cuh): every pass of the layers
//                        the direct forward does not take;
//   conv_direct_forward  conv2d.cu's direct forward for narrow layers (use_direct);
//   conv_grad_bias       the bias gradient's per-channel reduction;
//   conv_gemm_pipelined  the GEMM's pipelined mainloops (cp.async ring; register staging for 16-bit types):
//                        replace conv_gemm's mainloop;
//   conv_phased          the strided input gradient in stride phases: strided, undilated input gradients;
//   conv_direct          conv2d_items.h's input and weight gradients: those of narrow layers (use_direct);
//   conv_tensor_cores    the GEMM on tensor cores: float16 and bfloat16 on sm_80 and later;
//   pool_planar          NCHW pooling, floating types, one output per thread;
//   pool_planar_integer  NCHW integer max pooling forward: the only CUDA kernel for integer types, so it
//                        runs verified or not (torch accepts those types; refusing them would be worse);
//   pool_nhwc            channels_last pooling kernels: channels_last inputs, without the copies to NCHW;
//   pool_runs            NCHW forwards by runs of outputs along a row: the planar forwards;
//   fused_pass           the fused block's single pass each way (fused_items.h): replaces the composite
//                        (our conv kernels, ATen's sigmoid, our avg_pool2d: verified kernels only).
#pragma once

#include <cstdint>

namespace lenet_ext {
namespace cuda_families {

enum class Family : int {
  kConvGemm,
  kConvDirectForward,
  kConvGradBias,
  kConvGemmPipelined,
  kConvPhased,
  kConvDirect,
  kConvTensorCores,
  kPoolPlanar,
  kPoolPlanarInteger,
  kPoolNhwc,
  kPoolRuns,
  kFusedPass,
  kCount
};

// Names for lenet_ext.backends.cuda_verified, in Family's order.
inline constexpr const char* kNames[] = {
    "conv_gemm", "conv_direct_forward", "conv_grad_bias", "conv_gemm_pipelined", "conv_phased",
    "conv_direct", "conv_tensor_cores", "pool_planar", "pool_planar_integer", "pool_nhwc",
    "pool_runs", "fused_pass",
};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<int>(Family::kCount), "a name per family");

// One GPU run in which a family passed its parity tests.
struct Run {
  Family family;
  const char* gpu;
  const char* torch;
  const char* commit;
  const char* date;
};

// The first GPU run (../shared/gpu-runs/h200-2026-11-29): the kernels that were the defaults then, less
// the channels_last pooling of that day, which failed and was replaced by the copies to NCHW. Changes
// to these kernels since (refactors with the same arithmetic) are checked by the host emulation only.
inline constexpr Run kVerified[] = {
    {Family::kConvGemm, "NVIDIA H200", "2.11.0+cu130", "c2773ae", "2026-11-29"},
    {Family::kConvDirectForward, "NVIDIA H200", "2.11.0+cu130", "c2773ae", "2026-11-29"},
    {Family::kConvGradBias, "NVIDIA H200", "2.11.0+cu130", "c2773ae", "2026-11-29"},
    {Family::kPoolPlanar, "NVIDIA H200", "2.11.0+cu130", "c2773ae", "2026-11-29"},
};

constexpr bool one_run_per_family() {
  for (const Run& a : kVerified) {
    int runs = 0;
    for (const Run& b : kVerified) {
      runs += a.family == b.family ? 1 : 0;
    }
    if (runs != 1) {
      return false;
    }
  }
  return true;
}
static_assert(one_run_per_family(), "a family's row names the run that first passed its tests");

constexpr bool verified(Family family) {
  for (const Run& run : kVerified) {
    if (run.family == family) {
      return true;
    }
  }
  return false;
}

// What "auto" runs for a family with an opt-in switch: the family when the switch names it, or when the
// switch is at "auto" and the family is verified.
constexpr bool takes(Family family, bool named, bool automatic) {
  return named || (automatic && verified(family));
}
static_assert(takes(Family::kConvGemm, false, true) && !takes(Family::kConvGemm, false, false),
              "\"auto\" takes a verified family, and nothing else takes it unnamed");

}  // namespace cuda_families
}  // namespace lenet_ext
