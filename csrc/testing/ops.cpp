// The test-only operators, under their own namespace: torch.ops.lenet_ext_testing, never
// torch.ops.lenet_ext. They are compiled into the same lenet_ext._C library, so importing lenet_ext makes
// them available, but they are not part of lenet_ext's API: they let the tests run the CUDA kernels' own
// index arithmetic on the CPU (the host runner, testing/items_host.h) and probe shape.h's math at sizes no
// tensor could have. Their C++ entry points are declared in testing/host_ops.h.
#include <torch/library.h>

#include "testing/host_ops.h"

TORCH_LIBRARY(lenet_ext_testing, m) {
  // shape.h's index math for one spatial dimension, checked exactly as every kernel's arguments are:
  // window_output_size is the output length; valid_outputs is [lo, hi) for kernel tap `tap_index`.
  m.def(
      "window_output_size(int n, int pad_begin, int pad_end, int kernel, int stride, int dilation, "
      "bool ceil_mode) -> int");
  m.def(
      "valid_outputs(int n, int pad_begin, int pad_end, int kernel, int stride, int dilation, bool ceil_mode, "
      "int tap_index) -> int[]");
  // The opt-in families of csrc/cuda/families.h that the CUDA settings take now (for the calls each
  // applies to), by name; for the tests of "auto".
  m.def("cuda_families_in_use() -> str[]");
  // The CUDA fused block's forward and backward, computed on CPU tensors by its own work items (the
  // convolutions are the CPU operators). Returns (output, activation, grad_input, grad_weight, grad_bias).
  m.def(
      "cuda_fused_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, int[2] pool_size, bool int64_index=False) "
      "-> (Tensor, Tensor, Tensor?, Tensor?, Tensor?)");
  // The direct CUDA conv2d kernels' forward, input gradient and weight gradient, computed on CPU tensors
  // by their own work items; int64_index forces the int64 work items. Returns (output, grad_input,
  // grad_weight).
  m.def(
      "cuda_conv2d_direct_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool int64_index=False) -> (Tensor, Tensor, Tensor)");
  // The CUDA implicit GEMMs' forward, input gradient (in stride phases when `phased`) and weight gradient,
  // computed on CPU tensors by the kernels' own gathers and stores (cuda/gemm_gather.h), without their
  // tiling. Returns (output, grad_input, grad_weight).
  m.def(
      "cuda_conv2d_gemm_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool phased, bool int64_index=False) "
      "-> (Tensor, Tensor, Tensor)");
  // The CUDA pooling operator `op` computed on CPU tensors by the CUDA kernels' own bodies and work items;
  // int64_index forces the int64 work items, planar_runs the planar forwards' run items. Returns (result,
  // indices of max_pool2d_forward).
  m.def(
      "cuda_pool2d_on_host(str op, Tensor input, Tensor? grad_output, Tensor? indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, bool count_include_pad, "
      "int? divisor_override, bool native_nhwc, bool int64_index=False, bool planar_runs=False) "
      "-> (Tensor, Tensor?)");
}

// The host operators take CPU tensors and check that they are; the probes take none: one registration
// for every backend.
TORCH_LIBRARY_IMPL(lenet_ext_testing, CompositeExplicitAutograd, m) {
  using namespace lenet_ext::testing;
  m.impl("window_output_size", &probe_window_output_size);
  m.impl("valid_outputs", &probe_valid_outputs);
  m.impl("cuda_families_in_use", &cuda_families_in_use);
  m.impl("cuda_fused_on_host", &cuda_fused_on_host);
  m.impl("cuda_conv2d_direct_on_host", &cuda_conv2d_direct_on_host);
  m.impl("cuda_conv2d_gemm_on_host", &cuda_conv2d_gemm_on_host);
  m.impl("cuda_pool2d_on_host", &cuda_pool2d_on_host);
}
