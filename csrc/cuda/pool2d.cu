// max_pool2d and avg_pool2d on CUDA: forward (max with or without indices) and backward.
//
// Where the code is: this file holds the entry points (max_pool2d_forward_cuda, ...), which take the
// device guard and call the operators' bodies with the GPU runner. The bodies (argument checks, layout,
// choice of work item) are in pool2d_bodies.h; the per-element code, and torch's semantics, exactly, in
// pool2d_items.h's work items (the max-pool forward: MaxForwardPlanar, MaxForwardRuns, MaxForwardNhwc);
// the kernel that runs a work item, a grid-stride loop, in items.cuh. The bodies and items are shared with
// the host emulation that tests them on the CPU (testing/pool2d_on_host.cpp). Every argument check and
// the accepted-input table come from checks.h, shared with the CPU and fake kernels.
//
// Algorithm: one thread per work item, in a grid-stride loop. Forwards: an item is one output element
// (planar NCHW) or one output pixel's run of V channels (channels_last). Backwards are gathers, one item
// per input element or run: no atomics, so both backwards are deterministic.
//
// Layout: channels_last inputs give channels_last results. Which kernels compute them is chosen by
// lenet_ext.backends.cuda_pool_layout ("auto", the default, takes "native" once it is verified):
//   "planar"            copy to NCHW, planar kernels, copy the result back;
//   "native"            channels_last kernels on the input as it is, V channels per aligned vector access.
// Every other layout is copied to contiguous NCHW for the planar kernels. How the planar forwards split
// their work is chosen by lenet_ext.backends.cuda_pool_planar ("auto", the default, takes "runs" once it
// is verified):
//   "outputs"           one item per output element;
//   "runs"              one item per run of pool::kRun outputs along a row, which decodes its row once;
//                       for 2x2 stride-2 column windows it loads its span of each window row in vectors.
//
// The GPUs each kernel family has passed its parity tests on (tests/test_pool2d.py, tests/test_cuda.py)
// are in csrc/cuda/families.h, which "auto" (each setting's default) reads: pool_planar is verified;
// pool_nhwc ("native") and pool_runs ("runs") run only when named until a row lists them;
// pool_planar_integer, the only integer kernel, runs unverified.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>

#include "cuda/items.cuh"
#include "cuda/launch.cuh"
#include "cuda/pool2d_bodies.h"

namespace lenet_ext {
namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                                           at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return pool::max_pool2d_forward_impl(CudaRunner{}, true, input, kernel_size, stride, padding, dilation, ceil_mode,
                                       pool::cuda_pool_kernels());
}

at::Tensor max_pool2d_forward_values_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return std::get<0>(pool::max_pool2d_forward_impl(CudaRunner{}, false, input, kernel_size, stride, padding,
                                                   dilation, ceil_mode, pool::cuda_pool_kernels()));
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return pool::max_pool2d_backward_impl(CudaRunner{}, grad_output, input, indices, kernel_size, stride, padding,
                                        dilation, ceil_mode, pool::cuda_pool_kernels());
}

at::Tensor avg_pool2d_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                   std::optional<int64_t> divisor_override) {
  const c10::cuda::CUDAGuard guard(input.device());
  return pool::avg_pool2d_forward_impl(CudaRunner{}, input, kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, divisor_override, pool::cuda_pool_kernels());
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  const c10::cuda::CUDAGuard guard(input.device());
  return pool::avg_pool2d_backward_impl(CudaRunner{}, grad_output, input, kernel_size, stride, padding, ceil_mode,
                                        count_include_pad, divisor_override, pool::cuda_pool_kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CUDA, m) {
  m.impl("max_pool2d_forward", &max_pool2d_forward_cuda);
  m.impl("max_pool2d_forward_values", &max_pool2d_forward_values_cuda);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cuda);
  m.impl("avg_pool2d_forward", &avg_pool2d_forward_cuda);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward_cuda);
}

}  // namespace lenet_ext
