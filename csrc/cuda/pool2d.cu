// max_pool2d and avg_pool2d on CUDA: forward (max with or without indices) and backward.
//
// Semantics are torch's, exactly:
//   * max: a NaN in the window wins (the comparison is `v > best || isnan(v)`, so the last NaN's index
//     is kept); a window of only -inf gives -inf and the index of its first real element; indices are
//     flat h * W + w within each input plane;
//   * avg: the divisor is divisor_override if given, else the window size clipped to the padded input
//     (count_include_pad) or to the input itself; a window with no input element gives 0.
//   Output sizes, ceil_mode and every argument check come from shape.h (make_pool2d_params), shared with
//   the CPU kernels.
//
// Algorithm: one thread per output element for the forwards. The backwards are gathers, one thread per
// input element: it sums, in a fixed order, the gradients of the outputs whose window covers it (for
// max, those whose index points at it). No atomics, so both backwards are deterministic.
//
// Layout: the kernels read and write contiguous NCHW (other layouts are copied once); a channels_last
// input gets a channels_last result, as on the CPU; a 3D input is one image. Half
// types accumulate in float.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "cuda/launch.cuh"
#include "shape.h"

namespace lenet_ext {
namespace {

using cuda::acc_t;
using cuda::imax;
using cuda::imin;

// The window geometry a kernel needs, narrowed to its index type.
template <typename index_t>
struct PoolGeom {
  index_t planes;  // N * C
  index_t H, W, OH, OW;
  index_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename index_t>
PoolGeom<index_t> geom_of(const Pool2dParams& p) {
  const Window2d& w = p.win;
  return {static_cast<index_t>(p.batch * p.channels),
          static_cast<index_t>(w.in[0]),     static_cast<index_t>(w.in[1]),
          static_cast<index_t>(w.out[0]),    static_cast<index_t>(w.out[1]),
          static_cast<index_t>(w.kernel[0]), static_cast<index_t>(w.kernel[1]),
          static_cast<index_t>(w.stride[0]), static_cast<index_t>(w.stride[1]),
          static_cast<index_t>(w.pad[0]),    static_cast<index_t>(w.pad[1]),
          static_cast<index_t>(w.dilation[0]), static_cast<index_t>(w.dilation[1])};
}

bool pool_fits_int32(const Pool2dParams& p) {
  const int64_t planes = p.batch * p.channels;
  return cuda::fits_int32({planes * p.win.in[0] * p.win.in[1], planes * p.win.out[0] * p.win.out[1],
                           cuda::window_reach(p.win, 0), cuda::window_reach(p.win, 1)});
}

// The first tap of a dilated window at or after 0: torch starts the max window there (and takes its
// index as the all -inf answer), even when that tap is already past the input's end.
template <typename index_t>
__device__ __forceinline__ index_t first_tap(index_t start, index_t d) {
  return start >= 0 ? start : start + ((-start + d - 1) / d) * d;
}

template <typename scalar_t, typename index_t, bool kWithIndices>
__global__ void max_pool2d_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                          int64_t* __restrict__ indices, PoolGeom<index_t> g) {
  using acc = acc_t<scalar_t>;
  const index_t total = g.planes * g.OH * g.OW;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    // i is (plane, oh, ow)
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, plane = i / (g.OW * g.OH);
    const index_t h0 = first_tap<index_t>(oh * g.sh - g.ph, g.dh);
    const index_t w0 = first_tap<index_t>(ow * g.sw - g.pw, g.dw);
    const index_t h_end = imin(oh * g.sh - g.ph + (g.kh - 1) * g.dh + 1, g.H);
    const index_t w_end = imin(ow * g.sw - g.pw + (g.kw - 1) * g.dw + 1, g.W);
    const scalar_t* src = x + plane * g.H * g.W;
    acc best = -INFINITY;
    index_t best_at = h0 * g.W + w0;
    for (index_t h = h0; h < h_end; h += g.dh) {
      for (index_t w = w0; w < w_end; w += g.dw) {
        const acc v = static_cast<acc>(src[h * g.W + w]);
        if (v > best || isnan(v)) {
          best = v;
          best_at = h * g.W + w;
        }
      }
    }
    out[i] = static_cast<scalar_t>(best);
    if constexpr (kWithIndices) {
      indices[i] = best_at;
    }
  }
}

// Outputs whose (undilated-span) window can cover input position `i` along one dimension:
// o * s - p <= i <= o * s - p + (k - 1) * d, clipped to [0, out).
template <typename index_t>
__device__ __forceinline__ void covering_outputs(index_t i, index_t p, index_t span, index_t s, index_t out,
                                                 index_t& lo, index_t& hi) {
  const index_t top = i + p;  // o * s <= top
  lo = top < span ? 0 : (top - span + s - 1) / s;
  hi = imin(top / s + 1, out);
}

template <typename scalar_t, typename index_t>
__global__ void max_pool2d_backward_kernel(const scalar_t* __restrict__ grad_out,
                                           const int64_t* __restrict__ indices, scalar_t* __restrict__ grad_in,
                                           PoolGeom<index_t> g) {
  using acc = acc_t<scalar_t>;
  const index_t total = g.planes * g.H * g.W;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    // i is (plane, h, w); `at` is its flat index within the plane, as the forward recorded it
    const index_t at = i % (g.H * g.W), plane = i / (g.H * g.W);
    const index_t h = at / g.W, w = at % g.W;
    index_t oh0, oh1, ow0, ow1;
    covering_outputs<index_t>(h, g.ph, (g.kh - 1) * g.dh, g.sh, g.OH, oh0, oh1);
    covering_outputs<index_t>(w, g.pw, (g.kw - 1) * g.dw, g.sw, g.OW, ow0, ow1);
    const index_t base = plane * g.OH * g.OW;
    acc sum = 0;
    for (index_t oh = oh0; oh < oh1; ++oh) {
      for (index_t ow = ow0; ow < ow1; ++ow) {
        const index_t o = base + oh * g.OW + ow;
        if (indices[o] == static_cast<int64_t>(at)) {
          sum += static_cast<acc>(grad_out[o]);
        }
      }
    }
    grad_in[i] = static_cast<scalar_t>(sum);
  }
}

// torch's avg_pool2d window: [start, start + k) clipped to the padded input gives the count_include_pad
// size, clipped to the input gives the summed range.
template <typename index_t>
struct AvgWindow {
  index_t h0, h1, w0, w1;
  index_t padded_size;
};

template <typename index_t>
__device__ __forceinline__ AvgWindow<index_t> avg_window(index_t oh, index_t ow, const PoolGeom<index_t>& g) {
  index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  index_t h1 = imin(h0 + g.kh, g.H + g.ph), w1 = imin(w0 + g.kw, g.W + g.pw);
  const index_t padded = (h1 - h0) * (w1 - w0);
  h0 = imax(h0, index_t{0});
  w0 = imax(w0, index_t{0});
  h1 = imin(h1, g.H);
  w1 = imin(w1, g.W);
  return {h0, h1, w0, w1, padded};
}

template <typename index_t>
__device__ __forceinline__ index_t avg_divisor(const AvgWindow<index_t>& win, bool count_include_pad,
                                               int64_t divisor_override) {
  if (divisor_override != 0) {
    return static_cast<index_t>(divisor_override);
  }
  return count_include_pad ? win.padded_size : (win.h1 - win.h0) * (win.w1 - win.w0);
}

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                          PoolGeom<index_t> g, bool count_include_pad, int64_t divisor_override) {
  using acc = acc_t<scalar_t>;
  const index_t total = g.planes * g.OH * g.OW;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    // i is (plane, oh, ow)
    const index_t ow = i % g.OW, oh = (i / g.OW) % g.OH, plane = i / (g.OW * g.OH);
    const AvgWindow<index_t> win = avg_window<index_t>(oh, ow, g);
    if (win.h0 >= win.h1 || win.w0 >= win.w1) {
      out[i] = scalar_t(0);
      continue;
    }
    const scalar_t* src = x + plane * g.H * g.W;
    acc sum = 0;
    for (index_t h = win.h0; h < win.h1; ++h) {
      for (index_t w = win.w0; w < win.w1; ++w) {
        sum += static_cast<acc>(src[h * g.W + w]);
      }
    }
    out[i] = static_cast<scalar_t>(sum / static_cast<acc>(avg_divisor<index_t>(win, count_include_pad,
                                                                                divisor_override)));
  }
}

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_backward_kernel(const scalar_t* __restrict__ grad_out, scalar_t* __restrict__ grad_in,
                                           PoolGeom<index_t> g, bool count_include_pad, int64_t divisor_override) {
  using acc = acc_t<scalar_t>;
  const index_t total = g.planes * g.H * g.W;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    // i is (plane, h, w)
    const index_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    index_t oh0, oh1, ow0, ow1;
    covering_outputs<index_t>(h, g.ph, g.kh - 1, g.sh, g.OH, oh0, oh1);
    covering_outputs<index_t>(w, g.pw, g.kw - 1, g.sw, g.OW, ow0, ow1);
    const scalar_t* src = grad_out + plane * g.OH * g.OW;
    acc sum = 0;
    for (index_t oh = oh0; oh < oh1; ++oh) {
      for (index_t ow = ow0; ow < ow1; ++ow) {
        const AvgWindow<index_t> win = avg_window<index_t>(oh, ow, g);
        if (win.h0 >= win.h1 || win.w0 >= win.w1) {
          continue;
        }
        sum += static_cast<acc>(src[oh * g.OW + ow]) /
               static_cast<acc>(avg_divisor<index_t>(win, count_include_pad, divisor_override));
      }
    }
    grad_in[i] = static_cast<scalar_t>(sum);
  }
}

// ------------------------------------------------------------------------------------------ host side

// A 3D (C, H, W) input is one image; the result drops the batch dimension again.
at::Tensor as_batched(const at::Tensor& t) {
  return t.dim() == 3 ? t.unsqueeze(0) : t;
}

// The kernels write NCHW; results take the input's layout back by the rule the CPU kernels and the fake
// kernels in ops.py share: a channels_last input (that is not also contiguous) gives channels_last.
at::Tensor like_input(const at::Tensor& batched, const at::Tensor& input) {
  if (input.dim() == 3) {
    return batched.squeeze(0);
  }
  const bool channels_last = !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? batched.contiguous(at::MemoryFormat::ChannelsLast) : batched;
}

void check_pool_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4, op, ": expected 3D or 4D (batch mode) tensor for input, but ",
              "got input of size: ", input.sizes());
  cuda::check_cuda_floating(op, input);
}

std::vector<int64_t> output_sizes(const Pool2dParams& p) {
  return {p.batch, p.channels, p.win.out[0], p.win.out[1]};
}

template <bool kWithIndices>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_common(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                             at::IntArrayRef stride, at::IntArrayRef padding,
                                                             at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "max_pool2d_forward_cuda";
  check_pool_input(op, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = as_batched(input).contiguous();
  const Pool2dParams p = make_pool2d_params("lenet_ext.max_pool2d", x, kernel_size, stride, padding, dilation,
                                            ceil_mode);
  at::Tensor out = at::empty(output_sizes(p), x.options());
  at::Tensor indices = kWithIndices ? at::empty(output_sizes(p), x.options().dtype(at::kLong)) : at::Tensor();
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), op, [&] {
      cuda::dispatch_index(pool_fits_int32(p), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        max_pool2d_forward_kernel<scalar_t, index_t, kWithIndices>
            <<<cuda::grid_for(out.numel()), cuda::kBlock, 0, cuda::current_stream()>>>(
                x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                kWithIndices ? indices.mutable_data_ptr<int64_t>() : nullptr, geom_of<index_t>(p));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return {like_input(out, input), kWithIndices ? like_input(indices, input) : at::Tensor()};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                                           at::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_forward_common<true>(input, kernel_size, stride, padding, dilation, ceil_mode);
}

at::Tensor max_pool2d_forward_values_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_forward_common<false>(input, kernel_size, stride, padding, dilation, ceil_mode));
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "max_pool2d_backward_cuda";
  check_pool_input(op, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = as_batched(input);
  const Pool2dParams p = make_pool2d_params("lenet_ext.max_pool2d_backward", x, kernel_size, stride, padding,
                                            dilation, ceil_mode);
  const at::Tensor go = as_batched(grad_output);
  check_grad_output("lenet_ext.max_pool2d_backward", go, output_sizes(p), x);
  TORCH_CHECK(indices.scalar_type() == at::kLong, "lenet_ext.max_pool2d_backward: expected int64 indices, but got ",
              indices.scalar_type());
  const at::Tensor idx = as_batched(indices);
  TORCH_CHECK(idx.sizes() == go.sizes(), "lenet_ext.max_pool2d_backward: expected indices of size ", go.sizes(),
              ", but got ", indices.sizes());
  cuda::check_cuda(op, "indices", idx, x);
  at::Tensor grad_in = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (grad_in.numel() > 0) {
    const at::Tensor go_c = go.contiguous(), idx_c = idx.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), op, [&] {
      cuda::dispatch_index(pool_fits_int32(p), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        max_pool2d_backward_kernel<scalar_t, index_t>
            <<<cuda::grid_for(grad_in.numel()), cuda::kBlock, 0, cuda::current_stream()>>>(
                go_c.const_data_ptr<scalar_t>(), idx_c.const_data_ptr<int64_t>(),
                grad_in.mutable_data_ptr<scalar_t>(), geom_of<index_t>(p));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return like_input(grad_in, input);
}

// torch rejects a zero divisor before computing anything.
int64_t checked_divisor(const std::optional<int64_t>& divisor_override) {
  if (!divisor_override.has_value()) {
    return 0;
  }
  TORCH_CHECK(*divisor_override != 0, "divisor must be not zero");
  TORCH_CHECK(*divisor_override >= std::numeric_limits<int32_t>::min() &&
                  *divisor_override <= std::numeric_limits<int32_t>::max(),
              "lenet_ext.avg_pool2d: divisor_override ", *divisor_override, " does not fit in int32");
  return *divisor_override;
}

at::Tensor avg_pool2d_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                   std::optional<int64_t> divisor_override) {
  constexpr const char* op = "avg_pool2d_forward_cuda";
  check_pool_input(op, input);
  const int64_t divisor = checked_divisor(divisor_override);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = as_batched(input).contiguous();
  const int64_t one[2] = {1, 1};
  const Pool2dParams p = make_pool2d_params("lenet_ext.avg_pool2d", x, kernel_size, stride, padding, one, ceil_mode);
  at::Tensor out = at::empty(output_sizes(p), x.options());
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), op, [&] {
      cuda::dispatch_index(pool_fits_int32(p), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        avg_pool2d_forward_kernel<scalar_t, index_t>
            <<<cuda::grid_for(out.numel()), cuda::kBlock, 0, cuda::current_stream()>>>(
                x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), geom_of<index_t>(p),
                count_include_pad, divisor);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return like_input(out, input);
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* op = "avg_pool2d_backward_cuda";
  check_pool_input(op, input);
  const int64_t divisor = checked_divisor(divisor_override);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = as_batched(input);
  const int64_t one[2] = {1, 1};
  const Pool2dParams p = make_pool2d_params("lenet_ext.avg_pool2d_backward", x, kernel_size, stride, padding, one,
                                            ceil_mode);
  const at::Tensor go = as_batched(grad_output);
  check_grad_output("lenet_ext.avg_pool2d_backward", go, output_sizes(p), x);
  at::Tensor grad_in = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (grad_in.numel() > 0) {
    const at::Tensor go_c = go.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), op, [&] {
      cuda::dispatch_index(pool_fits_int32(p), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        avg_pool2d_backward_kernel<scalar_t, index_t>
            <<<cuda::grid_for(grad_in.numel()), cuda::kBlock, 0, cuda::current_stream()>>>(
                go_c.const_data_ptr<scalar_t>(), grad_in.mutable_data_ptr<scalar_t>(), geom_of<index_t>(p),
                count_include_pad, divisor);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return like_input(grad_in, input);
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
