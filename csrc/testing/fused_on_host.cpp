// The CUDA fused-block setting, and the private operator that runs the CUDA fused pass's work items
// (fused_items.h) on the host, so tests check them without a GPU.
#include <torch/library.h>

#include "cuda/families.h"
#include "cuda/fused_items.h"
#include "testing/items_host.h"
#include "setting.h"

namespace lenet_ext {

namespace {

// 0: auto (the default: cuda/families.h), 1: the composite (ATen's sigmoid and lenet_ext's avg_pool2d),
// 2: the fused pass of fused_items.h.
Setting g_cuda_fused_block{"_set_cuda_fused_block", 3};

int64_t set_cuda_fused_block(int64_t choice) {
  return g_cuda_fused_block.set(choice);
}

// The CUDA fused block's forward and backward (every gradient) on CPU tensors, by its own work items;
// the convolutions are the CPU operators. Returns (output, activation, grad_input, grad_weight, grad_bias).
std::tuple<at::Tensor, at::Tensor, fused::MaybeTensor, fused::MaybeTensor, fused::MaybeTensor> cuda_fused_on_host(
    const at::Tensor& input, const at::Tensor& weight, const fused::MaybeTensor& bias, const at::Tensor& grad_output,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool,
    bool int64_index) {
  TORCH_CHECK(input.device().is_cpu(), "lenet_ext._cuda_fused_on_host: expected CPU tensors");
  const HostRunner run{int64_index};
  auto [out, act] = fused::forward_items(run, input, weight, bias, stride, padding, dilation, groups, pool);
  auto [gx, gw, gb] = fused::backward_items(run, grad_output, input, weight, act, stride, padding, dilation, groups,
                                            pool, {true, true, bias.has_value()});
  return {out, act, gx, gw, gb};
}

}  // namespace

bool fused::cuda_fused_pass() {
  const int choice = g_cuda_fused_block.get();
  return cuda_families::takes(cuda_families::Family::kFusedPass, choice == 2, choice == 0);
}

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_cuda_fused_block", &set_cuda_fused_block);
  m.impl("_cuda_fused_on_host", &cuda_fused_on_host);
}

}  // namespace lenet_ext
