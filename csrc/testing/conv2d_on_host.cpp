// The test operators that run the CUDA conv kernels' index arithmetic on the host, so tests check it
// without a GPU: the direct kernels' work items (cuda/conv2d_items.h), and the implicit GEMMs' gathers and
// stores (cuda/gemm_gather.h).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "cuda/conv2d_items.h"
#include "cuda/gemm_gather.h"
#include "testing/host_ops.h"
#include "testing/items_host.h"

namespace lenet_ext {
namespace testing {
namespace {

// What both host operators check and prepare: a forward and backward of one convolution on CPU tensors
// with elements, its parameters, and its operands made contiguous.
struct HostConv {
  Conv2dParams p;
  at::Tensor x, w, go;
  std::optional<at::Tensor> b;
};

HostConv host_conv(const char* name, const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const at::Tensor& grad_output, c10::IntArrayRef stride,
                   c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.device().is_cpu(), name, ": expected CPU tensors");
  const Conv2dParams p = check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  TORCH_CHECK(input.numel() > 0 && weight.numel() > 0 && grad_output.numel() > 0, name,
              ": expected tensors with elements");
  return {p, input.contiguous(), weight.contiguous(), grad_output.contiguous(),
          bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt};
}

}  // namespace

// The direct CUDA kernels' forward, input gradient and weight gradient, computed on CPU tensors by their
// own work items. Operands and results must not be empty.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_conv2d_direct_on_host(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& grad_output, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, bool int64_index) {
  constexpr const char* name = "lenet_ext_testing.cuda_conv2d_direct_on_host";
  const auto [p, x, w, go, b] = host_conv(name, input, weight, bias, grad_output, stride, padding, dilation, groups);
  at::Tensor out = at::empty(grad_output.sizes(), x.options());
  at::Tensor gx = at::empty(x.sizes(), x.options()), gw = at::empty(w.sizes(), w.options());
  const HostRunner run{int64_index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), name, [&] {
    with_index_type(!int64_index && conv::fits_int32(p), [&](auto index_zero) {
      using index_t = decltype(index_zero);
      conv::direct_forward<scalar_t, index_t>(run, x, w, b ? &*b : nullptr, out, p);
      conv::direct_grad_input<scalar_t, index_t>(run, go, w, gx, p);
      conv::direct_grad_weight<scalar_t, index_t>(run, go, x, gw, p);
    });
  });
  return {out, gx, gw};
}

namespace {

// C = A B of one implicit-GEMM mode, element by element: the kernels' gathers (load_a, load_b through
// column_of) and stores (store_c), without their tiling. The weight gradient is one chunk.
template <cuda::Mode mode, typename scalar_t, typename index_t>
void host_gemm(const cuda::GemmArgs<scalar_t>& args, const Geom<index_t>& g, const cuda::Phase<index_t>& ph = {}) {
  using acc = acc_t<scalar_t>;
  const cuda::GemmShape<index_t> shape = cuda::gemm_shape<mode, index_t>(g, ph);
  for (index_t grp = 0; grp < g.G; ++grp) {
    for (index_t n = 0; n < shape.N; ++n) {
      const cuda::Column<index_t> col = cuda::column_of<mode, index_t>(g, ph, grp, n, shape.N);
      for (index_t m = 0; m < shape.M; ++m) {
        acc sum = 0;
        for (index_t k = 0; k < shape.K; ++k) {
          sum += cuda::load_a<mode, scalar_t, index_t>(args, g, ph, grp, m, k) *
                 cuda::load_b<mode, scalar_t, index_t>(args, g, ph, col, k);
        }
        cuda::store_c<mode, scalar_t, index_t>(args, g, ph, shape, grp, m, n, index_t{0}, sum);
      }
    }
  }
}

}  // namespace

// The implicit GEMMs' forward, input gradient (in stride phases when `phased`) and weight gradient,
// computed on CPU tensors by the CUDA kernels' own gathers and stores. Operands and results must not be
// empty; `phased` needs an undilated convolution.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_conv2d_gemm_on_host(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& grad_output, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    int64_t groups, bool phased, bool int64_index) {
  constexpr const char* name = "lenet_ext_testing.cuda_conv2d_gemm_on_host";
  const auto [p, x, w, go, b] = host_conv(name, input, weight, bias, grad_output, stride, padding, dilation, groups);
  TORCH_CHECK(!phased || (p.win.dilation[0] == 1 && p.win.dilation[1] == 1), name,
              ": the phased input gradient is for undilated convolutions");
  at::Tensor out = at::empty(grad_output.sizes(), x.options());
  at::Tensor gx = at::empty(x.sizes(), x.options()), gw;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), name, [&] {
    const auto acc_dtype = std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
    at::Tensor partial = at::empty({1, w.numel()}, w.options().dtype(acc_dtype));
    with_index_type(!int64_index && conv::fits_int32(p), [&](auto index_zero) {
      using index_t = decltype(index_zero);
      const Geom<index_t> g = geom_of<index_t>(p);
      const cuda::GemmArgs<scalar_t> args{x.const_data_ptr<scalar_t>(),
                                          w.const_data_ptr<scalar_t>(),
                                          go.const_data_ptr<scalar_t>(),
                                          b ? b->const_data_ptr<scalar_t>() : nullptr,
                                          nullptr,
                                          partial.mutable_data_ptr<acc_t<scalar_t>>()};
      cuda::GemmArgs<scalar_t> fwd = args, dgrad = args;
      fwd.out = out.mutable_data_ptr<scalar_t>();
      dgrad.out = gx.mutable_data_ptr<scalar_t>();
      host_gemm<cuda::Mode::kForward>(fwd, g);
      if (phased) {
        for (index_t ry = 0; ry < g.sh; ++ry) {
          for (index_t rx = 0; rx < g.sw; ++rx) {
            const cuda::Phase<index_t> ph = cuda::phase_of(g, ry, rx);
            if (ph.H > 0 && ph.W > 0) {
              host_gemm<cuda::Mode::kGradInputPhased>(dgrad, g, ph);
            }
          }
        }
      } else {
        host_gemm<cuda::Mode::kGradInput>(dgrad, g);
      }
      host_gemm<cuda::Mode::kGradWeight>(args, g);
    });
    gw = partial.view(w.sizes()).to(w.scalar_type());
  });
  return {out, gx, gw};
}

}  // namespace testing
}  // namespace lenet_ext
