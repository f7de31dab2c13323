// The CUDA pooling operators' bodies, less their kernel launches: each checks its arguments (checks.h),
// lays out the tensors, picks the work item of pool2d_items.h (planar, planar runs or channels_last; int32
// or int64 indices) and hands it to a runner. csrc/cuda/pool2d.cu calls them with the GPU runner
// (cuda/items.cuh); the test operator lenet_ext_testing::cuda_pool2d_on_host (testing/pool2d_on_host.cpp)
// with the host runner (testing/items_host.h). Plain host code, compiled by nvcc and by the host compiler.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cuda/geom.h"
#include "cuda/pool2d_items.h"

namespace lenet_ext {
namespace pool {

// Which CUDA kernels pool (process-wide settings, cuda/settings.cpp; read once per call):
//   native_nhwc  (lenet_ext.backends.cuda_pool_layout) false copies a channels_last input to NCHW for
//                the planar kernels and the result back; true runs the channels_last kernels on it as it is;
//   planar_runs  (lenet_ext.backends.cuda_pool_planar) false runs the planar forwards one output per item;
//                true, kRun outputs of a row per item (vector loads for paired columns). The backwards are
//                the same.
// Each is true when its setting names it, or when the setting is "auto" (the default) and
// csrc/cuda/families.h lists the family (pool_nhwc, pool_runs).
struct Kernels {
  bool native_nhwc = false;
  bool planar_runs = false;
};
Kernels cuda_pool_kernels();

// ------------------------------------------------------------------------------------------ bodies
// `run(op, n)` runs the work item op on items [0, n): cuda/pool2d.cu launches a grid-stride kernel,
// testing/pool2d_on_host.cpp loops. A runner whose `int64_index` is set gets int64 work items even for
// small tensors (the host tests use it).
//
// Layout: a channels_last input gives channels_last results (pool_output_format). The planar kernels,
// the default, read it through one copy to NCHW and write the results back through another; with
// `native_nhwc` (lenet_ext.backends.cuda_pool_layout("native")) the channels_last kernels read and
// write it as it is. Inputs of any other layout are copied to contiguous NCHW.

// Calls f(std::integral_constant<int, V>{}) for the runtime width v; only widths whose vector fits
// in 16 bytes are instantiated (vector_width never asks for another).
template <typename T, typename F>
void with_vector_width(int v, const F& f) {
  auto call = [&](auto width) {
    if constexpr (decltype(width)::value * sizeof(T) <= 16) {
      f(width);
    }
  };
  switch (v) {
    case 8:
      return call(std::integral_constant<int, 8>{});
    case 4:
      return call(std::integral_constant<int, 4>{});
    case 2:
      return call(std::integral_constant<int, 2>{});
    default:
      return call(std::integral_constant<int, 1>{});
  }
}

template <typename F>
void with_bool(bool b, const F& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

struct Layout {
  bool nhwc;                   // run the channels_last kernels
  at::MemoryFormat compute;    // the layout the kernels read and write
  at::MemoryFormat result;     // the layout the caller gets
  bool runs;                   // a planar forward runs its run items
};

inline Layout layout_for(const at::Tensor& input, const Kernels& k) {
  const at::MemoryFormat result = pool_output_format(input);
  const bool nhwc = k.native_nhwc && result == at::MemoryFormat::ChannelsLast;
  return {nhwc, nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous, result, k.planar_runs};
}

inline std::vector<int64_t> output_sizes(const Pool2dParams& p) {
  return {p.batch, p.channels, p.win.out[0], p.win.out[1]};
}

// Every index fits int32 (and so does avg's divisor).
inline bool small_indices(const Pool2dParams& p, int64_t divisor = 0) {
  constexpr int64_t limit = int64_t{1} << 30;
  return fits_int32(p) && divisor > -limit && divisor < limit;
}

// Builds a planar or a channels_last work item (make(std::integral_constant<int, V>) for the latter)
// over `work` elements, and runs it. A forward also passes the maker of its planar run item (also given
// its load width), with the number of runs and their load width (pair_width), which replaces the planar
// item when the runs are chosen.
struct NoRuns {};
template <typename, typename, int>
using NoRunsFor = NoRuns;  // a pass with no run items (the backwards), as run_avg's Runs

template <typename scalar_t, typename Runner, typename MakePlanar, typename MakeNhwc, typename MakeRuns = NoRuns>
void run_layout(const Runner& run, const Layout& l, int64_t channels, int64_t work,
                std::initializer_list<const void*> vector_pointers, const MakePlanar& planar,
                const MakeNhwc& nhwc, const MakeRuns& runs = {}, int64_t run_items = 0, int run_width = 1) {
  if (!l.nhwc) {
    if constexpr (!std::is_same_v<MakeRuns, NoRuns>) {
      if (l.runs) {
        with_vector_width<scalar_t>(run_width, [&](auto v) { run(runs(v), run_items); });
        return;
      }
    }
    run(planar(), work);
    return;
  }
  with_vector_width<scalar_t>(vector_width<scalar_t>(channels, vector_pointers), [&](auto v) {
    run(nhwc(v), work / decltype(v)::value);
  });
}

// max_pool2d_forward (with_indices) and max_pool2d_forward_values.
template <typename Runner>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_impl(const Runner& run, bool with_indices,
                                                           const at::Tensor& input, c10::IntArrayRef kernel_size,
                                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                           c10::IntArrayRef dilation, bool ceil_mode,
                                                           const Kernels& kernels) {
  const Pool2dParams p = check_max_pool2d_forward(with_indices ? PoolOp::MaxForward : PoolOp::MaxForwardValues,
                                                  input, kernel_size, stride, padding, dilation, ceil_mode);
  const Layout l = layout_for(input, kernels);
  const at::Tensor x = input.contiguous(l.compute);
  at::Tensor out = at::empty(output_sizes(p), x.options().memory_format(l.compute));
  at::Tensor indices =
      with_indices ? at::empty(output_sizes(p), x.options().dtype(at::kLong).memory_format(l.compute)) : at::Tensor();
  if (out.numel() > 0) {
    AT_DISPATCH_V2(x.scalar_type(), "max_pool2d_forward", AT_WRAP([&] {
                     with_index_type(!run.int64_index && small_indices(p), [&](auto index_zero) {
                       using index_t = decltype(index_zero);
                       const scalar_t* xp = x.const_data_ptr<scalar_t>();
                       scalar_t* yp = out.mutable_data_ptr<scalar_t>();
                       int64_t* ip = with_indices ? indices.mutable_data_ptr<int64_t>() : nullptr;
                       const Geom<index_t> g = geom_of<index_t>(p, !l.nhwc);
                       with_bool(with_indices, [&](auto wi) {
                         constexpr bool kWI = decltype(wi)::value;
                         run_layout<scalar_t>(
                             run, l, p.channels, out.numel(), {xp, yp},
                             [&] { return MaxForwardPlanar<scalar_t, index_t, kWI>{xp, yp, ip, g}; },
                             [&](auto v) {
                               return MaxForwardNhwc<scalar_t, index_t, decltype(v)::value, kWI>{xp, yp, ip, g};
                             },
                             [&](auto v) {
                               return MaxForwardRuns<scalar_t, index_t, decltype(v)::value, kWI>{xp, yp, ip, g};
                             },
                             row_runs(p), pair_width<scalar_t, index_t>(g, xp));
                       });
                     });
                   }),
                   AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16, AT_EXPAND(AT_INTEGRAL_TYPES));
  }
  return {out.contiguous(l.result), with_indices ? indices.contiguous(l.result) : at::Tensor()};
}

template <typename Runner>
at::Tensor max_pool2d_backward_impl(const Runner& run, const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode,
                                    const Kernels& kernels) {
  const Pool2dParams p =
      check_max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
  const Layout l = layout_for(input, kernels);
  const at::Tensor go = grad_output.contiguous(l.compute), idx = indices.contiguous(l.compute);
  at::Tensor grad_in = at::empty(input.sizes(), input.options().memory_format(l.compute));
  if (grad_in.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d_backward", [&] {
      with_index_type(!run.int64_index && small_indices(p), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        const scalar_t* gop = go.const_data_ptr<scalar_t>();
        const int64_t* ip = idx.const_data_ptr<int64_t>();
        scalar_t* gip = grad_in.mutable_data_ptr<scalar_t>();
        const Geom<index_t> g = geom_of<index_t>(p, !l.nhwc);
        run_layout<scalar_t>(
            run, l, p.channels, grad_in.numel(), {gop, gip},
            [&] { return MaxBackwardPlanar<scalar_t, index_t>{gop, ip, gip, g}; },
            [&](auto v) { return MaxBackwardNhwc<scalar_t, index_t, decltype(v)::value>{gop, ip, gip, g}; });
      });
    });
  }
  return grad_in.contiguous(l.result);
}

// The pass both avg-pool directions share: `src` (the input, or grad_output) read by the Planar or Nhwc
// items into a new tensor of `sizes` (the output's, or the input's).
template <template <typename, typename> class Planar, template <typename, typename, int> class Nhwc,
          template <typename, typename, int> class Runs, typename Runner>
at::Tensor run_avg(const Runner& run, const at::Tensor& src, c10::IntArrayRef sizes,
                   const AvgPool2dParams& a, bool count_include_pad, const Layout& l) {
  const Pool2dParams& p = a.pool;
  const AvgRule rule{count_include_pad, a.divisor_override};
  const at::Tensor s = src.contiguous(l.compute);
  at::Tensor dst = at::empty(sizes, s.options().memory_format(l.compute));
  if (dst.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "avg_pool2d", [&] {
      with_index_type(!run.int64_index && small_indices(p, rule.divisor_override), [&](auto index_zero) {
        using index_t = decltype(index_zero);
        const scalar_t* sp = s.const_data_ptr<scalar_t>();
        scalar_t* dp = dst.mutable_data_ptr<scalar_t>();
        const Geom<index_t> g = geom_of<index_t>(p, !l.nhwc);
        const auto nhwc = [&](auto v) { return Nhwc<scalar_t, index_t, decltype(v)::value>{sp, dp, g, rule}; };
        const auto planar = [&] { return Planar<scalar_t, index_t>{sp, dp, g, rule}; };
        if constexpr (std::is_same_v<Runs<scalar_t, index_t, 1>, NoRuns>) {
          run_layout<scalar_t>(run, l, p.channels, dst.numel(), {sp, dp}, planar, nhwc);
        } else {
          run_layout<scalar_t>(
              run, l, p.channels, dst.numel(), {sp, dp}, planar, nhwc,
              [&](auto v) { return Runs<scalar_t, index_t, decltype(v)::value>{sp, dp, g, rule}; },
              row_runs(p), pair_width<scalar_t, index_t>(g, sp));
        }
      });
    });
  }
  return dst.contiguous(l.result);
}

template <typename Runner>
at::Tensor avg_pool2d_forward_impl(const Runner& run, const at::Tensor& input, c10::IntArrayRef kernel_size,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                                   bool count_include_pad, const std::optional<int64_t>& divisor_override,
                                   const Kernels& kernels) {
  const AvgPool2dParams a =
      check_avg_pool2d_forward(input, kernel_size, stride, padding, ceil_mode, divisor_override);
  return run_avg<AvgForwardPlanar, AvgForwardNhwc, AvgForwardRuns>(run, input, output_sizes(a.pool), a,
                                                                   count_include_pad, layout_for(input, kernels));
}

template <typename Runner>
at::Tensor avg_pool2d_backward_impl(const Runner& run, const at::Tensor& grad_output, const at::Tensor& input,
                                    c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    bool ceil_mode, bool count_include_pad,
                                    const std::optional<int64_t>& divisor_override, const Kernels& kernels) {
  const AvgPool2dParams a =
      check_avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, divisor_override);
  return run_avg<AvgBackwardPlanar, AvgBackwardNhwc, NoRunsFor>(run, grad_output, input.sizes(), a,
                                                                count_include_pad, layout_for(input, kernels));
}

}  // namespace pool
}  // namespace lenet_ext
