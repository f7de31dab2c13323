"""Fake (meta) kernels and autograd for every ``torch.ops.lenet_ext`` operator.

The schemas and the real kernels are C++ (``csrc/ops.cpp``, ``csrc/cpu``, ``csrc/cuda``); this module
teaches the dispatcher how to run them under ``torch.compile`` (fake kernels, which must produce the
same shapes and strides as the real ones) and how to differentiate them (``register_autograd``).
Every backward is itself an operator, and every backward operator is differentiable here too, so
double backward works.
"""

import torch

from . import _C  # noqa: F401  (loads the library, which registers the schemas and C++ kernels)
from ._shape import conv2d_output_size, pool2d_output_size

_ops = torch.ops.lenet_ext


# --------------------------------------------------------------------------------------------- conv2d
@torch.library.register_fake("lenet_ext::conv2d_forward")
def _conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups):
    oh, ow = conv2d_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return input.new_empty((input.shape[0], weight.shape[0], oh, ow))


@torch.library.register_fake("lenet_ext::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty(weight.shape[:1]) if output_mask[2] else None,
    )


def _conv2d_setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None
    ctx.conf = (stride, padding, dilation, groups)


def _conv2d_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
    grad_input, grad_weight, grad_bias = _ops.conv2d_backward(grad, input, weight, *ctx.conf, mask)
    return grad_input, grad_weight, grad_bias, None, None, None, None


torch.library.register_autograd("lenet_ext::conv2d_forward", _conv2d_backward, setup_context=_conv2d_setup_context)


def _conv2d_backward_setup_context(ctx, inputs, output):
    grad, input, weight, stride, padding, dilation, groups, _ = inputs
    ctx.save_for_backward(grad, input, weight)
    ctx.conf = (stride, padding, dilation, groups)


def _conv2d_double_backward(ctx, gg_input, gg_weight, gg_bias):
    """The backward's outputs are linear in each of (grad, input, weight), so their derivatives are
    convolutions again: with gi = Jx(W)^T g, gW = Jw(x)^T g and gb = sum(g),

        d/d grad   = conv(gg_input, W) + conv(x, gg_weight) + gg_bias
        d/d input  = backward-input of conv with weight gg_weight
        d/d weight = backward-weight of conv with input gg_input
    """
    grad, input, weight = ctx.saved_tensors
    conf = ctx.conf
    d_grad = d_input = d_weight = None
    if ctx.needs_input_grad[0]:
        terms = []
        if gg_input is not None:
            terms.append(_ops.conv2d_forward(gg_input, weight, None, *conf))
        if gg_weight is not None:
            terms.append(_ops.conv2d_forward(input, gg_weight, None, *conf))
        if gg_bias is not None:
            terms.append(gg_bias.view(1, -1, 1, 1).expand_as(grad))
        d_grad = sum(terms[1:], terms[0]) if terms else None
    if ctx.needs_input_grad[1] and gg_weight is not None:
        d_input = _ops.conv2d_backward(grad, input, gg_weight, *conf, [True, False, False])[0]
    if ctx.needs_input_grad[2] and gg_input is not None:
        d_weight = _ops.conv2d_backward(grad, gg_input, weight, *conf, [False, True, False])[1]
    return d_grad, d_input, d_weight, None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::conv2d_backward", _conv2d_double_backward, setup_context=_conv2d_backward_setup_context
)


# -------------------------------------------------------------------------------------------- pooling
# The dtypes each pooling operator takes, read once from the table every kernel checks (csrc/shape.h), so
# that the fake kernels accept exactly what the CPU and CUDA kernels do.
_POOL_OPS = (
    "max_pool2d_forward",
    "max_pool2d_forward_values",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
)
_CANDIDATE_DTYPES = (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
)  # fmt: skip
POOL_DTYPES = {op: frozenset(d for d in _CANDIDATE_DTYPES if _ops._pool2d_accepts(op, d)) for op in _POOL_OPS}

# torch's names for dtypes in its NotImplementedError messages (c10::toString)
_DTYPE_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short", torch.int32: "Int",
    torch.int64: "Long", torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}  # fmt: skip


def _check_pool_input(op, input):
    """The real kernels' checks (shape.h, check_pool_input), with their messages: rank, then dtype."""
    if input.dim() != 4:
        raise RuntimeError(f"{op}: expected a 4D input (N, C, H, W), but got input of size: {list(input.shape)}")
    if input.dtype not in POOL_DTYPES[op]:
        name = _DTYPE_NAMES.get(input.dtype, str(input.dtype))
        raise NotImplementedError(f'"{op}" not implemented for \'{name}\'')


def _pool_format(input):
    """The real kernels' layout rule: channels_last input (that is not also contiguous) stays channels_last."""
    if input.dim() == 4 and not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _pool_empty(input, sizes, dtype=None):
    return torch.empty(sizes, dtype=dtype or input.dtype, device=input.device, memory_format=_pool_format(input))


def _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode):
    oh, ow = pool2d_output_size(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    return (input.shape[0], input.shape[1], oh, ow)


@torch.library.register_fake("lenet_ext::max_pool2d_forward")
def _max_pool2d_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_pool_input("max_pool2d_forward", input)
    sizes = _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_empty(input, sizes), _pool_empty(input, sizes, torch.int64)


@torch.library.register_fake("lenet_ext::max_pool2d_forward_values")
def _max_pool2d_forward_values_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_pool_input("max_pool2d_forward_values", input)
    return _pool_empty(input, _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode))


@torch.library.register_fake("lenet_ext::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    _check_pool_input("max_pool2d_backward", input)
    return _pool_empty(input, input.shape)


@torch.library.register_fake("lenet_ext::avg_pool2d_forward")
def _avg_pool2d_forward_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    _check_pool_input("avg_pool2d_forward", input)
    return _pool_empty(input, _pool_out_sizes(input, kernel_size, stride, padding, [1, 1], ceil_mode))


@torch.library.register_fake("lenet_ext::avg_pool2d_backward")
def _avg_pool2d_backward_fake(
    grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    _check_pool_input("avg_pool2d_backward", input)
    return _pool_empty(input, input.shape)


def _max_pool2d_setup_context(ctx, inputs, output):
    input, *conf = inputs
    ctx.save_for_backward(input, output[1])
    ctx.conf = conf
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_backward(ctx, grad, _grad_indices):
    input, indices = ctx.saved_tensors
    return _ops.max_pool2d_backward(grad, input, indices, *ctx.conf), None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::max_pool2d_forward", _max_pool2d_backward, setup_context=_max_pool2d_setup_context
)


def _save_input_and_conf(ctx, inputs, output):
    """setup_context of the pooling forwards that need only their input and their arguments."""
    input, *conf = inputs
    ctx.save_for_backward(input)
    ctx.conf = conf


def _max_pool2d_values_backward(ctx, grad):
    """functional.max_pool2d only calls the values-only forward when no gradient is wanted; anyone
    differentiating it directly still gets the right answer, at the cost of finding the indices again."""
    (input,) = ctx.saved_tensors
    indices = _ops.max_pool2d_forward(input.detach(), *ctx.conf)[1]
    return _ops.max_pool2d_backward(grad, input, indices, *ctx.conf), None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::max_pool2d_forward_values", _max_pool2d_values_backward, setup_context=_save_input_and_conf
)


def _max_pool2d_backward_setup_context(ctx, inputs, output):
    _grad, _input, indices, *_conf = inputs
    ctx.save_for_backward(indices)


def _max_pool2d_double_backward(ctx, gg_input):
    """The backward scatters grad_output to the indexed positions, so its adjoint gathers: the gradient
    w.r.t. grad_output is gg_input read at each output's index. It does not depend on input's values."""
    (indices,) = ctx.saved_tensors
    d_grad = None
    if ctx.needs_input_grad[0]:
        flat = gg_input.reshape(*gg_input.shape[:2], -1)
        d_grad = flat.gather(2, indices.reshape(*indices.shape[:2], -1)).view(indices.shape)
    return d_grad, None, None, None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::max_pool2d_backward", _max_pool2d_double_backward, setup_context=_max_pool2d_backward_setup_context
)


def _avg_pool2d_backward(ctx, grad):
    (input,) = ctx.saved_tensors
    return _ops.avg_pool2d_backward(grad, input, *ctx.conf), None, None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::avg_pool2d_forward", _avg_pool2d_backward, setup_context=_save_input_and_conf
)


def _avg_pool2d_backward_setup_context(ctx, inputs, output):
    _grad, _input, *conf = inputs
    ctx.conf = conf


def _avg_pool2d_double_backward(ctx, gg_input):
    """The backward is linear in grad_output and its adjoint is the forward itself; input only gives shapes."""
    d_grad = _ops.avg_pool2d_forward(gg_input, *ctx.conf) if ctx.needs_input_grad[0] else None
    return d_grad, None, None, None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::avg_pool2d_backward", _avg_pool2d_double_backward, setup_context=_avg_pool2d_backward_setup_context
)


# ---------------------------------------------------------------------------- conv2d + sigmoid + avg-pool
@torch.library.register_fake("lenet_ext::conv2d_sigmoid_avgpool2d")
def _fused_forward_fake(input, weight, bias, stride, padding, dilation, groups, pool_size):
    oh, ow = conv2d_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    act = input.new_empty((input.shape[0], weight.shape[0], oh, ow))
    return act.new_empty((act.shape[0], act.shape[1], oh // pool_size[0], ow // pool_size[1])), act


@torch.library.register_fake("lenet_ext::conv2d_sigmoid_avgpool2d_backward")
def _fused_backward_fake(grad_output, input, weight, activation, stride, padding, dilation, groups, pool_size, mask):
    return _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, mask)


def _fused_setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, pool_size = inputs
    ctx.save_for_backward(input, weight, output[1])
    ctx.mark_non_differentiable(output[1])  # the activation is returned for the backward's sake only
    ctx.has_bias = bias is not None
    ctx.conf = (stride, padding, dilation, groups, pool_size)


def _fused_backward(ctx, grad, _grad_activation):
    input, weight, act = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
    grads = _ops.conv2d_sigmoid_avgpool2d_backward(grad, input, weight, act, *ctx.conf, mask)
    return *grads, None, None, None, None, None


torch.library.register_autograd(
    "lenet_ext::conv2d_sigmoid_avgpool2d", _fused_backward, setup_context=_fused_setup_context
)


def _fused_double_backward(ctx, *grads):
    raise RuntimeError(
        "double backward is not supported for lenet_ext.conv2d_sigmoid_avgpool2d; use the unfused layers "
        "(lenet_ext.nn.Conv2d, torch.nn.Sigmoid, lenet_ext.nn.AvgPool2d), which support it"
    )


def _no_context(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "lenet_ext::conv2d_sigmoid_avgpool2d_backward", _fused_double_backward, setup_context=_no_context
)
