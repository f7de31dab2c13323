// The fused LeNet block's pass after the convolution, as work items for host and device alike (as
// pool2d_items.h and conv2d_items.h), and the operator bodies that run them. csrc/cuda/fused.cu runs the
// bodies with the GPU runner; the test operator lenet_ext_testing::cuda_fused_on_host
// (testing/fused_on_host.cpp) with the host runner, so tests check the items on machines without a GPU.
//
// The same pass as the CPU kernel (cpu/fused.cpp), one item per element:
//   forward   one item per pooled output: the sigmoid of its kh x kw window of conv outputs, written in
//             place (the activation, which the backward reads), and the window's mean. The items of the
//             last pooled row and column also take the activation's rows and columns past the last whole
//             window, which no window pools;
//   backward  one item per activation element: dz = g / (kh * kw) * a * (1 - a), with g the gradient of
//             the window it lies in, or 0 past the last whole window; then conv2d_backward on dz.
// The mean is of the activation as stored (rounded to a 16-bit type, as the composite's pool reads it),
// summed in the accumulation type. Gathers only: deterministic, no atomics.
//
// Which CUDA pass runs is lenet_ext.backends.cuda_fused_block's to say: "composite" (ATen's sigmoid and
// our avg_pool2d, verified on a GPU), "fused", or "auto" (the default: the fused pass once
// csrc/cuda/families.h lists it).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "checks.h"
#include "fused.h"
#include "cuda/geom.h"

namespace lenet_ext {
namespace fused {

bool cuda_fused_pass();  // cuda/settings.cpp: cuda_fused_block is "fused", or "auto" with fused_pass verified

template <typename acc>
C10_HOST_DEVICE inline acc sigmoid(acc v) {
  if constexpr (std::is_same_v<acc, float>) {
    return 1.f / (1.f + ::expf(-v));
  } else {
    return acc(1) / (acc(1) + ::exp(-v));
  }
}

// The planes (N * C of them, H x W, contiguous) and the pool (kh x kw, stride = kernel, floor mode).
template <typename index_t>
struct PoolPlanes {
  index_t H, W, kh, kw, PH, PW;  // PH = H / kh, PW = W / kw
};

template <typename scalar_t, typename index_t>
struct SigmoidPool {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;
  scalar_t* z;  // the conv output, made the activation in place
  scalar_t* y;  // the pooled output
  PoolPlanes<index_t> p;

  // i = (plane * PH + py) * PW + px
  C10_HOST_DEVICE void operator()(index_t i) const {
    const index_t px = i % p.PW;
    const index_t r = i / p.PW;
    const index_t py = r % p.PH, plane = r / p.PH;
    const index_t y0 = py * p.kh, x0 = px * p.kw;
    const index_t y_end = py == p.PH - 1 ? p.H : y0 + p.kh;  // the last row of windows takes the rest
    const index_t x_end = px == p.PW - 1 ? p.W : x0 + p.kw;
    scalar_t* zp = z + plane * p.H * p.W;
    acc sum = 0;
    for (index_t h = y0; h < y_end; ++h) {
      for (index_t w = x0; w < x_end; ++w) {
        const scalar_t a = static_cast<scalar_t>(sigmoid(static_cast<acc>(zp[h * p.W + w])));
        zp[h * p.W + w] = a;
        if (h < y0 + p.kh && w < x0 + p.kw) {
          sum += static_cast<acc>(a);
        }
      }
    }
    y[i] = static_cast<scalar_t>(sum / static_cast<acc>(p.kh * p.kw));
  }
};

template <typename scalar_t, typename index_t>
struct SigmoidPoolGrad {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;
  const scalar_t* grad;  // of the pooled output
  const scalar_t* act;
  scalar_t* dz;
  PoolPlanes<index_t> p;

  // i = (plane * H + h) * W + w
  C10_HOST_DEVICE void operator()(index_t i) const {
    const index_t w = i % p.W;
    const index_t r = i / p.W;
    const index_t h = r % p.H, plane = r / p.H;
    const index_t py = h / p.kh, px = w / p.kw;
    if (py >= p.PH || px >= p.PW) {
      dz[i] = scalar_t(0);
      return;
    }
    const acc g = static_cast<acc>(grad[(plane * p.PH + py) * p.PW + px]) / static_cast<acc>(p.kh * p.kw);
    const acc a = static_cast<acc>(act[i]);
    dz[i] = static_cast<scalar_t>(g * a * (acc(1) - a));
  }
};

template <typename index_t>
PoolPlanes<index_t> pool_planes(const at::Tensor& z, at::IntArrayRef pool) {
  const int64_t H = z.size(2), W = z.size(3);
  return {static_cast<index_t>(H),         static_cast<index_t>(W),         static_cast<index_t>(pool[0]),
          static_cast<index_t>(pool[1]),   static_cast<index_t>(H / pool[0]), static_cast<index_t>(W / pool[1])};
}

// ------------------------------------------------------------------------------------- operator bodies

template <typename Runner>
std::tuple<at::Tensor, at::Tensor> forward_items(const Runner& run, const at::Tensor& input, const at::Tensor& weight,
                                                 const MaybeTensor& bias, at::IntArrayRef stride,
                                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                 at::IntArrayRef pool) {
  const at::Tensor z = conv2d_forward(input, weight, bias, stride, padding, dilation, groups).contiguous();
  check_fused_pool(pool, z);
  at::Tensor y = at::empty({z.size(0), z.size(1), z.size(2) / pool[0], z.size(3) / pool[1]}, z.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "conv2d_sigmoid_avgpool2d", [&] {
    with_index_type(!run.int64_index && lenet_ext::fits_int32({z.numel()}), [&](auto index_zero) {
      using index_t = decltype(index_zero);
      run(SigmoidPool<scalar_t, index_t>{z.mutable_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                         pool_planes<index_t>(z, pool)},
          y.numel());
    });
  });
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  return {y.contiguous(fmt), z.contiguous(fmt)};
}

template <typename Runner>
Grads backward_items(const Runner& run, const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                     const at::Tensor& act, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                     int64_t groups, at::IntArrayRef pool, std::array<bool, 3> mask) {
  check_fused_grad(grad, act, pool);
  const at::Tensor g = grad.contiguous(), a = act.contiguous();
  at::Tensor dz = at::empty_like(a, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "conv2d_sigmoid_avgpool2d_backward", [&] {
    with_index_type(!run.int64_index && lenet_ext::fits_int32({a.numel()}), [&](auto index_zero) {
      using index_t = decltype(index_zero);
      run(SigmoidPoolGrad<scalar_t, index_t>{g.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
                                             dz.mutable_data_ptr<scalar_t>(), pool_planes<index_t>(a, pool)},
          a.numel());
    });
  });
  return conv2d_backward(dz, input, weight, stride, padding, dilation, groups, mask);
}

}  // namespace fused
}  // namespace lenet_ext
