// Host-side validation for shape.h: every operator builds its Params here before touching memory.
// The Python layer (lenet_ext/functional.py) already raises torch's user-facing errors; these checks
// are the second line, so that no call reaching the dispatcher directly can crash or overflow.
#include "shape.h"

#include <c10/util/irange.h>
#include <torch/library.h>

#include <atomic>
#include <string>
#include <vector>

#include "pool2d_items.h"

namespace lenet_ext {

namespace {

void check_pair(const char* op, const char* name, c10::IntArrayRef v) {
  TORCH_CHECK(v.size() == 2, op, ": expected ", name, " to have 2 values, but got ", name, "=", v);
}

}  // namespace

Window2d make_window2d(
    const char* op,
    const std::array<int64_t, 2>& in,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef pad_begin,
    c10::IntArrayRef pad_end,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  check_pair(op, "kernel_size", kernel);
  check_pair(op, "stride", stride);
  check_pair(op, "padding", pad_begin);
  check_pair(op, "padding", pad_end);
  check_pair(op, "dilation", dilation);
  Window2d w{};
  for (const auto i : c10::irange(2)) {
    TORCH_CHECK(kernel[i] > 0, op, ": kernel size should be greater than zero, but got ", kernel);
    TORCH_CHECK(stride[i] > 0, op, ": non-positive stride is not supported, got ", stride);
    TORCH_CHECK(pad_begin[i] >= 0 && pad_end[i] >= 0, op, ": negative padding is not supported");
    TORCH_CHECK(dilation[i] > 0, op, ": dilation should be greater than zero, but got ", dilation);
    // Any stride is safe: an output index o < out satisfies o*s <= n + p0 + p1 <= 2^42.
    for (const int64_t v : {kernel[i], pad_begin[i], pad_end[i], dilation[i], in[i]}) {
      TORCH_CHECK(v <= kMaxWindowArg, op, ": size argument ", v, " is too large (at most 2^40 is supported)");
    }
    int64_t span = 0;  // d*(k-1): both factors are <= 2^40, so check the product explicitly
    TORCH_CHECK(!c10::mul_overflows(dilation[i], kernel[i] - 1, &span) && span <= kMaxWindowArg, op,
                ": dilation * (kernel_size - 1) is too large, got dilation=", dilation, " kernel_size=", kernel);
    w.in[i] = in[i];
    w.kernel[i] = kernel[i];
    w.stride[i] = stride[i];
    w.pad[i] = pad_begin[i];
    w.pad_end[i] = pad_end[i];
    w.dilation[i] = dilation[i];
    w.out[i] = window_output_size(in[i], pad_begin[i], pad_end[i], kernel[i], stride[i], dilation[i], ceil_mode);
  }
  return w;
}

Conv2dParams make_conv2d_params(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  constexpr const char* op = "lenet_ext.conv2d";
  TORCH_CHECK(input.dim() == 4, op, ": expected a 4D input (N, C, H, W), but got input of size: ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": expected a 4D weight (O, C/groups, KH, KW), but got weight of size: ",
              weight.sizes());
  TORCH_CHECK(input.dtype() == weight.dtype(), op, ": expected scalar type ", input.scalar_type(),
              " but found ", weight.scalar_type());
  TORCH_CHECK(input.device() == weight.device(), op, ": input on ", input.device(), " and weight on ",
              weight.device(), " should be on the same device");
  TORCH_CHECK(groups > 0, op, ": non-positive groups is not supported");
  TORCH_CHECK(padding.size() == 4, op, ": expected padding (top, bottom, left, right), but got ", padding);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(out_channels >= groups && out_channels % groups == 0, op, ": Given groups=", groups,
              ", expected weight to be divisible by ", groups, " at dimension 0, but got weight of size ",
              weight.sizes(), " instead");
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, op, ": Given groups=", groups, ", weight of size ",
              weight.sizes(), ", expected input", input.sizes(), " to have ", weight.size(1) * groups,
              " channels, but got ", input.size(1), " channels instead");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels, op, ": Given weight of size ", weight.sizes(),
                ", expected bias to be 1-dimensional with ", out_channels, " elements, but got bias of size ",
                bias->sizes(), " instead");
    TORCH_CHECK(bias->dtype() == input.dtype() && bias->device() == input.device(), op,
                ": bias must have the input's dtype and device");
  }
  Conv2dParams p{};
  p.batch = input.size(0);
  p.in_channels = input.size(1);
  p.out_channels = out_channels;
  p.groups = groups;
  p.win = make_window2d(op, {input.size(2), input.size(3)}, {weight.size(2), weight.size(3)}, stride,
                        {padding[0], padding[2]}, {padding[1], padding[3]}, dilation, /*ceil_mode=*/false);
  TORCH_CHECK(p.win.out[0] > 0 && p.win.out[1] > 0, op, ": Calculated padded input size per channel: (",
              p.win.in[0] + padding[0] + padding[1], " x ", p.win.in[1] + padding[2] + padding[3],
              "). Kernel size: (", (weight.size(2) - 1) * p.win.dilation[0] + 1, " x ",
              (weight.size(3) - 1) * p.win.dilation[1] + 1, "). Kernel size can't be greater than actual input size");
  return p;
}

Pool2dParams make_pool2d_params(
    const char* op,
    const at::Tensor& input,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  TORCH_CHECK(input.dim() == 4, op, ": expected a 4D input (N, C, H, W), but got input of size: ", input.sizes());
  TORCH_CHECK(input.size(1) != 0 && input.size(2) != 0 && input.size(3) != 0, op,
              ": Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:",
              input.sizes());
  Pool2dParams p{};
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.win = make_window2d(op, {input.size(2), input.size(3)}, kernel, stride, padding, padding, dilation, ceil_mode);
  for (const auto i : c10::irange(2)) {
    TORCH_CHECK(padding[i] <= ((kernel[i] - 1) * dilation[i] + 1) / 2, op,
                ": pad should be at most half of effective kernel size, but got pad=", padding,
                ", kernel_size=", kernel, " and dilation=", dilation);
    TORCH_CHECK(padding[i] <= kernel[i] / 2, op,
                ": pad should be smaller than or equal to half of kernel size, but got pad=", padding,
                " and kernel_size=", kernel);
  }
  TORCH_CHECK(p.win.out[0] > 0 && p.win.out[1] > 0, op, ": Given input size: (", p.channels, "x", p.win.in[0], "x",
              p.win.in[1], "). Calculated output size: (", p.channels, "x", p.win.out[0], "x", p.win.out[1],
              "). Output size is too small");
  return p;
}

void check_grad_output(const char* op, const at::Tensor& grad, c10::IntArrayRef sizes, const at::Tensor& like) {
  TORCH_CHECK(grad.sizes() == sizes, op, ": expected grad_output of size ", sizes, ", but got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == like.scalar_type(), op, ": expected grad_output of dtype ", like.scalar_type(),
              ", but got ", grad.scalar_type());
  TORCH_CHECK(grad.device() == like.device(), op, ": expected grad_output on ", like.device(), ", but got ",
              grad.device());
}

at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.is_cuda() && input.scalar_type() == at::kDouble) {
    return at::MemoryFormat::Contiguous;
  }
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

const char* pool_op_name(PoolOp op) {
  switch (op) {
    case PoolOp::MaxForward:
      return "max_pool2d_forward";
    case PoolOp::MaxForwardValues:
      return "max_pool2d_forward_values";
    case PoolOp::MaxBackward:
      return "max_pool2d_backward";
    case PoolOp::AvgForward:
      return "avg_pool2d_forward";
    case PoolOp::AvgBackward:
      return "avg_pool2d_backward";
  }
  TORCH_CHECK(false, "lenet_ext: unknown pooling operator");
}

bool pool_accepts_dtype(PoolOp op, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
    case at::kDouble:
    case at::kHalf:
    case at::kBFloat16:
      return true;
    case at::kByte:
    case at::kChar:
    case at::kShort:
    case at::kInt:
    case at::kLong:
      return op == PoolOp::MaxForward || op == PoolOp::MaxForwardValues;
    default:
      return false;
  }
}

void check_pool_input(PoolOp op, const at::Tensor& input) {
  const char* name = pool_op_name(op);
  TORCH_CHECK(input.dim() == 4, name, ": expected a 4D input (N, C, H, W), but got input of size: ", input.sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(pool_accepts_dtype(op, input.scalar_type()), "\"", name, "\" not implemented for '",
                              c10::toString(input.scalar_type()), "'");
}

at::MemoryFormat pool_output_format(const at::Tensor& input) {
  const bool channels_last =
      input.dim() == 4 && !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

void check_max_indices(const char* op, const at::Tensor& indices, c10::IntArrayRef sizes, const at::Tensor& input) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": expected indices of dtype Long, but got ",
              indices.scalar_type());
  TORCH_CHECK(indices.sizes() == sizes, op, ": expected indices of size ", sizes, ", but got ", indices.sizes());
  TORCH_CHECK(indices.device() == input.device(), op, ": expected indices on ", input.device(), ", but got ",
              indices.device());
}

int64_t pool_divisor(const char* op, const std::optional<int64_t>& divisor_override) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, op, ": divisor must be not zero");
  return divisor_override.value_or(0);
}

namespace {

// 0: planar kernels (the default), 1: native channels_last kernels.
std::atomic<int> g_cuda_pool_layout{0};

int64_t set_cuda_pool_layout(int64_t layout) {
  TORCH_CHECK(layout >= -1 && layout <= 1, "lenet_ext._set_cuda_pool_layout: expected -1, 0 or 1, got ", layout);
  return layout < 0 ? g_cuda_pool_layout.load() : g_cuda_pool_layout.exchange(static_cast<int>(layout));
}

}  // namespace

bool cuda_pool_native_nhwc() {
  return g_cuda_pool_layout.load() == 1;
}

namespace {

bool pool2d_accepts(c10::string_view op, at::ScalarType dtype) {
  for (const PoolOp p : {PoolOp::MaxForward, PoolOp::MaxForwardValues, PoolOp::MaxBackward, PoolOp::AvgForward,
                         PoolOp::AvgBackward}) {
    if (op == pool_op_name(p)) {
      return pool_accepts_dtype(p, dtype);
    }
  }
  TORCH_CHECK(false, "lenet_ext._pool2d_accepts: unknown pooling operator '", op, "'");
}

// Runs a CUDA pooling kernel's work items one after another on the host: the same code the GPU runs,
// minus the launch.
struct HostRunner {
  bool int64_index;

  template <typename Op>
  void operator()(const Op& op, int64_t n) const {
    using index_t = typename Op::index_type;
    for (int64_t i = 0; i < n; ++i) {
      op(static_cast<index_t>(i));
    }
  }
};

// The CUDA pooling operator named `op`, computed on CPU tensors by its own work items (pool2d_items.h).
// Returns (output or input gradient, indices for max_pool2d_forward).
std::tuple<at::Tensor, std::optional<at::Tensor>> cuda_pool2d_on_host(
    c10::string_view op,
    const at::Tensor& input,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& indices,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode,
    bool count_include_pad,
    std::optional<int64_t> divisor_override,
    bool native_nhwc,
    bool int64_index) {
  constexpr const char* name = "lenet_ext._cuda_pool2d_on_host";
  TORCH_CHECK(input.device().is_cpu(), name, ": expected CPU tensors");
  const HostRunner run{int64_index};
  auto needs = [&](const std::optional<at::Tensor>& t, const char* what) -> const at::Tensor& {
    TORCH_CHECK(t.has_value(), name, ": ", op, " needs ", what);
    return *t;
  };
  if (op == "max_pool2d_forward" || op == "max_pool2d_forward_values") {
    const bool with_indices = op == "max_pool2d_forward";
    auto [out, ind] = pool::max_pool2d_forward_impl(run, with_indices, input, kernel_size, stride, padding,
                                                    dilation, ceil_mode, native_nhwc);
    return {out, with_indices ? std::optional<at::Tensor>(ind) : std::nullopt};
  }
  if (op == "max_pool2d_backward") {
    return {pool::max_pool2d_backward_impl(run, needs(grad_output, "grad_output"), input, needs(indices, "indices"),
                                           kernel_size, stride, padding, dilation, ceil_mode, native_nhwc),
            std::nullopt};
  }
  if (op == "avg_pool2d_forward") {
    return {pool::avg_pool2d_forward_impl(run, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                          divisor_override, native_nhwc),
            std::nullopt};
  }
  TORCH_CHECK(op == "avg_pool2d_backward", name, ": unknown pooling operator '", op, "'");
  return {pool::avg_pool2d_backward_impl(run, needs(grad_output, "grad_output"), input, kernel_size, stride, padding,
                                         ceil_mode, count_include_pad, divisor_override, native_nhwc),
          std::nullopt};
}

}  // namespace

namespace {

// The private operators behind tests/test_shape_math.py: one dimension, repeated for height and width
// so that it goes through make_window2d's checks like every kernel's arguments.
Window2d checked_window(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  constexpr const char* op = "lenet_ext._window_output_size";
  TORCH_CHECK(n >= 0, op, ": input size must be non-negative, got ", n);
  return make_window2d(op, {n, n}, {kernel, kernel}, {stride, stride}, {pad_begin, pad_begin}, {pad_end, pad_end},
                       {dilation, dilation}, ceil_mode);
}

int64_t window_output_size_op(
    int64_t n, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride, int64_t dilation, bool ceil_mode) {
  return checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode).out[0];
}

std::vector<int64_t> valid_outputs_op(
    int64_t n,
    int64_t pad_begin,
    int64_t pad_end,
    int64_t kernel,
    int64_t stride,
    int64_t dilation,
    bool ceil_mode,
    int64_t tap_index) {
  const Window2d w = checked_window(n, pad_begin, pad_end, kernel, stride, dilation, ceil_mode);
  TORCH_CHECK(tap_index >= 0 && tap_index < kernel, "lenet_ext._valid_outputs: tap_index must be in [0, ", kernel,
              "), got ", tap_index);
  const Range r = valid_outputs(n, pad_begin, tap_index * dilation, stride, w.out[0] > 0 ? w.out[0] : 0);
  return {r.lo, r.hi};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_window_output_size", &window_output_size_op);
  m.impl("_valid_outputs", &valid_outputs_op);
  m.impl("_pool2d_accepts", &pool2d_accepts);
  m.impl("_set_cuda_pool_layout", &set_cuda_pool_layout);
  m.impl("_cuda_pool2d_on_host", &cuda_pool2d_on_host);
}

}  // namespace lenet_ext
