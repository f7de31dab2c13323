// Every lenet_ext operator schema, in one place, and the init function of the lenet_ext._C module.
//
// Kernels live in cpu/<op>.cpp and cuda/<op>.cu and register themselves with TORCH_LIBRARY_IMPL;
// fake (meta) kernels and autograd are registered from Python in lenet_ext/ops.py.
//
// Conventions shared by the schemas:
//   * conv padding is (top, bottom, left, right), so padding='same' with an even kernel is exact;
//   * pooling padding is symmetric (top/bottom, left/right), as in torch;
//   * each backward is an operator of its own; conv2d_backward computes only the gradients whose
//     output_mask entry is true and returns None for the others.
#include <Python.h>

#include <torch/library.h>

// Importing lenet_ext._C loads this library, which runs the registrations below. The module itself
// is empty: every entry point is a torch operator under torch.ops.lenet_ext.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(lenet_ext, m) {
  m.def(
      "conv2d_forward(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // Selects the CPU conv2d algorithm: 0 auto (the documented heuristic), 1 direct, 2 im2col, 3 winograd,
  // 4 reference (every pass); -1 only reads it. Returns the previous setting. Used by lenet_ext.backends.conv_algorithm.
  m.def("_set_conv_algorithm(int algorithm) -> int");
  // Selects the CPU pooling kernels, every pass: 0 auto (the fast kernels), 1 reference; -1 only reads it.
  // Returns the previous setting. Used by lenet_ext.backends.pool_algorithm.
  m.def("_set_pool_algorithm(int algorithm) -> int");
  // The CPU instruction-set level of the tile kernels: 0 default, 1 avx2, 2 avx512; -1 only reads it.
  // Returns the previous level; a level this CPU lacks is an error. Used by lenet_ext.backends.cpu_isa.
  m.def("_set_cpu_isa(int level) -> int");
  // Whether this CPU (and this build) runs a level.
  m.def("_cpu_isa_supported(int level) -> bool");
  // When true, each new CPU conv2d shape times its candidate algorithms once and keeps the fastest for
  // the process (lenet_ext.backends.benchmark); -1 only reads it. Returns the previous setting.
  m.def("_set_conv_benchmark(int enabled) -> int");
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");

  // max_pool2d_forward returns the output and the int64 flat index (h * W + w) of each maximum in its
  // input plane; max_pool2d_forward_values is the same without indices, for when no gradient is needed.
  m.def(
      "max_pool2d_forward(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_forward_values(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");

  m.def(
      "avg_pool2d_forward(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
      "bool count_include_pad, int? divisor_override) -> Tensor");
  m.def(
      "conv2d_sigmoid_avgpool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, int[2] pool_size) -> (Tensor, Tensor)");
  m.def(
      "conv2d_sigmoid_avgpool2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor activation, "
      "int[2] stride, int[4] padding, int[2] dilation, int groups, int[2] pool_size, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");
  m.def(
      "avg_pool2d_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");

  // Private: shape.h's index math for one spatial dimension, checked exactly as every kernel's
  // arguments are, so tests can probe it at sizes no tensor could have (past 2^31, up to 2^40).
  // _window_output_size is the output length; _valid_outputs is [lo, hi) for kernel tap `tap_index`.
  m.def(
      "_window_output_size(int n, int pad_begin, int pad_end, int kernel, int stride, int dilation, "
      "bool ceil_mode) -> int");
  m.def(
      "_valid_outputs(int n, int pad_begin, int pad_end, int kernel, int stride, int dilation, bool ceil_mode, "
      "int tap_index) -> int[]");

  // Private: the operators' dtype tables (checks.h), read by the fake kernels in ops.py; true when
  // operator `op` (a conv or pooling schema name above) takes dtype `dtype`.
  m.def("_accepts_dtype(str op, ScalarType dtype) -> bool");
  // Selects the CUDA pooling kernels for channels_last inputs: 0 auto (csrc/cuda_families.h), 1 planar
  // (copy to NCHW and back), 2 native channels_last; -1 only reads it. Returns the previous setting. Used
  // by lenet_ext.backends.cuda_pool_layout.
  m.def("_set_cuda_pool_layout(int layout) -> int");
  // Selects how the CUDA planar pooling forwards split their work: 0 auto (csrc/cuda_families.h), 1 one
  // output per item, 2 runs of outputs along a row; -1 only reads it. Returns the previous setting. Used
  // by lenet_ext.backends.cuda_pool_planar.
  m.def("_set_cuda_pool_planar(int planar) -> int");
  // Selects the CUDA conv2d kernels: 0 auto (the verified families, csrc/cuda_families.h), 1 implicit GEMM
  // for every pass, 2 the direct kernels of conv2d_items.h for every pass, 3 the implicit GEMM on tensor
  // cores for 16-bit types; -1 only reads it. Returns the previous setting. Used by
  // lenet_ext.backends.cuda_conv_algorithm.
  m.def("_set_cuda_conv_algorithm(int algorithm) -> int");
  // Selects the CUDA fused block's pass after the conv: 0 auto (csrc/cuda_families.h), 1 the composite
  // (ATen's sigmoid, our avg_pool2d), 2 the fused pass of fused_items.h; -1 only reads it. Returns the
  // previous setting. Used by lenet_ext.backends.cuda_fused_block.
  m.def("_set_cuda_fused_block(int choice) -> int");
  // Private: the CUDA kernel families (csrc/cuda_families.h), each as "name" or, where a GPU run has
  // passed its parity tests, "name|gpu|torch|commit|date". Used by lenet_ext.backends.cuda_verified.
  m.def("_cuda_families() -> str[]");
  // Private: the opt-in families of csrc/cuda_families.h that the CUDA settings take now (for the calls each
  // applies to), by name; for the tests of "auto".
  m.def("_cuda_families_in_use() -> str[]");
  // Private: the CUDA fused block's forward and backward, computed on CPU tensors by its own work items
  // (the convolutions are the CPU operators). Returns (output, activation, grad_input, grad_weight, grad_bias).
  m.def(
      "_cuda_fused_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, int[2] pool_size, bool int64_index=False) "
      "-> (Tensor, Tensor, Tensor?, Tensor?, Tensor?)");
  // Private: the direct CUDA conv2d kernels' forward, input gradient and weight gradient, computed on CPU
  // tensors by their own work items, so tests check their index arithmetic without a GPU; int64_index
  // forces the int64 work items. Returns (output, grad_input, grad_weight).
  m.def(
      "_cuda_conv2d_direct_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool int64_index=False) -> (Tensor, Tensor, Tensor)");
  // Private: the CUDA implicit GEMMs' forward, input gradient (in stride phases when `phased`) and weight
  // gradient, computed on CPU tensors by the kernels' own gathers and stores (gemm_gather.h), without their
  // tiling. Returns (output, grad_input, grad_weight).
  m.def(
      "_cuda_conv2d_gemm_on_host(Tensor input, Tensor weight, Tensor? bias, Tensor grad_output, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool phased, bool int64_index=False) "
      "-> (Tensor, Tensor, Tensor)");
  // Private: the CUDA pooling operator `op` computed on CPU tensors by the CUDA kernels' own work items,
  // so tests check their index arithmetic without a GPU; int64_index forces the int64 work items,
  // planar_runs the planar forwards' run items. Returns (result, indices of max_pool2d_forward).
  m.def(
      "_cuda_pool2d_on_host(str op, Tensor input, Tensor? grad_output, Tensor? indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, bool count_include_pad, "
      "int? divisor_override, bool native_nhwc, bool int64_index=False, bool planar_runs=False) "
      "-> (Tensor, Tensor?)");
}
