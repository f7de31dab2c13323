// The test operator that runs the CUDA fused pass's work items (cuda/fused_items.h) on the host, so tests
// check them without a GPU.
#include <ATen/core/Tensor.h>

#include "cuda/fused_items.h"
#include "testing/host_ops.h"
#include "testing/items_host.h"

namespace lenet_ext {
namespace testing {

// The CUDA fused block's forward and backward (every gradient) on CPU tensors, by its own work items;
// the convolutions are the CPU operators. Returns (output, activation, grad_input, grad_weight, grad_bias).
std::tuple<at::Tensor, at::Tensor, fused::MaybeTensor, fused::MaybeTensor, fused::MaybeTensor> cuda_fused_on_host(
    const at::Tensor& input, const at::Tensor& weight, const fused::MaybeTensor& bias, const at::Tensor& grad_output,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool,
    bool int64_index) {
  TORCH_CHECK(input.device().is_cpu(), "lenet_ext_testing.cuda_fused_on_host: expected CPU tensors");
  const HostRunner run{int64_index};
  auto [out, act] = fused::forward_items(run, input, weight, bias, stride, padding, dilation, groups, pool);
  auto [gx, gw, gb] = fused::backward_items(run, grad_output, input, weight, act, stride, padding, dilation, groups,
                                            pool, {true, true, bias.has_value()});
  return {out, act, gx, gw, gb};
}

}  // namespace testing
}  // namespace lenet_ext
