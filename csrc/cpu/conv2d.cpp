// conv2d on the CPU: the forward and one backward that computes any subset of (input, weight, bias)
// gradients. This file chooses an algorithm for each pass and registers the operators; the algorithms
// are one file each (see cpu/conv2d_common.h):
//
//   im2col + matrix product   any shape (cpu/conv2d_im2col.cpp)
//   pixel tiles               stride 1: forward, and the weight gradient of <= 3 channels per group
//   channel tiles             4 to 32 output channels per group: strided forward, weight gradient
//   Winograd F(2x2, 3x3)      3x3 stride-1 undilated forwards (and input gradients, as convolutions) of
//                             32-256 channels on levels with 16 registers, or forced, or timed
//   input gradient            for stride 1, a convolution of the padded grad_output with the flipped,
//                             transposed weight, which then runs through the forward's choice; else
//                             im2col's col2im
//   bias gradient             a sum per output channel (here)
//   reference                 the plain loops of the definition, every pass, only when forced
//                             (cpu/reference/conv2d.cpp: read it first)
//
// The register tiles run at the CPU's instruction-set level (cpu/dispatch.cpp), and the heuristics
// below know it. lenet_ext.backends.conv_algorithm forces an algorithm; lenet_ext.backends.autotune
// makes each new shape time its candidates once and keep the fastest.
//
// Layout: kernels read contiguous NCHW (inputs in any other layout are copied once) and write
// contiguous NCHW. bfloat16 is computed in float32 and rounded once at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <chrono>
#include <map>
#include <mutex>
#include <vector>

#include "checks.h"
#include "cpu/conv2d_common.h"
#include "cpu/memory.h"
#include "cpu/reference/reference.h"
#include "cpu/settings.h"
#include "setting.h"

namespace lenet_ext {

std::vector<int64_t> tap_offsets(const Window2d& win, int64_t channels, int64_t Hp, int64_t pitch, int64_t j_step) {
  const int64_t KH = win.kernel[0], KW = win.kernel[1];
  std::vector<int64_t> taps(channels * KH * KW);
  for (int64_t r = 0; r < channels * KH * KW; ++r) {
    const int64_t c = r / (KH * KW), i = (r / KW) % KH, j = r % KW;
    taps[r] = (c * Hp + i * win.dilation[0]) * pitch + j * j_step;
  }
  return taps;
}

template <typename scalar_t>
at::Tensor tap_major_weights(const at::Tensor& weight, const Conv2dParams& p, int64_t block) {
  const ConvDims d(p);
  const int64_t blocks = (d.Og + block - 1) / block;
  TORCH_INTERNAL_ASSERT(weight.is_contiguous(), "tap_major_weights reads a contiguous weight");
  at::Tensor wt = at::empty({p.groups, blocks, d.K, block}, weight.options());
  const scalar_t* w = weight.const_data_ptr<scalar_t>();  // [groups * Og][K]
  scalar_t* out = wt.mutable_data_ptr<scalar_t>();
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t b = 0; b < blocks; ++b, out += d.K * block) {
      const int64_t first = g * d.Og + b * block, width = std::min(block, d.Og - b * block);
      for (int64_t k = 0; k < d.K; ++k) {
        for (int64_t o = 0; o < width; ++o) {
          out[k * block + o] = w[(first + o) * d.K + k];
        }
        std::fill(out + k * block + width, out + (k + 1) * block, scalar_t(0));
      }
    }
  }
  return wt;
}
template at::Tensor tap_major_weights<float>(const at::Tensor&, const Conv2dParams&, int64_t);
template at::Tensor tap_major_weights<double>(const at::Tensor&, const Conv2dParams&, int64_t);

at::Tensor sum_slices(const at::Tensor& partial) {
  at::Tensor sum = partial[0];
  for (int64_t s = 1; s < partial.size(0); ++s) {
    sum.add_(partial[s]);
  }
  return sum;
}

namespace {

// lenet_ext.backends.conv_algorithm("auto" | "direct" | "im2col" | "winograd" | "reference") sets this
// through the lenet_ext::_set_conv_algorithm operator. "reference" takes every pass, forward and backward,
// to cpu/reference/conv2d.cpp before any choice is made here.
enum class Algorithm : int64_t { kAuto = 0, kDirect = 1, kIm2col = 2, kWinograd = 3, kReference = 4 };
Setting g_conv_algorithm{"_set_conv_algorithm", 5};

Algorithm forced_algorithm() {
  return static_cast<Algorithm>(g_conv_algorithm.get());
}

// ---------------------------------------------------------------------------------------------------
// The heuristics. The numbers come from `lenet-ext bench --conv-algorithm direct|im2col` at each level,
// and sweeps of channel counts and image sizes (float32, 2 threads).

enum class ForwardKernel { kIm2col, kPixelTiles, kChannelTiles, kWinograd };
enum class WeightGradKernel { kIm2col, kPixelTiles, kChannelTiles };

// Forward:
//   pixel tiles    stride-1 convolutions up to kDeepTaps taps per output, 1x1 ones included, and strided
//                  ones (not 1x1) with 1 to 3 channels per group, such as depthwise layers, over the
//                  input's stride phases (a channel tile would be mostly padding);
//   channel tiles  strided, at least 4 output channels per group, not 1x1, up to kDeepTaps taps, and at
//                  most 64 channels per group on a level with 16 registers (there a group of 16 output
//                  channels takes two or four registers, and the tile holds few pixels);
//   im2col         the rest: deep convolutions (512 -> 512 3x3 has 4608 taps), strided 1x1 (a gather,
//                  then one matrix product), wide strided ones at 16 registers.
// Measured (single-thread CPU time against torch, AMD EPYC Zen 5, at AVX-512 and at AVX2 with torch's
// oneDNN and MKL held to AVX2 too): the direct kernels beat im2col by 1.3-2.3x on 1x1 layers (24 -> 144
// on 56x56, 96 -> 576 on 14x14) and 64 -> 64 / 128 -> 128 3x3; channel tiles beat it on the strided 7x7
// stem (1.5-1.8x) and on 128 -> 256 stride 2 at AVX-512 (1.3x), but not at AVX2 (0.9x); im2col wins
// 512 -> 512 on 7x7 at AVX2 (2x) and ties at AVX-512. On an Intel Xeon with AVX-512, whose MKL is faster
// than on AMD, im2col won 256 -> 256 3x3 by about 10%; lenet_ext.backends.autotune finds such shapes.
// There (2 threads) pixel tiles over the stride phases beat im2col on depthwise 3x3 stride 2 layers by
// 1.2-1.4x (144 channels on 56x56, 32 on 112x112), and tied channel tiles on the stem at AVX-512 but
// lost to them by 7% at AVX2 and on 64 -> 128 and 256 -> 512 stride 2 by 1.3-1.6x.
constexpr int64_t kDeepTaps = 1152;  // 128 channels x 3x3

// Winograd F(2x2, 3x3), on levels with 16 vector registers, for 3x3 stride-1 layers of 32 to 256
// channels per group each way on planes of at least 14 x 14. Measured (Intel Xeon, 2 threads, float32,
// at AVX2 with torch held to AVX2 too): it beat the pixel tiles 1.2x on 64 -> 64 (56 x 56, batch 8 and
// batch 1) and 1.3x on 128 -> 128 (28 x 28), tied im2col on 256 -> 256 (14 x 14), and lost 1.7x on
// 512 -> 512 (7 x 7) and 2x on 16 -> 16; at AVX-512 the pixel tiles beat it on every one of these.
constexpr int64_t kWinogradChannels[2] = {32, 256};
constexpr int64_t kWinogradMinPlane = 14;

bool winograd_preferred(const Conv2dParams& p) {
  const ConvDims d(p);
  return winograd_applies(p) && cpu::active_kernels().shape.registers < 32 && d.Cg >= kWinogradChannels[0] &&
         d.Cg <= kWinogradChannels[1] && d.Og >= kWinogradChannels[0] && d.Og <= kWinogradChannels[1] &&
         d.OH >= kWinogradMinPlane && d.OW >= kWinogradMinPlane;
}

ForwardKernel heuristic_forward(const Conv2dParams& p) {
  const ConvDims d(p);
  if (winograd_preferred(p)) {
    return ForwardKernel::kWinograd;
  }
  if (d.K > kDeepTaps) {
    return ForwardKernel::kIm2col;
  }
  if (is_stride1(p.win)) {
    return ForwardKernel::kPixelTiles;
  }
  if (d.KH == 1 && d.KW == 1) {
    return ForwardKernel::kIm2col;
  }
  if (d.Og < 4) {
    return ForwardKernel::kPixelTiles;
  }
  const bool narrow_enough = d.Og <= 64 || cpu::active_kernels().shape.registers >= 32;
  return narrow_enough ? ForwardKernel::kChannelTiles : ForwardKernel::kIm2col;
}

// What "direct" means for a forward: pixel tiles for stride 1 and for strided convolutions with 1 to 3
// channels per group; channel tiles for the other strided ones.
ForwardKernel direct_forward(const Conv2dParams& p) {
  return is_stride1(p.win) || p.out_per_group() < 4 ? ForwardKernel::kPixelTiles
                                                            : ForwardKernel::kChannelTiles;
}

// Weight gradient: pixel tiles (taps x positions) for stride 1 and at most 3 output channels per group
// (depthwise); channel tiles (taps x vectors of output channels) for 4 or more, up to kDeepTaps taps,
// except 1x1 convolutions, whose weight gradient is one matrix product (im2col reads them in place);
// im2col otherwise. Measured as above: channel tiles beat im2col on 64 -> 64 and 128 -> 128 3x3
// (1.3-2.3x) and the stem (1.3-1.7x), and lose on 1x1 layers and 512 -> 512 on 7x7.
WeightGradKernel heuristic_weight_grad(const Conv2dParams& p) {
  const ConvDims d(p);
  const bool pointwise = d.KH == 1 && d.KW == 1;
  if (is_stride1(p.win) && d.Og <= 3 && d.K <= kDeepTaps) {
    return WeightGradKernel::kPixelTiles;
  }
  return d.Og >= 4 && !pointwise && d.K <= kDeepTaps ? WeightGradKernel::kChannelTiles : WeightGradKernel::kIm2col;
}

// "direct" forces whichever direct kernel fits; with 4 or more channels that is channel tiles.
WeightGradKernel direct_weight_grad(const Conv2dParams& p) {
  return is_stride1(p.win) && p.out_per_group() <= 3 ? WeightGradKernel::kPixelTiles
                                                             : WeightGradKernel::kChannelTiles;
}

// ---------------------------------------------------------------------------------------------------
// lenet_ext.backends.autotune: with it on, the first call of each (pass, shape, dtype, level, threads)
// runs every candidate algorithm, times the best of three runs of each, and keeps the fastest for the
// rest of the process, as torch.backends.cudnn.benchmark does. Off by default: timing costs a few calls'
// time per new shape, and the choice may differ between runs.
Setting g_conv_benchmark{"_set_conv_benchmark", 2};

enum class Pass : int64_t { kForward, kGradInput, kGradWeight };

using ShapeKey = std::array<int64_t, 20>;

ShapeKey shape_key(Pass pass, const Conv2dParams& p, at::ScalarType dtype) {
  const Window2d& w = p.win;
  return {static_cast<int64_t>(pass), static_cast<int64_t>(dtype), static_cast<int64_t>(cpu::active_kernels().level),
          at::get_num_threads(), p.batch, p.in_channels, p.out_channels, p.groups, w.in[0], w.in[1], w.kernel[0],
          w.kernel[1], w.stride[0], w.stride[1], w.pad[0], w.pad[1], w.pad_end[0], w.pad_end[1], w.dilation[0],
          w.dilation[1]};
}

class TunedChoices {
 public:
  bool find(const ShapeKey& key, int64_t& choice) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = choices_.find(key);
    if (it == choices_.end()) {
      return false;
    }
    choice = it->second;
    return true;
  }
  void remember(const ShapeKey& key, int64_t choice) {
    std::lock_guard<std::mutex> lock(mutex_);
    choices_[key] = choice;
  }

 private:
  std::mutex mutex_;
  std::map<ShapeKey, int64_t> choices_;
};

TunedChoices& tuned() {
  static TunedChoices choices;
  return choices;
}

// The candidate (an index into `candidates`) that runs fastest, by the best of three timed runs after
// one untimed run. `run(c)` computes the pass with candidate c.
template <typename Run>
int64_t fastest(int64_t candidates, const Run& run) {
  int64_t best = 0;
  double best_time = 0;
  for (int64_t c = 0; c < candidates; ++c) {
    run(c);
    double t_min = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      run(c);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      t_min = rep == 0 ? t : std::min(t_min, t);
    }
    if (c == 0 || t_min < best_time) {
      best = c;
      best_time = t_min;
    }
  }
  return best;
}

// The choice for one pass: forced, tuned (timed once per shape), or the heuristic. `winograd` is the
// pass's Winograd kernel where there is one for this shape; "winograd" forced elsewhere is the heuristic.
template <typename Kernel, typename Run>
Kernel choose(Pass pass, const Conv2dParams& p, at::ScalarType dtype, Kernel heuristic, Kernel direct,
              const std::vector<Kernel>& candidates, const Run& run, std::optional<Kernel> winograd = std::nullopt) {
  switch (forced_algorithm()) {
    case Algorithm::kIm2col:
      return Kernel::kIm2col;
    case Algorithm::kDirect:
      return direct;
    case Algorithm::kWinograd:
      return winograd.value_or(heuristic);
    case Algorithm::kReference:  // not reached: the operators hand the whole call to the reference
    case Algorithm::kAuto:
      break;
  }
  if (g_conv_benchmark.get() == 0 || candidates.size() < 2) {
    return heuristic;
  }
  const ShapeKey key = shape_key(pass, p, dtype);
  int64_t choice = 0;
  if (!tuned().find(key, choice)) {
    choice = fastest(static_cast<int64_t>(candidates.size()), [&](int64_t c) { run(candidates[c]); });
    tuned().remember(key, choice);
  }
  return candidates[choice];
}

// ---------------------------------------------------------------------------------------------------

template <typename scalar_t>
void forward_with(ForwardKernel kernel, const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias,
                  at::Tensor& out, const Conv2dParams& p) {
  const cpu::LevelKernels& level = cpu::active_kernels();
  switch (kernel) {
    case ForwardKernel::kIm2col:
      return conv2d_forward_im2col<scalar_t>(x, w, bias, out, p);
    case ForwardKernel::kPixelTiles:
      return conv2d_forward_pixels<scalar_t>(x, w, bias, out, p, level);
    case ForwardKernel::kChannelTiles:
      return conv2d_forward_channels<scalar_t>(x, w, bias, out, p, level);
    case ForwardKernel::kWinograd:
      if (!conv2d_forward_winograd<scalar_t>(x, w, bias, out, p)) {
        conv2d_forward_pixels<scalar_t>(x, w, bias, out, p, level);  // inf or NaN: summed as torch does
      }
      return;
  }
}

template <typename scalar_t>
ForwardKernel choose_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                             const Conv2dParams& p) {
  // benchmark mode also tries pixel tiles on the stride phases where channel tiles are the direct kernel
  std::vector<ForwardKernel> candidates{ForwardKernel::kIm2col, direct_forward(p)};
  if (candidates.back() == ForwardKernel::kChannelTiles) {
    candidates.push_back(ForwardKernel::kPixelTiles);
  }
  std::optional<ForwardKernel> winograd;
  if (winograd_applies(p)) {
    winograd = ForwardKernel::kWinograd;
    candidates.push_back(ForwardKernel::kWinograd);
  }
  return choose(Pass::kForward, p, x.scalar_type(), heuristic_forward(p), direct_forward(p), candidates,
                [&](ForwardKernel k) { forward_with<scalar_t>(k, x, w, bias, out, p); }, winograd);
}

template <typename scalar_t>
void conv2d_forward_any(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, at::Tensor& out,
                        const Conv2dParams& p) {
  forward_with<scalar_t>(choose_forward<scalar_t>(x, w, bias, out, p), x, w, bias, out, p);
}

template <typename scalar_t>
at::Tensor weight_grad_with(WeightGradKernel kernel, const at::Tensor& go, const at::Tensor& x,
                            const Conv2dParams& p) {
  const cpu::LevelKernels& level = cpu::active_kernels();
  switch (kernel) {
    case WeightGradKernel::kPixelTiles: {
      at::Tensor g = conv2d_grad_weight_pixels<scalar_t>(go, x, p, level);
      // Its dropped positions multiply a zero gradient by real inputs: an inf or NaN there makes NaN
      // where torch, which never reads them, is finite. Such a result is computed again by im2col.
      const bool finite = all_finite(g.const_data_ptr<scalar_t>(), g.numel());
      return finite ? g : conv2d_grad_weight_im2col<scalar_t>(go, x, p);
    }
    case WeightGradKernel::kChannelTiles:
      return conv2d_grad_weight_channels<scalar_t>(go, x, p, level);
    case WeightGradKernel::kIm2col:
      break;
  }
  return conv2d_grad_weight_im2col<scalar_t>(go, x, p);
}

template <typename scalar_t>
at::Tensor conv2d_grad_weight_any(const at::Tensor& go, const at::Tensor& x, const Conv2dParams& p) {
  const auto run = [&](WeightGradKernel k) { return weight_grad_with<scalar_t>(k, go, x, p); };
  return run(choose(Pass::kGradWeight, p, x.scalar_type(), heuristic_weight_grad(p), direct_weight_grad(p),
                    {WeightGradKernel::kIm2col, direct_weight_grad(p)}, run));
}

// For a stride-1 convolution, the input gradient is itself a convolution: of grad_output, padded by
// d*(k-1) - p on each side, with the weight flipped in space and transposed (per group) between input
// and output channels. Returns the parameters of that convolution (from the shapes alone: p is checked
// already), or nothing when it does not exist (strides, padding wider than the window, or an empty
// input plane).
std::optional<Conv2dParams> grad_input_as_conv_params(const Conv2dParams& p) {
  const Window2d& win = p.win;
  if (!is_stride1(win) || win.in[0] == 0 || win.in[1] == 0) {
    return std::nullopt;  // (an empty input plane would be an invalid convolution's output)
  }
  std::array<int64_t, 4> pads{};
  for (int d = 0; d < 2; ++d) {
    pads[2 * d] = win.span(d) - win.pad[d];
    pads[2 * d + 1] = win.span(d) - win.pad_end[d];
    if (pads[2 * d] < 0 || pads[2 * d + 1] < 0) {
      return std::nullopt;
    }
  }
  Conv2dParams q = p;
  q.in_channels = p.out_channels;
  q.out_channels = p.in_channels;
  q.win = make_window2d("conv2d_backward", {win.out[0], win.out[1]}, {win.kernel[0], win.kernel[1]}, {1, 1},
                        {pads[0], pads[2]}, {pads[1], pads[3]}, {win.dilation[0], win.dilation[1]}, false);
  return q;
}

at::Tensor flipped_transposed(const at::Tensor& w, const Conv2dParams& p) {
  const ConvDims d(p);
  return w.view({p.groups, d.Og, d.Cg, d.KH, d.KW})
      .flip({3, 4})
      .transpose(1, 2)
      .reshape({p.in_channels, d.Og, d.KH, d.KW})
      .contiguous();
}

// The input gradient: for stride 1, as a convolution, which takes the forward's own choice for it (pixel
// tiles or Winograd), when that convolution exists and the forward's heuristic does not give it to
// im2col; by im2col + col2im otherwise. That convolution also multiplies the zero padding of grad_output
// by the weight: with an inf or NaN weight the products are NaN where torch, which never forms them, is
// finite, so such weights take im2col, whose col2im adds only real contributions.
enum class GradInputKernel { kIm2col, kAsConv };

template <typename scalar_t>
at::Tensor conv2d_grad_input_any(const at::Tensor& go, const at::Tensor& w, const Conv2dParams& p) {
  const std::optional<Conv2dParams> q = grad_input_as_conv_params(p);
  // The flipped, transposed weight, made only when the convolution runs (the first time) and the weight is
  // finite: for a deep layer that im2col takes (512 x 512 x 3 x 3), checking and copying it cost as much
  // as the gradient.
  at::Tensor wt;
  const auto run = [&](GradInputKernel k) {
    if (k == GradInputKernel::kAsConv && !wt.defined() && all_finite(w.const_data_ptr<scalar_t>(), w.numel())) {
      wt = flipped_transposed(w, p);
    }
    if (k == GradInputKernel::kIm2col || !wt.defined()) {
      return conv2d_grad_input_im2col<scalar_t>(go, w, p);
    }
    at::Tensor gx = cpu::empty_fresh({p.batch, p.in_channels, p.win.in[0], p.win.in[1]}, go.options());
    conv2d_forward_any<scalar_t>(go, wt, nullptr, gx, *q);
    return gx;
  };
  const GradInputKernel as_conv = q ? GradInputKernel::kAsConv : GradInputKernel::kIm2col;
  const GradInputKernel heuristic =
      q && heuristic_forward(*q) != ForwardKernel::kIm2col ? GradInputKernel::kAsConv : GradInputKernel::kIm2col;
  std::vector<GradInputKernel> candidates{GradInputKernel::kIm2col};
  if (q) {
    candidates.push_back(GradInputKernel::kAsConv);
  }
  return run(choose(Pass::kGradInput, p, go.scalar_type(), heuristic, as_conv, candidates, run));
}

// Sum of grad_output over batch and pixels, per output channel, in a fixed order.
template <typename scalar_t>
at::Tensor conv2d_grad_bias(const at::Tensor& go, const Conv2dParams& p) {
  const int64_t L = p.win.out[0] * p.win.out[1];
  at::Tensor gb = at::empty({p.out_channels}, go.options());
  const scalar_t* go_data = go.const_data_ptr<scalar_t>();
  scalar_t* gb_data = gb.mutable_data_ptr<scalar_t>();
  const auto plane_sum = cpu::active_kernels().of<scalar_t>().plane_sum;
  at::parallel_for(0, p.out_channels, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      double sum = 0;
      for (int64_t n = 0; n < p.batch; ++n) {
        sum += plane_sum(go_data + (n * p.out_channels + o) * L, L);  // (n, o) is one output plane
      }
      gb_data[o] = static_cast<scalar_t>(sum);
    }
  });
  return gb;
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (forced_algorithm() == Algorithm::kReference) {
    return conv2d_forward_reference(input, weight, bias, stride, padding, dilation, groups);
  }
  const Conv2dParams p = check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  const at::Tensor x = to_compute(input), w = to_compute(weight);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(to_compute(*bias)) : std::nullopt;
  at::Tensor out = cpu::empty_fresh({p.batch, p.out_channels, p.win.out[0], p.win.out[1]}, x.options());
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  if (out.numel() == 0) {
    return as_result(out, input.scalar_type(), fmt);
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_forward_cpu", [&] {
    conv2d_forward_any<scalar_t>(x, w, b ? &*b : nullptr, out, p);
  });
  return as_result(out, input.scalar_type(), fmt);
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  if (forced_algorithm() == Algorithm::kReference) {
    return conv2d_backward_reference(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
  }
  const Conv2dParams p = check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  const at::Tensor go = to_compute(grad_output);
  const at::MemoryFormat fmt = conv2d_memory_format(input, weight);
  std::optional<at::Tensor> gx, gw, gb;
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "conv2d_backward_cpu", [&] {
    if (output_mask[0]) {
      gx = as_result(conv2d_grad_input_any<scalar_t>(go, to_compute(weight), p), input.scalar_type(), fmt);
    }
    if (output_mask[1]) {
      gw = as_result(conv2d_grad_weight_any<scalar_t>(go, to_compute(input), p), input.scalar_type(), fmt);
    }
    if (output_mask[2]) {
      gb = as_result(conv2d_grad_bias<scalar_t>(go, p), input.scalar_type(), at::MemoryFormat::Contiguous);
    }
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CPU, m) {
  m.impl("conv2d_forward", &conv2d_forward_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

// The two settings behind lenet_ext.backends.conv_algorithm and .benchmark (registered in cpu/settings.cpp).
int64_t cpu::set_conv_algorithm(int64_t algorithm) {
  return g_conv_algorithm.set(algorithm);
}

int64_t cpu::set_conv_benchmark(int64_t enabled) {
  return g_conv_benchmark.set(enabled);
}

}  // namespace lenet_ext
