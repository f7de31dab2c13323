"""Fake (meta) kernels and autograd for every ``torch.ops.lenet_ext`` operator.

The schemas and the real kernels are C++ (``csrc/ops.cpp``, ``csrc/cpu``, ``csrc/cuda``); this module
teaches the dispatcher how to run them under ``torch.compile`` (fake kernels, which must produce the
same shapes and strides as the real ones) and how to differentiate them (``register_autograd``).
Every backward is itself an operator, and every backward operator is differentiable here too, so
double backward works.
"""

import torch

from . import _C  # noqa: F401  (loads the library, which registers the schemas and C++ kernels)
from ._shape import conv2d_output_size

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
