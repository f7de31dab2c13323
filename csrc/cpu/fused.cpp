// LeNet's conv -> sigmoid -> avg-pool block on the CPU (see csrc/ops.cpp for the schemas).
//
// The convolution is lenet_ext's own conv2d operator, called through the dispatcher (fused.h), so it runs
// the CPU conv kernel. What is fused is everything after it:
//   forward   the sigmoid runs in place on the conv output (ATen's vectorised sigmoid: no new map),
//             then one pass pools it;
//   backward  one pass writes dz = unpool(grad) / (k*k) * a * (1 - a), then conv2d_backward; eager
//             torch writes and reads the unpooled gradient and the sigmoid's gradient as two maps.
// The pool is kernel = stride = pool_size, unpadded, floor mode: every window lies inside the map, and
// rows/columns past the last whole window get no gradient.
//
// A dtype the fused pass does not cover (bfloat16) runs the composite every other device shares
// (composite.cpp: ATen's sigmoid and lenet_ext's avg_pool2d), the same arithmetic. CUDA has its own
// fused pass (cuda/fused.cu, cuda/fused_items.h), opt-in until a GPU run has passed its tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/common.h"
#include "cpu/memory.h"
#include "fused.h"

namespace lenet_ext {
namespace {

using fused::conv2d_backward;
using fused::conv2d_forward;
using fused::Grads;
using fused::MaybeTensor;

// ------------------------------------------------------------------------------------------- CPU
// Mean over each kh x kw window of one plane of the activation. The kh rows under a row of windows are
// first summed column by column into `rows` (a W-long scratch row: plain vector loops), then each
// window's kw columns. KW is the window width where it is known at compile time (LeNet's 2), else 0.
template <int KW, typename scalar_t>
void pool_plane(const scalar_t* a, scalar_t* y, scalar_t* rows, int64_t H, int64_t W, int64_t kh, int64_t kw_arg) {
  const int64_t kw = KW > 0 ? KW : kw_arg;
  const int64_t PH = H / kh, PW = W / kw, used = PW * kw;
  const scalar_t scale = scalar_t(1) / static_cast<scalar_t>(kh * kw);
  for (int64_t ph = 0; ph < PH; ++ph) {
    const scalar_t* top = a + ph * kh * W;
    std::copy(top, top + used, rows);
    for (int64_t i = 1; i < kh; ++i) {
      const scalar_t* arow = top + i * W;
      for (int64_t w = 0; w < used; ++w) {
        rows[w] += arow[w];
      }
    }
    scalar_t* yrow = y + ph * PW;
    for (int64_t pw = 0; pw < PW; ++pw) {
      scalar_t sum = rows[pw * kw];
      for (int64_t j = 1; j < kw; ++j) {
        sum += rows[pw * kw + j];
      }
      yrow[pw] = sum * scale;
    }
  }
}

// dz = unpool(g) / (kh*kw) * a * (1 - a) for one plane; `spread` is a W-long scratch row holding each
// pooled row's gradient repeated over its window's columns, so the inner loop is a plain vector loop.
// KW as for pool_plane.
template <int KW, typename scalar_t>
void sigmoid_pool_grad_plane(const scalar_t* g, const scalar_t* a, scalar_t* dz, scalar_t* spread, int64_t H,
                             int64_t W, int64_t kh, int64_t kw_arg) {
  const int64_t kw = KW > 0 ? KW : kw_arg;
  const int64_t PH = H / kh, PW = W / kw;
  const scalar_t scale = scalar_t(1) / static_cast<scalar_t>(kh * kw);
  std::fill(spread + PW * kw, spread + W, scalar_t(0));  // columns past the last window get nothing
  for (int64_t ph = 0; ph < PH; ++ph) {
    for (int64_t pw = 0; pw < PW; ++pw) {
      const scalar_t v = g[ph * PW + pw] * scale;
      for (int64_t j = 0; j < kw; ++j) {
        spread[pw * kw + j] = v;
      }
    }
    for (int64_t h = ph * kh; h < (ph + 1) * kh; ++h) {
      const scalar_t* arow = a + h * W;
      scalar_t* drow = dz + h * W;
      for (int64_t w = 0; w < W; ++w) {
        drow[w] = spread[w] * arow[w] * (scalar_t(1) - arow[w]);
      }
    }
  }
  std::fill(dz + PH * kh * W, dz + H * W, scalar_t(0));  // rows past the last window
}

// The forward sigmoids and pools this many bytes of planes at a time, so they stay in L2 in between.
constexpr int64_t kFusedBandBytes = 256 * 1024;

bool cpu_fusable(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

std::tuple<at::Tensor, at::Tensor> fused_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                                     const MaybeTensor& bias, at::IntArrayRef stride,
                                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                     at::IntArrayRef pool) {
  // the fused pass reads NCHW planes; the results go back in the conv's memory format
  const at::Tensor z = conv2d_forward(input, weight, bias, stride, padding, dilation, groups).contiguous();
  check_fused_pool(pool, z);
  if (!cpu_fusable(z)) {
    return fused::forward_composite(input, weight, bias, stride, padding, dilation, groups, pool);
  }
  const int64_t H = z.size(2), W = z.size(3), planes = z.size(0) * z.size(1);
  at::Tensor y = cpu::empty_fresh({z.size(0), z.size(1), H / pool[0], W / pool[1]}, z.options());
  // A band of planes at a time: ATen's vectorised sigmoid in place (z is not needed again), then the
  // pool, which reads the band back from cache rather than from memory.
  const at::Tensor flat = z.view({planes, H * W});
  const int64_t band = std::max<int64_t>(1, kFusedBandBytes / std::max<int64_t>(1, H * W * z.element_size()));
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conv2d_sigmoid_avgpool2d_cpu", [&] {
    const scalar_t* ad = z.const_data_ptr<scalar_t>();
    scalar_t* yd = y.mutable_data_ptr<scalar_t>();
    const int64_t out_plane = (H / pool[0]) * (W / pool[1]);
    at::parallel_for(0, ceil_div(planes, band), 1, [&](int64_t b0, int64_t b1) {
      const BelowAutograd below_autograd;  // for the sigmoid, an ATen call on a worker thread
      std::vector<scalar_t> rows(W);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t q0 = b * band, q1 = std::min(planes, q0 + band);
        flat.slice(0, q0, q1).sigmoid_();
        with_constant_or_any<2>(pool[1], [&](auto kw) {
          for (int64_t q = q0; q < q1; ++q) {  // q is one (n, c) plane
            pool_plane<decltype(kw)::value>(ad + q * H * W, yd + q * out_plane, rows.data(), H, W, pool[0], pool[1]);
          }
        });
      }
    });
  });
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  return {y.contiguous(fmt), z.contiguous(fmt)};
}

Grads fused_backward_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& act, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, int64_t groups, at::IntArrayRef pool, std::array<bool, 3> mask) {
  check_fused_grad(grad, act, pool);
  if (!cpu_fusable(act)) {
    return fused::backward_composite(grad, input, weight, act, stride, padding, dilation, groups, pool, mask);
  }
  const at::Tensor g = grad.contiguous(), a = act.contiguous();
  at::Tensor dz = cpu::empty_fresh(a.sizes(), a.options());
  const int64_t H = a.size(2), W = a.size(3), out_plane = (H / pool[0]) * (W / pool[1]);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "conv2d_sigmoid_avgpool2d_backward_cpu", [&] {
    const scalar_t* gd = g.const_data_ptr<scalar_t>();
    const scalar_t* ad = a.const_data_ptr<scalar_t>();
    scalar_t* dd = dz.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.size(0) * a.size(1), 1, [&](int64_t p0, int64_t p1) {
      std::vector<scalar_t> spread(W);
      with_constant_or_any<2>(pool[1], [&](auto kw) {
        for (int64_t q = p0; q < p1; ++q) {
          sigmoid_pool_grad_plane<decltype(kw)::value>(gd + q * out_plane, ad + q * H * W, dd + q * H * W,
                                                       spread.data(), H, W, pool[0], pool[1]);
        }
      });
    });
  });
  return conv2d_backward(dz, input, weight, stride, padding, dilation, groups, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CPU, m) {
  m.impl("conv2d_sigmoid_avgpool2d", &fused_forward_cpu);
  m.impl("conv2d_sigmoid_avgpool2d_backward", &fused_backward_cpu);
}

}  // namespace lenet_ext
