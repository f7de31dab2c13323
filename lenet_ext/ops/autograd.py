"""Autograd: each operator's Autograd kernel, an autograd Function of ours with backward (and, from
``forward_mode``, jvp), and ``call``, the shortcut the user-facing functions take through that kernel.

Every backward is itself an operator with a Function of its own, differentiable in both modes too, so
double backward and forward-over-reverse (``torch.func.hessian``) work; the fused block's backward is
the exception and says so.
"""

import threading

import torch

from .._torch_internals import (
    AutoDispatchBelowAutograd,
    SingleLevelFunction,
    any_requires_grad,
    enable_single_level_autograd_function,
    forward_ad_or_transforms_active,
    is_fwd_grad_enabled,
    set_fwd_grad_enabled,
)
from . import forward_mode
from ._library import lib as _lib
from ._library import ops as _ops
from .autocast import autocast_on
from .forward_mode import gather_at, max_pool2d_values_indices, sum_terms

# ------------------------------------------------------------------------------------ autograd kernels
# torch.library.register_autograd is reverse mode only: its kernel runs the forward without autograd
# unless an input requires grad, so a forward-mode tangent is dropped without an error (a zero jvp),
# and torch.func.grad refuses its autograd.Function. So each operator's Autograd kernel is an
# autograd.Function of ours with backward *and* jvp, applied as ATen's own kernels are: at each
# torch.func level the dispatcher reaches it with that level's tensors, and its forward re-dispatches
# below autograd to the next level down (or to the device kernel).
_modes = threading.local()


class _OperatorFunction(SingleLevelFunction):
    """The base of our operators' autograd Functions. A single-level Function, as torch.func builds for
    each level of a user's autograd.Function: applied at the level the dispatcher is at, where a
    torch.autograd.Function would be sent through torch.func's custom_function_call again (and, from
    torch 2.14 on, find no kernel for it below the transforms)."""


_APPLY = {}  # each operator's overload -> its autograd Function's apply, for call()'s reverse-mode shortcut


def _register_autograd(name, function):
    base_apply = function.apply
    op = getattr(_ops, name).default
    _APPLY[op] = base_apply

    def autograd_kernel(*args):
        if not _transforms_or_forward_ad():
            return _reverse_mode(op, base_apply, args)
        # autograd.Function runs its forward with grad and forward-grad modes off. A C++ operator
        # re-dispatches with the caller's modes, and torch.func's levels below this one need them
        # (a jvp level under a grad level would otherwise see no tangents): the forward restores them.
        _modes.value = torch.is_grad_enabled(), is_fwd_grad_enabled()
        # the Function is applied at this torch.func level, not lifted through all of them again
        with enable_single_level_autograd_function():
            return base_apply(*args)

    _lib.impl(name, autograd_kernel, "Autograd")


# Whether forward mode (a dual level is open, so an input may carry a tangent) or a torch.func transform
# may be in play (a name of this module, so a test can count its calls)
_transforms_or_forward_ad = forward_ad_or_transforms_active


def _reverse_mode(op, apply, args):
    """A call with no torch.func transform and no forward-mode level: below the Autograd key when nothing
    needs a gradient (skipping the autograd Function's cost), else the operator's autograd Function, whose
    forward then needs no grad modes restored."""
    if not (torch.is_grad_enabled() and any_requires_grad(*args)):
        return _below_autograd(op, args)
    _modes.value = None
    return apply(*args)


def _below_autograd(op, args):
    """op(*args) below the Autograd key: how a call that cannot need autograd runs."""
    with AutoDispatchBelowAutograd():
        return op(*args)


def call(op, *args):
    """``op(*args)`` for the user-facing functions, taking the Autograd kernel's own branches without the
    round trip through the dispatcher into that Python kernel (a third of a small call's host time): a
    call that cannot need autograd goes straight below the Autograd key; a plain reverse-mode call
    (no torch.func transform, no forward-mode level, no autocast, whose kernel runs first) applies the
    operator's autograd Function. Anything else, and every call under torch.compile, which traces the
    call as it is, goes through the dispatcher."""
    if torch.compiler.is_compiling() or _transforms_or_forward_ad():
        return op(*args)
    apply = _APPLY.get(op)
    if apply is None or autocast_on():
        return op(*args)
    return _reverse_mode(op, apply, args)


def _forward_below_autograd(packet):
    op = packet.default

    def forward(*args):
        modes = _modes.value
        if modes is None:
            return _below_autograd(op, args)
        grad_mode, fw_grad_mode = modes
        with (
            AutoDispatchBelowAutograd(),
            torch.set_grad_enabled(grad_mode),
            set_fwd_grad_enabled(fw_grad_mode),
        ):
            return op(*args)

    return staticmethod(forward)


# --------------------------------------------------------------------------------------------- conv2d
class _Conv2d(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_forward)
    jvp = staticmethod(forward_mode.conv2d_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.has_bias = bias is not None
        ctx.conf = (stride, padding, dilation, groups)
        ctx.out_shape = output.shape

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
        grad_input, grad_weight, grad_bias = call(_ops.conv2d_backward.default, grad, input, weight, *ctx.conf, mask)
        return grad_input, grad_weight, grad_bias, None, None, None, None


_register_autograd("conv2d_forward", _Conv2d)


class _Conv2dBackward(_OperatorFunction):
    """The backward's outputs are linear in each of (grad, input, weight), so their derivatives are
    convolutions again: with gi = Jx(W)^T g, gW = Jw(x)^T g and gb = sum(g),

        d/d grad   = conv(gg_input, W) + conv(x, gg_weight) + gg_bias
        d/d input  = backward-input of conv with weight gg_weight
        d/d weight = backward-weight of conv with input gg_input
    """

    forward = _forward_below_autograd(_ops.conv2d_backward)
    jvp = staticmethod(forward_mode.conv2d_backward_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, input, weight, stride, padding, dilation, groups, mask = inputs
        ctx.save_for_backward(grad, input, weight)
        ctx.save_for_forward(grad, input, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.mask = mask

    @staticmethod
    def backward(ctx, gg_input, gg_weight, gg_bias):
        grad, input, weight = ctx.saved_tensors
        conf = ctx.conf
        d_grad = d_input = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad = sum_terms(
                [
                    _ops.conv2d_forward(gg_input, weight, None, *conf) if gg_input is not None else None,
                    _ops.conv2d_forward(input, gg_weight, None, *conf) if gg_weight is not None else None,
                    gg_bias.view(1, -1, 1, 1).expand_as(grad) if gg_bias is not None else None,
                ]
            )
        if ctx.needs_input_grad[1] and gg_weight is not None:
            d_input = _ops.conv2d_backward(grad, input, gg_weight, *conf, [True, False, False])[0]
        if ctx.needs_input_grad[2] and gg_input is not None:
            d_weight = _ops.conv2d_backward(grad, gg_input, weight, *conf, [False, True, False])[1]
        return d_grad, d_input, d_weight, None, None, None, None, None


_register_autograd("conv2d_backward", _Conv2dBackward)


# -------------------------------------------------------------------------------------------- pooling
class _MaxPool2d(_OperatorFunction):
    forward = _forward_below_autograd(_ops.max_pool2d_forward)
    jvp = staticmethod(forward_mode.max_pool2d_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *conf = inputs
        ctx.save_for_backward(input, output[1])
        ctx.save_for_forward(output[1])
        ctx.conf = conf
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros for the indices' gradient, which is never read

    @staticmethod
    def backward(ctx, grad, _grad_indices):
        input, indices = ctx.saved_tensors
        grad_input = None if grad is None else call(_ops.max_pool2d_backward.default, grad, input, indices, *ctx.conf)
        return grad_input, None, None, None, None, None


_register_autograd("max_pool2d_forward", _MaxPool2d)


class _MaxPool2dValues(_OperatorFunction):
    """functional.max_pool2d only calls the values-only forward when no gradient is wanted; anyone
    differentiating it directly still gets the right answer, at the cost of finding the indices again."""

    forward = _forward_below_autograd(_ops.max_pool2d_forward_values)
    jvp = staticmethod(forward_mode.max_pool2d_values_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *conf = inputs
        ctx.save_for_backward(input)
        ctx.save_for_forward(input)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, grad):
        input, indices = max_pool2d_values_indices(ctx)
        return _ops.max_pool2d_backward(grad, input, indices, *ctx.conf), None, None, None, None, None


_register_autograd("max_pool2d_forward_values", _MaxPool2dValues)


class _MaxPool2dBackward(_OperatorFunction):
    """The backward scatters grad_output to the indexed positions, so its adjoint gathers: the gradient
    w.r.t. grad_output is gg_input read at each output's index. It is linear in grad_output (its own
    tangent is the backward of grad_output's tangent) and does not depend on input's values."""

    forward = _forward_below_autograd(_ops.max_pool2d_backward)
    jvp = staticmethod(forward_mode.max_pool2d_backward_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad, input, indices, *conf = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(input, indices)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, gg_input):
        (indices,) = ctx.saved_tensors
        d_grad = gather_at(gg_input, indices) if ctx.needs_input_grad[0] else None
        return d_grad, None, None, None, None, None, None, None


_register_autograd("max_pool2d_backward", _MaxPool2dBackward)


class _AvgPool2d(_OperatorFunction):
    """Linear: its tangent is itself applied to the input's tangent."""

    forward = _forward_below_autograd(_ops.avg_pool2d_forward)
    jvp = staticmethod(forward_mode.avg_pool2d_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *conf = inputs
        ctx.save_for_backward(input)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, grad):
        (input,) = ctx.saved_tensors
        return call(_ops.avg_pool2d_backward.default, grad, input, *ctx.conf), None, None, None, None, None, None


_register_autograd("avg_pool2d_forward", _AvgPool2d)


class _AvgPool2dBackward(_OperatorFunction):
    """Linear in grad_output, with the forward as its adjoint; input only gives shapes."""

    forward = _forward_below_autograd(_ops.avg_pool2d_backward)
    jvp = staticmethod(forward_mode.avg_pool2d_backward_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad, input, *conf = inputs
        ctx.save_for_forward(input)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, gg_input):
        d_grad = _ops.avg_pool2d_forward(gg_input, *ctx.conf) if ctx.needs_input_grad[0] else None
        return d_grad, None, None, None, None, None, None, None


_register_autograd("avg_pool2d_backward", _AvgPool2dBackward)


# ------------------------------------------------------------------------ conv2d + sigmoid + avg-pool
class _Fused(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_sigmoid_avgpool2d)
    jvp = staticmethod(forward_mode.fused_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups, pool_size = inputs
        ctx.save_for_backward(input, weight, output[1])
        ctx.save_for_forward(input, weight, output[1])
        ctx.mark_non_differentiable(output[1])  # the activation is returned for the backward's sake only
        ctx.set_materialize_grads(False)  # so autograd writes no activation-sized zeros for its gradient
        ctx.has_bias = bias is not None
        ctx.conf = (stride, padding, dilation, groups, pool_size)

    @staticmethod
    def backward(ctx, grad, _grad_activation):
        if grad is None:  # the pooled output was not used
            return (None,) * 8
        input, weight, act = ctx.saved_tensors
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
        grads = call(_ops.conv2d_sigmoid_avgpool2d_backward.default, grad, input, weight, act, *ctx.conf, mask)
        return *grads, None, None, None, None, None


_register_autograd("conv2d_sigmoid_avgpool2d", _Fused)


class _FusedBackward(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_sigmoid_avgpool2d_backward)
    jvp = staticmethod(forward_mode.fused_backward_jvp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "double backward is not supported for lenet_ext.conv2d_sigmoid_avgpool2d; use the unfused layers "
            "(lenet_ext.nn.Conv2d, torch.nn.Sigmoid, lenet_ext.nn.AvgPool2d), which support it"
        )


_register_autograd("conv2d_sigmoid_avgpool2d_backward", _FusedBackward)
