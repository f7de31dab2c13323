// Every lenet_ext operator schema, in one place, and the init function of the lenet_ext._C module: first
// the public operators, then the private settings and queries that the package itself needs
// (lenet_ext.backends, the fake kernels). Nothing else: the test-only operators are under their own
// namespace, lenet_ext_testing (testing/ops.cpp).
//
// Kernels live in cpu/<op>.cpp and cuda/<op>.cu and register themselves with TORCH_LIBRARY_IMPL; the
// settings register with their backend (cpu/settings.cpp, cuda/settings.cpp), the shared composites and
// queries in composite.cpp. Fake (meta) kernels and autograd are registered from Python in lenet_ext/ops/ (fake.py, autograd.py, ...).
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
  // ------------------------------------------------------------------------------- public operators
  m.def(
      "conv2d_forward(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups) -> Tensor");
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
      "avg_pool2d_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");

  m.def(
      "conv2d_sigmoid_avgpool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, int[2] pool_size) -> (Tensor, Tensor)");
  m.def(
      "conv2d_sigmoid_avgpool2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor activation, "
      "int[2] stride, int[4] padding, int[2] dilation, int groups, int[2] pool_size, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");

  // ------------------------------------------------------------- private: settings and queries
  // Each _set_* operator keeps one process-wide choice (setting.h): -1 only reads it, any other value sets
  // it; it returns the previous setting. lenet_ext.backends wraps each one in a setting users call.

  // The CPU conv2d algorithm: 0 auto (the documented heuristic), 1 direct (the register tiles), 2 im2col,
  // 3 winograd, 4 reference (every pass). Used by lenet_ext.backends.conv_algorithm.
  m.def("_set_conv_algorithm(int algorithm) -> int");
  // The CPU pooling kernels, every pass: 0 auto (the fast kernels), 1 reference. Used by
  // lenet_ext.backends.pool_algorithm.
  m.def("_set_pool_algorithm(int algorithm) -> int");
  // When true, each new CPU conv2d shape times its candidate algorithms once and keeps the fastest for
  // the process. Used by lenet_ext.backends.autotune.
  m.def("_set_conv_benchmark(int enabled) -> int");
  // The CPU instruction-set level of the tile kernels: 0 default, 1 avx2, 2 avx512; a level this CPU
  // lacks is an error. Used by lenet_ext.backends.cpu_isa.
  m.def("_set_cpu_isa(int level) -> int");
  // Whether this CPU (and this build) runs a level.
  m.def("_cpu_isa_supported(int level) -> bool");
  // Whether the CPU kernels advise their fresh result buffers as transparent huge pages: 0 on, 1 off.
  // Used by lenet_ext.backends.huge_pages.
  m.def("_set_huge_pages(int choice) -> int");
  // The CUDA conv2d kernels: 0 auto (the verified families, csrc/cuda/families.h), 1 implicit GEMM for
  // every pass, 2 the direct kernels of cuda/conv2d_items.h for every pass, 3 the implicit GEMM on tensor
  // cores for 16-bit types. Used by lenet_ext.backends.cuda_conv_algorithm.
  m.def("_set_cuda_conv_algorithm(int algorithm) -> int");
  // The CUDA pooling kernels for channels_last inputs: 0 auto (csrc/cuda/families.h), 1 planar (copy to
  // NCHW and back), 2 native channels_last. Used by lenet_ext.backends.cuda_pool_layout.
  m.def("_set_cuda_pool_layout(int layout) -> int");
  // How the CUDA planar pooling forwards split their work: 0 auto (csrc/cuda/families.h), 1 one output
  // per item, 2 runs of outputs along a row. Used by lenet_ext.backends.cuda_pool_planar.
  m.def("_set_cuda_pool_planar(int planar) -> int");
  // The CUDA fused block's pass after the conv: 0 auto (csrc/cuda/families.h), 1 the composite (ATen's
  // sigmoid, our avg_pool2d), 2 the fused pass of cuda/fused_items.h. Used by
  // lenet_ext.backends.cuda_fused_block.
  m.def("_set_cuda_fused_block(int choice) -> int");
  // The CUDA kernel families (csrc/cuda/families.h), each as "name" or, where a GPU run has passed its
  // parity tests, "name|gpu|torch|commit|date". Used by lenet_ext.backends.cuda_verified.
  m.def("_cuda_families() -> str[]");
  // The operators' dtype tables (checks.h), read by the fake kernels in lenet_ext/ops/fake.py: true when operator `op`
  // (a conv or pooling schema name above) takes dtype `dtype`.
  m.def("_accepts_dtype(str op, ScalarType dtype) -> bool");
}
