"""Fake (meta) kernels, autograd and autocast for every ``torch.ops.lenet_ext`` operator.

The schemas and the real kernels are C++ (``csrc/ops.cpp``, ``csrc/cpu``, ``csrc/cuda``); this module
teaches the dispatcher how to run them under ``torch.compile`` (fake kernels, which must produce the
same shapes and strides as the real ones), how to differentiate them, in reverse mode (backward) and
in forward mode (jvp), and how to run them under ``torch.autocast`` and ``torch.func.vmap``.
Every backward is itself an operator, differentiable in both modes too, so double backward and
forward-over-reverse (``torch.func.hessian``) work; the fused block's backward is the exception and
says so.
"""

import threading

import torch
from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (loads the library, which registers the schemas and C++ kernels)
from ._shape import conv2d_output_size, pool2d_output_size

_ops = torch.ops.lenet_ext
_lib = torch.library.Library("lenet_ext", "IMPL")  # our Autograd and Autocast kernels live here


# ------------------------------------------------------------------------------------ autograd kernels
# torch.library.register_autograd is reverse mode only: its kernel runs the forward without autograd
# unless an input requires grad, so a forward-mode tangent is dropped without an error (a zero jvp),
# and torch.func.grad refuses its autograd.Function. So each operator's Autograd kernel is an
# autograd.Function of ours with backward *and* jvp, applied as ATen's own kernels are: at each
# torch.func level the dispatcher reaches it with that level's tensors, and its forward re-dispatches
# below autograd to the next level down (or to the device kernel).
_modes = threading.local()


class _OperatorFunction(torch.autograd.function._SingleLevelFunction):
    """The base of our operators' autograd Functions. A single-level Function, as torch.func builds for
    each level of a user's autograd.Function: applied at the level the dispatcher is at, where a
    torch.autograd.Function would be sent through torch.func's custom_function_call again (and, from
    torch 2.14 on, find no kernel for it below the transforms)."""

    @staticmethod
    def _compiled_autograd_key(ctx):
        return (ctx._autograd_function_id,)


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
        _modes.value = torch.is_grad_enabled(), torch._C._is_fwd_grad_enabled()
        # the Function is applied at this torch.func level, not lifted through all of them again
        with torch._functorch.utils.enable_single_level_autograd_function():
            return base_apply(*args)

    _lib.impl(name, autograd_kernel, "Autograd")


def _transforms_or_forward_ad():
    """Whether forward mode (a dual level is open, so an input may carry a tangent) or a torch.func
    transform may be in play."""
    return torch.autograd.forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def _may_differentiate(args):
    """Whether a call may need autograd: reverse mode (an input requires grad), forward mode or a
    torch.func transform."""
    return (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)) or _transforms_or_forward_ad()


def _reverse_mode(op, apply, args):
    """A call with no torch.func transform and no forward-mode level: below the Autograd key when nothing
    needs a gradient (skipping the autograd Function's cost), else the operator's autograd Function, whose
    forward then needs no grad modes restored."""
    if not (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)):
        return _below_autograd(op, args)
    _modes.value = None
    return apply(*args)


def _below_autograd(op, args):
    """op(*args) below the Autograd key: how a call that cannot need autograd runs."""
    with torch._C._AutoDispatchBelowAutograd():
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
            torch._C._AutoDispatchBelowAutograd(),
            torch.set_grad_enabled(grad_mode),
            torch.autograd.forward_ad._set_fwd_grad_enabled(fw_grad_mode),
        ):
            return op(*args)

    return staticmethod(forward)


def _sum(terms):
    """The sum of the terms that are not None (None when all are)."""
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


VMAP_RULES = {}  # each operator's overload -> its vmap rule, which _batching also runs under legacy vmap


def _register_vmap(name, per_sample=(), rule=None):
    """A vmap rule: ``rule``, or else the generic one. When only the arguments at positions ``per_sample``
    (tensors whose dim 0 is the batch, each element computed on its own) are vmapped, the vmapped
    dimension folds into the batch and the operator runs once. Otherwise it runs once per slice of the
    vmapped dimension (torch's generic fallback would too, but it cannot return the backwards' optional
    tensors)."""
    op = getattr(_ops, name).default

    def generic(info, in_dims, *args):
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if per_sample and all(in_dims[i] is None for i in tensors if i not in per_sample):
            return _folded(op, info.batch_size, per_sample, in_dims, args)
        results = [op(*(_slice(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
        if not isinstance(results[0], tuple):
            return torch.stack(results), 0
        stacked = tuple(None if r[0] is None else torch.stack(r) for r in zip(*results))
        return stacked, tuple(None if s is None else 0 for s in stacked)

    VMAP_RULES[op] = rule = rule or generic
    torch.library.register_vmap(op, rule, lib=_lib)


def _slice(arg, dim, i):
    return arg.select(dim, i) if isinstance(arg, torch.Tensor) and dim is not None else arg


def _folded(op, vmapped, per_sample, in_dims, args):
    args = list(args)
    for i in per_sample:
        a, dim = args[i], in_dims[i]
        a = a.expand(vmapped, *a.shape) if dim is None else a.movedim(dim, 0)
        batch = a.shape[1]
        args[i] = a.flatten(0, 1)
    results = op(*args)
    if not isinstance(results, tuple):
        return results.unflatten(0, (vmapped, batch)), 0
    return tuple(r.unflatten(0, (vmapped, batch)) for r in results), (0,) * len(results)


def _as_groups(t, dim, vmapped, channel_dim):
    """A vmapped tensor with the vmapped dimension (unbatched: repeated) folded into its channel
    dimension, vmapped-index major: (B, N, C, H, W) -> (N, B*C, H, W), (B, O, ...) -> (B*O, ...)."""
    t = t.expand(vmapped, *t.shape) if dim is None else t.movedim(dim, 0)
    return t.movedim(0, channel_dim).flatten(channel_dim, channel_dim + 1)


def _conv2d_vmap(info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    """A vmapped weight or bias: one convolution with B times the groups, as in torch's own batching
    rule for convolution. Group b * groups + g of it reads input b's channels of group g."""
    vmapped = info.batch_size
    if in_dims[1] is None and in_dims[2] is None:  # only the input: its vmapped dimension folds into the batch
        args = (input, weight, bias, stride, padding, dilation, groups)
        return _folded(_ops.conv2d_forward.default, vmapped, (0,), in_dims, args)
    x, w = _as_groups(input, in_dims[0], vmapped, 1), _as_groups(weight, in_dims[1], vmapped, 0)
    b = _as_groups(bias, in_dims[2], vmapped, 0) if bias is not None else None
    out = _ops.conv2d_forward(x, w, b, stride, padding, dilation, groups * vmapped)
    return _unfold_groups(out, 1, vmapped), 1


def _conv2d_backward_vmap(info, in_dims, grad, input, weight, stride, padding, dilation, groups, mask):
    """The backward of that grouped convolution: every gradient in one call, however the arguments are
    vmapped (per-sample gradients included)."""
    vmapped = info.batch_size
    g, x = _as_groups(grad, in_dims[0], vmapped, 1), _as_groups(input, in_dims[1], vmapped, 1)
    w = _as_groups(weight, in_dims[2], vmapped, 0)
    return _grads_of_groups(_ops.conv2d_backward(g, x, w, stride, padding, dilation, groups * vmapped, mask), vmapped)


def _grads_of_groups(grads, vmapped):
    """A grouped convolution's gradients (those not None) with the vmapped dimension unfolded again, and
    their vmapped dimensions."""
    dims = (1, 0, 0)  # the input gradient is (N, B*C, H, W); the weight's (B*O, ...) and the bias's (B*O)
    return (
        tuple(_unfold_groups(t, d, vmapped) if t is not None else None for t, d in zip(grads, dims)),
        tuple(d if t is not None else None for t, d in zip(grads, dims)),
    )


def _unfold_groups(t, dim, vmapped):
    return t.unflatten(dim, (vmapped, t.shape[dim] // vmapped))


# ------------------------------------------------------------------------------------ autocast kernels
_AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_on():
    """Whether torch.autocast is on for any device (so for any we have autocast kernels for): one query of
    torch's autocast state, a twentieth of a microsecond, where asking per device costs ten times that on
    every call."""
    return torch._C._is_any_autocast_enabled()


def autocast_args(device_type, args):
    """``args`` as torch.autocast gives them to an operator that runs in lower precision, such as
    torch's convolution, when autocast is on for ``device_type``: floating-point tensors on that
    device in the autocast dtype, except float64 ones (torch's rule). Unchanged when it is off."""
    # (only the devices we register autocast kernels for; a plain tuple test, which torch.compile traces
    # on every supported torch, where torch.amp.is_autocast_available is opaque to torch 2.11's dynamo)
    if device_type not in _AUTOCAST_DEVICES or not torch.is_autocast_enabled(device_type):
        return args
    dtype = torch.get_autocast_dtype(device_type)

    def cast(arg):
        eligible = isinstance(arg, torch.Tensor) and arg.is_floating_point() and arg.dtype != torch.float64
        return arg.to(dtype) if eligible and arg.device.type == device_type else arg

    return [cast(a) for a in args]


def _register_autocast(name):
    op = getattr(_ops, name).default
    for device_type in _AUTOCAST_DEVICES:
        key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def autocast_kernel(*args, device_type=device_type, excluded=excluded):
            with torch._C._ExcludeDispatchKeyGuard(excluded):
                return op(*autocast_args(device_type, args))

        _lib.impl(name, autocast_kernel, key)


# --------------------------------------------------------------------------------------- what ops accept
# The dtypes each operator takes, read once from the tables every kernel checks (csrc/checks.h), so that
# the fake kernels accept exactly what the CPU and CUDA kernels do, and say so in the same words.
_CONV_OPS = ("conv2d_forward", "conv2d_backward")
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
ACCEPTED_DTYPES = {
    op: frozenset(d for d in _CANDIDATE_DTYPES if _ops._accepts_dtype(op, d)) for op in _CONV_OPS + _POOL_OPS
}
POOL_DTYPES = {op: ACCEPTED_DTYPES[op] for op in _POOL_OPS}

# torch's names for dtypes in its NotImplementedError messages (c10::toString)
_DTYPE_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short", torch.int32: "Int",
    torch.int64: "Long", torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}  # fmt: skip


def _check_input(op, input, weight=None):
    """The real kernels' first checks (csrc/checks.cpp), with their messages: rank, then dtype."""
    if input.dim() != 4:
        raise RuntimeError(f"{op}: expected a 4D input (N, C, H, W), but got input of size: {list(input.shape)}")
    if weight is not None and weight.dim() != 4:
        raise RuntimeError(
            f"{op}: expected a 4D weight (O, C/groups, KH, KW), but got weight of size: {list(weight.shape)}"
        )
    if input.dtype not in ACCEPTED_DTYPES[op]:
        name = _DTYPE_NAMES.get(input.dtype, str(input.dtype))
        raise NotImplementedError(f"\"{op}\" not implemented for '{name}'")


# --------------------------------------------------------------------------------------------- conv2d
def _conv_memory_format(input, weight):
    """The layout torch's own convolution gives its output and both gradients (mirrors
    conv2d_memory_format in csrc/checks.h): channels_last when the input or the weight is, except
    float64 on CUDA (cuDNN's rule, cudnn_conv_suggest_memory_format)."""
    if input.device.type == "cuda" and input.dtype == torch.float64:
        return torch.contiguous_format
    if torch.channels_last in (suggest_memory_format(input), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def _conv_empty(input, weight, sizes, like):
    return torch.empty(sizes, dtype=like.dtype, device=like.device, memory_format=_conv_memory_format(input, weight))


@torch.library.register_fake("lenet_ext::conv2d_forward")
def _conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups):
    _check_input("conv2d_forward", input, weight)
    oh, ow = conv2d_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _conv_empty(input, weight, (input.shape[0], weight.shape[0], oh, ow), input)


@torch.library.register_fake("lenet_ext::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    _check_input("conv2d_backward", input, weight)
    return (
        _conv_empty(input, weight, input.shape, input) if output_mask[0] else None,
        _conv_empty(input, weight, weight.shape, weight) if output_mask[1] else None,
        weight.new_empty(weight.shape[:1]) if output_mask[2] else None,
    )


class _Conv2d(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_forward)

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

    @staticmethod
    def jvp(ctx, d_input, d_weight, d_bias, *_):
        """conv is bilinear in (input, weight) and affine in bias."""
        input, weight = ctx.saved_tensors
        return _conv_tangent(input, weight, d_input, d_weight, d_bias, ctx.conf, ctx.out_shape)


def _conv_tangent(input, weight, d_input, d_weight, d_bias, conf, out_shape):
    tangent = _sum(
        [
            _ops.conv2d_forward(d_input, weight, None, *conf) if d_input is not None else None,
            _ops.conv2d_forward(input, d_weight, None, *conf) if d_weight is not None else None,
        ]
    )
    if d_bias is None:
        return tangent
    d_bias = d_bias.view(1, -1, 1, 1)
    return tangent + d_bias if tangent is not None else d_bias.expand(out_shape).clone()


_register_autograd("conv2d_forward", _Conv2d)


class _Conv2dBackward(_OperatorFunction):
    """The backward's outputs are linear in each of (grad, input, weight), so their derivatives are
    convolutions again: with gi = Jx(W)^T g, gW = Jw(x)^T g and gb = sum(g),

        d/d grad   = conv(gg_input, W) + conv(x, gg_weight) + gg_bias
        d/d input  = backward-input of conv with weight gg_weight
        d/d weight = backward-weight of conv with input gg_input

    and, in forward mode, d gi = Jx(W)^T dg + Jx(dW)^T g, d gW = Jw(x)^T dg + Jw(dx)^T g, d gb = sum(dg).
    """

    forward = _forward_below_autograd(_ops.conv2d_backward)

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
            d_grad = _sum(
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

    @staticmethod
    def jvp(ctx, d_grad, d_input, d_weight, *_):
        grad, input, weight = ctx.saved_tensors
        conf, (want_input, want_weight, want_bias) = ctx.conf, ctx.mask
        from_grad = [None] * 3
        if d_grad is not None:
            from_grad = _ops.conv2d_backward(d_grad, input, weight, *conf, ctx.mask)
        from_weight = from_input = None
        if want_input and d_weight is not None:
            from_weight = _ops.conv2d_backward(grad, input, d_weight, *conf, [True, False, False])[0]
        if want_weight and d_input is not None:
            from_input = _ops.conv2d_backward(grad, d_input, weight, *conf, [False, True, False])[1]
        # an output whose tangent has no term is a zero tangent, not None: the output exists
        return (
            _or_zeros(_sum([from_grad[0], from_weight]), input) if want_input else None,
            _or_zeros(_sum([from_grad[1], from_input]), weight) if want_weight else None,
            _or_zeros(from_grad[2], weight.new_empty(weight.shape[:1])) if want_bias else None,
        )


def _or_zeros(tangent, like):
    return tangent if tangent is not None else torch.zeros_like(like)


_register_autograd("conv2d_backward", _Conv2dBackward)


# -------------------------------------------------------------------------------------------- pooling
def _pool_format(input):
    """The real kernels' layout rule (pool_output_format in csrc/checks.h), torch's: the input's suggested
    memory format, read from the order of its strides."""
    return suggest_memory_format(input) if input.dim() == 4 else torch.contiguous_format


def _pool_empty(input, sizes, dtype=None):
    return torch.empty(sizes, dtype=dtype or input.dtype, device=input.device, memory_format=_pool_format(input))


def _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode):
    oh, ow = pool2d_output_size(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    return (input.shape[0], input.shape[1], oh, ow)


@torch.library.register_fake("lenet_ext::max_pool2d_forward")
def _max_pool2d_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_input("max_pool2d_forward", input)
    sizes = _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_empty(input, sizes), _pool_empty(input, sizes, torch.int64)


@torch.library.register_fake("lenet_ext::max_pool2d_forward_values")
def _max_pool2d_forward_values_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_input("max_pool2d_forward_values", input)
    return _pool_empty(input, _pool_out_sizes(input, kernel_size, stride, padding, dilation, ceil_mode))


@torch.library.register_fake("lenet_ext::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    _check_input("max_pool2d_backward", input)
    return _pool_empty(input, input.shape)


@torch.library.register_fake("lenet_ext::avg_pool2d_forward")
def _avg_pool2d_forward_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    _check_input("avg_pool2d_forward", input)
    return _pool_empty(input, _pool_out_sizes(input, kernel_size, stride, padding, [1, 1], ceil_mode))


@torch.library.register_fake("lenet_ext::avg_pool2d_backward")
def _avg_pool2d_backward_fake(
    grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    _check_input("avg_pool2d_backward", input)
    return _pool_empty(input, input.shape)


def _gather_at(values, indices):
    """values (N, C, H, W) read at each output's flat index into its plane: max pooling's derivative."""
    flat = values.reshape(*values.shape[:2], -1)
    return flat.gather(2, indices.reshape(*indices.shape[:2], -1)).view(indices.shape)


class _MaxPool2d(_OperatorFunction):
    forward = _forward_below_autograd(_ops.max_pool2d_forward)

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

    @staticmethod
    def jvp(ctx, d_input, *_):
        (indices,) = ctx.saved_tensors
        return _gather_at(d_input, indices), None


_register_autograd("max_pool2d_forward", _MaxPool2d)


class _MaxPool2dValues(_OperatorFunction):
    """functional.max_pool2d only calls the values-only forward when no gradient is wanted; anyone
    differentiating it directly still gets the right answer, at the cost of finding the indices again."""

    forward = _forward_below_autograd(_ops.max_pool2d_forward_values)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *conf = inputs
        ctx.save_for_backward(input)
        ctx.save_for_forward(input)
        ctx.conf = conf

    @staticmethod
    def _indices(ctx):
        (input,) = ctx.saved_tensors
        return input, _ops.max_pool2d_forward(input.detach(), *ctx.conf)[1]

    @staticmethod
    def backward(ctx, grad):
        input, indices = _MaxPool2dValues._indices(ctx)
        return _ops.max_pool2d_backward(grad, input, indices, *ctx.conf), None, None, None, None, None

    @staticmethod
    def jvp(ctx, d_input, *_):
        return _gather_at(d_input, _MaxPool2dValues._indices(ctx)[1])


_register_autograd("max_pool2d_forward_values", _MaxPool2dValues)


class _MaxPool2dBackward(_OperatorFunction):
    """The backward scatters grad_output to the indexed positions, so its adjoint gathers: the gradient
    w.r.t. grad_output is gg_input read at each output's index. It is linear in grad_output (its own
    tangent is the backward of grad_output's tangent) and does not depend on input's values."""

    forward = _forward_below_autograd(_ops.max_pool2d_backward)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad, input, indices, *conf = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(input, indices)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, gg_input):
        (indices,) = ctx.saved_tensors
        d_grad = _gather_at(gg_input, indices) if ctx.needs_input_grad[0] else None
        return d_grad, None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, d_grad, *_):
        input, indices = ctx.saved_tensors
        if d_grad is None:
            return torch.zeros_like(input)
        return _ops.max_pool2d_backward(d_grad, input, indices, *ctx.conf)


_register_autograd("max_pool2d_backward", _MaxPool2dBackward)


class _AvgPool2d(_OperatorFunction):
    """Linear: its tangent is itself applied to the input's tangent."""

    forward = _forward_below_autograd(_ops.avg_pool2d_forward)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *conf = inputs
        ctx.save_for_backward(input)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, grad):
        (input,) = ctx.saved_tensors
        return call(_ops.avg_pool2d_backward.default, grad, input, *ctx.conf), None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, d_input, *_):
        return _ops.avg_pool2d_forward(d_input, *ctx.conf)


_register_autograd("avg_pool2d_forward", _AvgPool2d)


class _AvgPool2dBackward(_OperatorFunction):
    """Linear in grad_output, with the forward as its adjoint; input only gives shapes."""

    forward = _forward_below_autograd(_ops.avg_pool2d_backward)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad, input, *conf = inputs
        ctx.save_for_forward(input)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, gg_input):
        d_grad = _ops.avg_pool2d_forward(gg_input, *ctx.conf) if ctx.needs_input_grad[0] else None
        return d_grad, None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, d_grad, *_):
        (input,) = ctx.saved_tensors
        if d_grad is None:
            return torch.zeros_like(input)
        return _ops.avg_pool2d_backward(d_grad, input, *ctx.conf)


_register_autograd("avg_pool2d_backward", _AvgPool2dBackward)


# ---------------------------------------------------------------------------- conv2d + sigmoid + avg-pool
@torch.library.register_fake("lenet_ext::conv2d_sigmoid_avgpool2d")
def _fused_forward_fake(input, weight, bias, stride, padding, dilation, groups, pool_size):
    oh, ow = conv2d_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    act = _conv_empty(input, weight, (input.shape[0], weight.shape[0], oh, ow), input)
    out_sizes = (act.shape[0], act.shape[1], oh // pool_size[0], ow // pool_size[1])
    return _conv_empty(input, weight, out_sizes, input), act


@torch.library.register_fake("lenet_ext::conv2d_sigmoid_avgpool2d_backward")
def _fused_backward_fake(grad_output, input, weight, activation, stride, padding, dilation, groups, pool_size, mask):
    return _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, mask)


class _Fused(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_sigmoid_avgpool2d)

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

    @staticmethod
    def jvp(ctx, d_input, d_weight, d_bias, *_):
        """The chain rule through the three: conv's tangent, times sigmoid's derivative a(1 - a), pooled."""
        input, weight, act = ctx.saved_tensors
        *conv_conf, pool = ctx.conf
        d_conv = _conv_tangent(input, weight, d_input, d_weight, d_bias, conv_conf, act.shape)
        d_act = d_conv * act * (1 - act)
        return _ops.avg_pool2d_forward(d_act, pool, pool, [0, 0], False, True, None), None


_register_autograd("conv2d_sigmoid_avgpool2d", _Fused)


class _FusedBackward(_OperatorFunction):
    forward = _forward_below_autograd(_ops.conv2d_sigmoid_avgpool2d_backward)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "double backward is not supported for lenet_ext.conv2d_sigmoid_avgpool2d; use the unfused layers "
            "(lenet_ext.nn.Conv2d, torch.nn.Sigmoid, lenet_ext.nn.AvgPool2d), which support it"
        )

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(
            "forward-mode AD through the backward of lenet_ext.conv2d_sigmoid_avgpool2d (forward-over-reverse, "
            "as in torch.func.hessian) is not supported; use the unfused layers (lenet_ext.nn.Conv2d, "
            "torch.nn.Sigmoid, lenet_ext.nn.AvgPool2d), which support it"
        )


_register_autograd("conv2d_sigmoid_avgpool2d_backward", _FusedBackward)


# ----------------------------------------------------------------------------- vmap and autocast
_register_vmap("conv2d_forward", rule=_conv2d_vmap)
_register_vmap("conv2d_backward", rule=_conv2d_backward_vmap)
_register_vmap("max_pool2d_forward", per_sample=(0,))
_register_vmap("max_pool2d_forward_values", per_sample=(0,))
_register_vmap("max_pool2d_backward", per_sample=(0, 1, 2))
_register_vmap("avg_pool2d_forward", per_sample=(0,))
_register_vmap("avg_pool2d_backward", per_sample=(0, 1))
_register_vmap("conv2d_sigmoid_avgpool2d", per_sample=(0,))

# Pooling needs no autocast kernel: it runs in its input's dtype, as torch's does.
_register_autocast("conv2d_forward")
_register_autocast("conv2d_sigmoid_avgpool2d")

from . import _batching  # noqa: E402, F401  (the fused backward's vmap rule; every rule under legacy vmap)
