// The CUDA settings that lenet_ext.backends wraps, what each resolves to through the families table
// (families.h: "auto" takes a family once a GPU run has verified it), and the table itself as strings for
// lenet_ext.backends.cuda_verified. Plain host code, compiled in every build (with or without CUDA), so
// the settings and the table are the same operators everywhere and the host emulation reads them too.
#include <torch/library.h>

#include <string>
#include <vector>

#include "cuda/conv2d_items.h"
#include "cuda/families.h"
#include "cuda/fused_items.h"
#include "cuda/pool2d_bodies.h"
#include "setting.h"

namespace lenet_ext {
namespace {

using cuda_families::Family;

// conv::CudaAlgorithm's values, kAuto (0) first
Setting g_cuda_conv_algorithm{"_set_cuda_conv_algorithm", 4};
// 0: auto (the default: families.h), 1: planar kernels, 2: native channels_last kernels.
Setting g_cuda_pool_layout{"_set_cuda_pool_layout", 3};
// 0: auto (the default: families.h), 1: one output per planar forward item, 2: runs of pool::kRun outputs.
Setting g_cuda_pool_planar{"_set_cuda_pool_planar", 3};
// 0: auto (the default: families.h), 1: the composite (ATen's sigmoid and lenet_ext's avg_pool2d), 2: the
// fused pass of fused_items.h.
Setting g_cuda_fused_block{"_set_cuda_fused_block", 3};

int64_t set_cuda_conv_algorithm(int64_t algorithm) {
  return g_cuda_conv_algorithm.set(algorithm);
}

int64_t set_cuda_pool_layout(int64_t layout) {
  return g_cuda_pool_layout.set(layout);
}

int64_t set_cuda_pool_planar(int64_t planar) {
  return g_cuda_pool_planar.set(planar);
}

int64_t set_cuda_fused_block(int64_t choice) {
  return g_cuda_fused_block.set(choice);
}

// One row per family, in Family's order: "name", or "name|gpu|torch|commit|date" for a verified one.
std::vector<std::string> cuda_families_table() {
  std::vector<std::string> rows;
  for (int f = 0; f < static_cast<int>(Family::kCount); ++f) {
    std::string row = cuda_families::kNames[f];
    for (const cuda_families::Run& run : cuda_families::kVerified) {
      if (static_cast<int>(run.family) == f) {
        row = row + "|" + run.gpu + "|" + run.torch + "|" + run.commit + "|" + run.date;
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

conv::CudaAlgorithm conv::cuda_conv_algorithm() {
  return static_cast<CudaAlgorithm>(g_cuda_conv_algorithm.get());
}

bool conv::cuda_takes(Family family) {
  const CudaAlgorithm a = cuda_conv_algorithm();
  bool named = false;  // the choices that force the family
  switch (family) {
    case Family::kConvGemmPipelined:
      named = a == CudaAlgorithm::kGemm;
      break;
    case Family::kConvPhased:
      named = a == CudaAlgorithm::kGemm || a == CudaAlgorithm::kTensorCores;
      break;
    case Family::kConvTensorCores:
      named = a == CudaAlgorithm::kTensorCores;
      break;
    case Family::kConvDirect:
      named = a == CudaAlgorithm::kDirect;
      break;
    default:
      TORCH_CHECK(false, "lenet_ext: ", cuda_families::kNames[static_cast<int>(family)],
                  " is not an opt-in conv2d family");
  }
  return cuda_families::takes(family, named, a == CudaAlgorithm::kAuto);
}

pool::Kernels pool::cuda_pool_kernels() {
  const int layout = g_cuda_pool_layout.get(), planar = g_cuda_pool_planar.get();
  return {cuda_families::takes(Family::kPoolNhwc, layout == 2, layout == 0),
          cuda_families::takes(Family::kPoolRuns, planar == 2, planar == 0)};
}

bool fused::cuda_fused_pass() {
  const int choice = g_cuda_fused_block.get();
  return cuda_families::takes(Family::kFusedPass, choice == 2, choice == 0);
}

// Settings and a table, not computations: no tensor argument, so they are registered for every backend
// at once.
TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_cuda_conv_algorithm", &set_cuda_conv_algorithm);
  m.impl("_set_cuda_pool_layout", &set_cuda_pool_layout);
  m.impl("_set_cuda_pool_planar", &set_cuda_pool_planar);
  m.impl("_set_cuda_fused_block", &set_cuda_fused_block);
  m.impl("_cuda_families", &cuda_families_table);
}

}  // namespace lenet_ext
