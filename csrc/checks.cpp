// The argument rules of checks.h.
#include "checks.h"

#include <c10/util/irange.h>

#include <vector>

namespace lenet_ext {

namespace {

// The NotImplementedError torch's own dtype dispatch raises, naming the operator.
void check_dtype(const char* op, const at::Tensor& t, bool accepted) {
  TORCH_CHECK_NOT_IMPLEMENTED(accepted, "\"", op, "\" not implemented for '", c10::toString(t.scalar_type()), "'");
}

void check_rank4(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, op, ": expected a 4D input (N, C, H, W), but got input of size: ", input.sizes());
}

// A gradient (or any second tensor) must match what the forward produced.
void check_like(const char* op, const char* name, const at::Tensor& t, c10::IntArrayRef sizes, at::ScalarType dtype,
                const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == sizes, op, ": expected ", name, " of size ", sizes, ", but got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": expected ", name, " of dtype ", dtype, ", but got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": expected ", name, " on ", like.device(), ", but got ", t.device());
}

std::vector<int64_t> output_sizes(const Conv2dParams& p) {
  return {p.batch, p.out_channels, p.win.out[0], p.win.out[1]};
}

std::vector<int64_t> output_sizes(const Pool2dParams& p) {
  return {p.batch, p.channels, p.win.out[0], p.win.out[1]};
}

Conv2dParams make_conv2d_params(
    ConvOp conv_op,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  const char* op = conv_op_name(conv_op);
  check_rank4(op, input);
  TORCH_CHECK(weight.dim() == 4, op, ": expected a 4D weight (O, C/groups, KH, KW), but got weight of size: ",
              weight.sizes());
  check_dtype(op, input, conv_accepts_dtype(input.scalar_type()));
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
    PoolOp pool_op,
    const at::Tensor& input,
    c10::IntArrayRef kernel,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  const char* op = pool_op_name(pool_op);
  check_rank4(op, input);
  check_dtype(op, input, pool_accepts_dtype(pool_op, input.scalar_type()));
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

AvgPool2dParams make_avg_pool2d_params(
    PoolOp pool_op,
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    bool ceil_mode,
    const std::optional<int64_t>& divisor_override) {
  const Pool2dParams p = make_pool2d_params(pool_op, input, kernel_size, stride, padding, {1, 1}, ceil_mode);
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, pool_op_name(pool_op),
              ": divisor must be not zero");
  return {p, divisor_override.value_or(0)};
}

}  // namespace

// --------------------------------------------------------------------------------------- convolution
const char* conv_op_name(ConvOp op) {
  return op == ConvOp::Forward ? "conv2d_forward" : "conv2d_backward";
}

bool conv_accepts_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

Conv2dParams check_conv2d_forward(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  return make_conv2d_params(ConvOp::Forward, input, weight, bias, stride, padding, dilation, groups);
}

Conv2dParams check_conv2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  const Conv2dParams p =
      make_conv2d_params(ConvOp::Backward, input, weight, std::nullopt, stride, padding, dilation, groups);
  check_like(conv_op_name(ConvOp::Backward), "grad_output", grad_output, output_sizes(p), input.scalar_type(), input);
  return p;
}

at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.is_cuda() && input.scalar_type() == at::kDouble) {
    return at::MemoryFormat::Contiguous;
  }
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// ------------------------------------------------------------------------------------------- pooling
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

at::MemoryFormat pool_output_format(const at::Tensor& input) {
  // torch's pooling kernels' rule (input.suggest_memory_format() in max_pool2d_with_indices and avg_pool2d),
  // which reads the order of the strides: a channels_last input that is not dense (a slice of one) counts.
  return input.dim() == 4 ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

Pool2dParams check_max_pool2d_forward(
    PoolOp op,
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  TORCH_CHECK(op == PoolOp::MaxForward || op == PoolOp::MaxForwardValues, "lenet_ext: not a max-pool forward");
  return make_pool2d_params(op, input, kernel_size, stride, padding, dilation, ceil_mode);
}

Pool2dParams check_max_pool2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& indices,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    bool ceil_mode) {
  const PoolOp op = PoolOp::MaxBackward;
  const Pool2dParams p = make_pool2d_params(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  check_like(pool_op_name(op), "grad_output", grad_output, output_sizes(p), input.scalar_type(), input);
  check_like(pool_op_name(op), "indices", indices, output_sizes(p), at::kLong, input);
  return p;
}

void check_max_index(bool valid, int64_t index, const Pool2dParams& p) {
  TORCH_CHECK(valid, pool_op_name(PoolOp::MaxBackward), ": found an invalid max index ", index,
              " (expected a flat position in [0, ", p.win.in[0] * p.win.in[1], ") of the ", p.win.in[0], " x ",
              p.win.in[1], " input plane)");
}

AvgPool2dParams check_avg_pool2d_forward(
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    bool ceil_mode,
    const std::optional<int64_t>& divisor_override) {
  return make_avg_pool2d_params(PoolOp::AvgForward, input, kernel_size, stride, padding, ceil_mode,
                                divisor_override);
}

AvgPool2dParams check_avg_pool2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    c10::IntArrayRef kernel_size,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    bool ceil_mode,
    const std::optional<int64_t>& divisor_override) {
  const PoolOp op = PoolOp::AvgBackward;
  const AvgPool2dParams a =
      make_avg_pool2d_params(op, input, kernel_size, stride, padding, ceil_mode, divisor_override);
  check_like(pool_op_name(op), "grad_output", grad_output, output_sizes(a.pool), input.scalar_type(), input);
  return a;
}

// ---------------------------------------------------------------- the fused conv -> sigmoid -> pool
void check_fused_pool(c10::IntArrayRef pool, const at::Tensor& activation) {
  constexpr const char* op = "conv2d_sigmoid_avgpool2d";
  TORCH_CHECK(pool.size() == 2 && pool[0] > 0 && pool[1] > 0 && pool[0] <= kMaxWindowArg && pool[1] <= kMaxWindowArg,
              op, ": pool_size must be two positive ints, got ", pool);
  const at::Tensor& z = activation;
  TORCH_CHECK(z.dim() == 4, op, ": expected a 4D activation, but got one of size: ", z.sizes());
  TORCH_CHECK(z.size(2) >= pool[0] && z.size(3) >= pool[1], op, ": Given input size: (", z.size(1), "x", z.size(2),
              "x", z.size(3), "). Calculated output size: (", z.size(1), "x", z.size(2) / pool[0], "x",
              z.size(3) / pool[1], "). Output size is too small");
}

void check_fused_grad(const at::Tensor& grad_output, const at::Tensor& activation, c10::IntArrayRef pool) {
  check_fused_pool(pool, activation);
  const at::Tensor& a = activation;
  check_like("conv2d_sigmoid_avgpool2d_backward", "grad_output", grad_output,
             {a.size(0), a.size(1), a.size(2) / pool[0], a.size(3) / pool[1]}, a.scalar_type(), a);
}

// ------------------------------------------------------------------------ private, for the fake kernels
bool accepts_dtype(c10::string_view op, at::ScalarType dtype) {
  for (const ConvOp c : {ConvOp::Forward, ConvOp::Backward}) {
    if (op == conv_op_name(c)) {
      return conv_accepts_dtype(dtype);
    }
  }
  for (const PoolOp p : {PoolOp::MaxForward, PoolOp::MaxForwardValues, PoolOp::MaxBackward, PoolOp::AvgForward,
                         PoolOp::AvgBackward}) {
    if (op == pool_op_name(p)) {
      return pool_accepts_dtype(p, dtype);
    }
  }
  TORCH_CHECK(false, "lenet_ext._accepts_dtype: unknown operator '", op, "'");
}

}  // namespace lenet_ext
