// The test operator cuda_families_in_use: which opt-in CUDA kernel families the settings take now, so the
// tests of "auto" (tests/test_cuda.py) check what each setting resolves to on machines without a GPU.
#include "cuda/conv2d_items.h"
#include "cuda/families.h"
#include "cuda/fused_items.h"
#include "cuda/pool2d_bodies.h"
#include "testing/host_ops.h"

namespace lenet_ext {
namespace testing {

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

}  // namespace testing
}  // namespace lenet_ext
