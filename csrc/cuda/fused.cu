// LeNet's conv -> sigmoid -> avg-pool block on CUDA. The convolutions are lenet_ext's CUDA conv kernels;
// what follows them is either the composite (ATen's sigmoid, lenet_ext's avg_pool2d, verified on a GPU:
// csrc/composite.cpp) or, with lenet_ext.backends.cuda_fused_block("fused"), one pass each way, whose
// per-element code (work items) and bodies are in fused_items.h, run by items.cuh's kernel.
//
// The GPUs the fused pass has passed its parity tests on (tests/test_fused.py, tests/test_cuda.py) are in
// csrc/cuda/families.h (fused_pass): none yet, so "auto", the default, runs the composite.
#include <torch/library.h>

#include "cuda/items.cuh"
#include "cuda/launch.cuh"
#include "cuda/fused_items.h"

namespace lenet_ext {
namespace {

std::tuple<at::Tensor, at::Tensor> fused_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                                                      const fused::MaybeTensor& bias, at::IntArrayRef stride,
                                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                                      int64_t groups, at::IntArrayRef pool) {
  if (!fused::cuda_fused_pass()) {
    return fused::forward_composite(input, weight, bias, stride, padding, dilation, groups, pool);
  }
  const c10::cuda::CUDAGuard guard(input.device());
  return fused::forward_items(CudaRunner{}, input, weight, bias, stride, padding, dilation, groups, pool);
}

fused::Grads fused_backward_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& act, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool,
                                 std::array<bool, 3> mask) {
  if (!fused::cuda_fused_pass()) {
    return fused::backward_composite(grad, input, weight, act, stride, padding, dilation, groups, pool, mask);
  }
  const c10::cuda::CUDAGuard guard(input.device());
  return fused::backward_items(CudaRunner{}, grad, input, weight, act, stride, padding, dilation, groups, pool, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CUDA, m) {
  m.impl("conv2d_sigmoid_avgpool2d", &fused_forward_cuda);
  m.impl("conv2d_sigmoid_avgpool2d_backward", &fused_backward_cuda);
}

}  // namespace lenet_ext
