// The private operators behind lenet_ext.backends.cuda_verified (cuda/families.h's table as strings), and
// the one that says which opt-in families the CUDA settings take now, for the tests.
#include <torch/library.h>

#include <string>
#include <vector>

#include "cuda/conv2d_items.h"
#include "cuda/families.h"
#include "cuda/fused_items.h"
#include "cuda/pool2d_items.h"

namespace lenet_ext {
namespace {

// One row per family, in Family's order: "name", or "name|gpu|torch|commit|date" for a verified one.
std::vector<std::string> cuda_families_table() {
  using cuda_families::Family;
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

// The opt-in families the current settings take (for the convolutions, poolings and blocks each applies
// to), by name: what "auto" resolves to, or what a setting names.
std::vector<std::string> cuda_families_in_use() {
  using cuda_families::Family;
  std::vector<std::string> in_use;
  auto add = [&](Family family, bool taken) {
    if (taken) {
      in_use.emplace_back(cuda_families::kNames[static_cast<int>(family)]);
    }
  };
  for (Family family : {Family::kConvGemmPipelined, Family::kConvPhased, Family::kConvDirect, Family::kConvTensorCores}) {
    add(family, conv::cuda_takes(family));
  }
  const pool::Kernels pool = pool::cuda_pool_kernels();
  add(Family::kPoolNhwc, pool.native_nhwc);
  add(Family::kPoolRuns, pool.planar_runs);
  add(Family::kFusedPass, fused::cuda_fused_pass());
  return in_use;
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_cuda_families", &cuda_families_table);
  m.impl("_cuda_families_in_use", &cuda_families_in_use);
}

}  // namespace lenet_ext
