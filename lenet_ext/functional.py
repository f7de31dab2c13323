"""conv2d, max_pool2d and avg_pool2d with ``torch.nn.functional``'s exact signatures.

Argument normalisation and every user-facing check live here, once, with torch's exception types and
wording, so the operators below (``torch.ops.lenet_ext.*``) always receive well-formed arguments.
"""

import functools
import operator

import torch

from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._shape import MAX_WINDOW_ARG, window_output_size

__all__ = ["conv2d", "conv2d_sigmoid_avgpool2d", "max_pool2d", "avg_pool2d"]

_INT64_MAX = (1 << 63) - 1

# the operators' overloads, looked up once
_CONV2D = torch.ops.lenet_ext.conv2d_forward.default
_FUSED = torch.ops.lenet_ext.conv2d_sigmoid_avgpool2d.default
_MAX_POOL2D = torch.ops.lenet_ext.max_pool2d_forward.default
_MAX_POOL2D_VALUES = torch.ops.lenet_ext.max_pool2d_forward_values.default
_AVG_POOL2D = torch.ops.lenet_ext.avg_pool2d_forward.default


def _as_int(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{fn}(): argument '{name}' must be an int or a tuple of ints, "
                f"but found element of type {type(value).__name__}"
            ) from None
    if isinstance(value, int) and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError(f"Overflow when unpacking long long: {fn}() argument '{name}'={value} does not fit in int64")
    return value


def _refuse_bool(fn, name, value):
    """torch's argument parser takes no bool for an int, nor a sequence that starts with one (it tells an
    int list by its first element, and converts the rest as indices, bools included)."""
    first = value[0] if isinstance(value, (list, tuple)) and value else value
    if isinstance(first, bool):
        raise TypeError(f"{fn}(): argument '{name}' must be an int or a tuple of ints, but found element of type bool")


def _conv_pair(name, value):
    """torch's rule for conv arguments: one int, or a sequence of one or two (one is repeated)."""
    _refuse_bool("conv2d", name, value)
    if isinstance(value, (list, tuple)):
        values = [_as_int("conv2d", name, v) for v in value]
        if len(values) == 1:
            return values * 2
        if len(values) != 2:
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of 2 values to match the "
                f"convolution dimensions, but got {name}={values}"
            )
        return values
    v = _as_int("conv2d", name, value)
    return [v, v]


def check_not_huge(fn, **named):
    """Sizes past MAX_WINDOW_ARG are rejected before any arithmetic can overflow."""
    for name, values in named.items():
        for v in values:
            if isinstance(v, int) and v > MAX_WINDOW_ARG:
                raise RuntimeError(f"{fn}: {name}={list(values)} is too large (at most 2^40 is supported)")


def _conv_padding(padding, kernel, stride, dilation):
    """Returns (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)  # an even kernel puts the extra row/column after, as torch does
                pads += [total // 2, total - total // 2]
            return pads
        raise RuntimeError(f"Invalid padding string: '{padding}'")
    ph, pw = _conv_pair("padding", padding)
    return [ph, ph, pw, pw]


def _check_tensor(fn, name, value, optional=False, position=None):
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        where = f" (position {position})" if position is not None else ""
        raise TypeError(f"{fn}(): argument '{name}'{where} must be Tensor, not {type(value).__name__}")


def _check_conv_args(input, weight, bias, stride, padding, dilation, groups):
    for name, t in (("input", input), ("weight", weight)):
        if t.layout != torch.strided:  # torch raises a RuntimeError too, but its words name no layout
            raise RuntimeError(f"conv2d: expected a strided (dense) {name}, but got {name} with layout {t.layout}")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 4:
        raise RuntimeError(
            f"Expected 4D weight (out_channels, in_channels/groups, kH, kW) for conv2d, but got weight of "
            f"size: {list(weight.shape)}"
        )
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, but got {dilation}")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    check_not_huge("conv2d", padding=padding, dilation=dilation)  # any stride is safe: o*s <= padded size
    if input.device != weight.device or (bias is not None and bias.device != input.device):
        other = weight if input.device != weight.device else bias
        raise RuntimeError(f"Input type ({input.type()}) and weight type ({other.type()}) should be the same")
    if input.dtype != weight.dtype:
        raise RuntimeError(f"expected scalar type {_dtype_name(input)} but found {_dtype_name(weight)}")
    if bias is not None and bias.dtype != input.dtype:
        raise RuntimeError(
            f"Input type ({_short_dtype(input)}) and bias type ({_short_dtype(bias)}) should be the same"
        )

    out_channels = weight.shape[0]
    if out_channels < groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got weight of "
            f"size {list(weight.shape)} instead"
        )
    if out_channels % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, but got weight "
            f"of size [{list(weight.shape)}] instead"
        )
    channels = input.shape[-3]
    if channels != weight.shape[1] * groups:
        batched = list(input.shape) if input.dim() == 4 else [1, *input.shape]
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{batched} to have "
            f"{weight.shape[1] * groups} channels, but got {channels} channels instead"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with {out_channels} "
            f"elements, but got bias of size {list(bias.shape)} instead"
        )
    kernel = weight.shape[2:]
    if any(k <= 0 for k in kernel):
        raise RuntimeError(
            f"kernel size should be greater than zero, but got kernel_height: {kernel[0]} kernel_width: {kernel[1]}"
        )
    padded = [input.shape[-2] + padding[0] + padding[1], input.shape[-1] + padding[2] + padding[3]]
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(n < k for n, k in zip(padded, effective)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: "
            f"({effective[0]} x {effective[1]}). Kernel size can't be greater than actual input size"
        )


def _dtype_name(t):
    return {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}.get(
        t.dtype, str(t.dtype).removeprefix("torch.")
    )


def _short_dtype(t):
    """The C++ type name torch's messages use: float, double, c10::Half, c10::BFloat16."""
    return {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half"}.get(
        t.dtype, "c10::" + _dtype_name(t)
    )


# ------------------------------------------------------------------------------- calls checked before
# A model calls each layer with the same kinds of arguments every step. The checks and the normalisation
# read only the tensors' shapes, dtypes and devices and the other arguments' values, so a call whose
# signature (those, with the arguments' exact types) passed them once reuses their result: the
# normalised window arguments. That is most of a small call's Python time. Not under torch.compile,
# which traces the checks, nor under autocast, whose casts the checks must see.
_CHECKED_LIMIT = 4096  # signatures kept per function; past it the cache starts again


class _CheckedCalls:
    def __init__(self):
        self._results = {}

    def result(self, key, check, *args):
        """``check(*args)``, which raises torch's exception or returns the normalised arguments; once it has
        passed for the signature ``key``, its result without running it again (``key`` None: every time)."""
        result = self._results.get(key) if key is not None else None
        if result is None:
            result = check(*args)
            if key is not None:
                if len(self._results) >= _CHECKED_LIMIT:
                    self._results.clear()
                self._results[key] = result
        return result


def _plain_window_arg(value):
    """``value`` as part of a signature when it is an int, a bool, a string or a tuple or list of ints (by
    exact type: 1.0 and True must not pass for 1), else None."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if kind is bool:  # True == 1 and hashes alike: keep the type in the key
        return kind, value
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return kind, *value
    return None


def _tensor_signature(t):
    return t.shape, t.dtype, t.device, t.layout


def _signature(tensors, window_args):
    """The key of a call whose tensors are all torch.Tensor and whose other arguments are plain
    (_plain_window_arg), or None. ``tensors`` may hold None (an absent bias)."""
    if torch.compiler.is_compiling() or _ops.autocast_on():
        return None
    key = []
    for t in tensors:
        if t is None:
            key.append(None)
        elif isinstance(t, torch.Tensor):
            key.append(_tensor_signature(t))
        else:
            return None
    for value in window_args:
        plain = _plain_window_arg(value)
        if plain is None and value is not None:
            return None
        key.append(plain)
    return tuple(key)


_CONV_CHECKED = {"conv2d": _CheckedCalls(), "conv2d_sigmoid_avgpool2d": _CheckedCalls()}


def _conv_args(fn, input, weight, bias, stride, padding, dilation, groups):
    """torch's normalisation and checks of conv2d's arguments: (input, weight, bias, stride, (top, bottom,
    left, right), dilation, groups), or torch's exception. Under torch.autocast the tensors are cast to
    the autocast dtype first (as the operator's autocast kernel would), so the checks see what torch's see."""
    key = _signature((input, weight, bias), (stride, padding, dilation, groups))
    if key is None:  # checked every time: autocast's casts included
        return _checked_conv_args(fn, input, weight, bias, stride, padding, dilation, groups)
    window = _CONV_CHECKED[fn].result(
        key, _checked_conv_window, fn, input, weight, bias, stride, padding, dilation, groups
    )
    return input, weight, bias, *window


def _checked_conv_window(*args):
    return _checked_conv_args(*args)[3:]


def _checked_conv_args(fn, input, weight, bias, stride, padding, dilation, groups):
    _check_tensor(fn, "input", input)
    _check_tensor(fn, "weight", weight)
    _check_tensor(fn, "bias", bias, optional=True)
    input, weight, bias = _ops.autocast_args(input.device.type, [input, weight, bias])
    stride = _conv_pair("stride", stride)
    dilation = _conv_pair("dilation", dilation)
    _refuse_bool(fn, "groups", groups)
    groups = _as_int(fn, "groups", groups)
    kernel = list(weight.shape[2:]) if weight.dim() == 4 else [1, 1]
    pads = _conv_padding(padding, kernel, stride, dilation)
    _check_conv_args(input, weight, bias, stride, pads, dilation, groups)
    return input, weight, bias, stride, pads, dilation, groups


def _saved_input(input, weight, bias, pads):
    """The input to give an operator whose backward saves it. torch pads an input whose padding differs
    between sides (padding='same' with an even kernel) into a new tensor, and its backward saves that
    copy, so changing the caller's tensor in place afterwards leaves the gradient alone. Our kernels read
    the padding themselves; a copy, when a backward may save the input, keeps torch's behaviour. (Not
    under torch.compile: its partitioner recomputes the copy from the input in the backward.)"""
    if (pads[0] == pads[1] and pads[2] == pads[3]) or not torch.is_grad_enabled():
        return input
    # (requires_grad, not torch._C's test, which torch.compile cannot trace; under torch.func.grad the
    # tensors require grad too)
    return input.clone() if any(t is not None and t.requires_grad for t in (input, weight, bias)) else input


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as :func:`torch.nn.functional.conv2d`, computed by lenet_ext's kernels."""
    input, weight, bias, stride, pads, dilation, groups = _conv_args(
        "conv2d", input, weight, bias, stride, padding, dilation, groups
    )
    input = _saved_input(input, weight, bias, pads)

    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    out = _ops.call(_CONV2D, input, weight, bias, stride, pads, dilation, groups)
    return out.squeeze(0) if unbatched else out


def conv2d_sigmoid_avgpool2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, pool_size=2):
    """``avg_pool2d(sigmoid(conv2d(input, weight, bias, ...)), pool_size)``, LeNet's block, as one operator.

    The pool has kernel = stride = ``pool_size``, no padding and floor mode. Forward and backward fuse the
    sigmoid and the pool into one pass over the convolution's output (see csrc/cpu/fused.cpp). No double
    backward: use the separate layers for that.
    """
    fn = "conv2d_sigmoid_avgpool2d"
    input, weight, bias, stride, pads, dilation, groups = _conv_args(
        fn, input, weight, bias, stride, padding, dilation, groups
    )
    pool = _conv_pair("pool_size", pool_size)
    if any(k <= 0 for k in pool):
        raise RuntimeError(f"pool_size should be greater than zero, but got {pool}")
    check_not_huge("conv2d_sigmoid_avgpool2d", pool_size=pool)
    input = _saved_input(input, weight, bias, pads)

    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    out, _ = _ops.call(_FUSED, input, weight, bias, stride, pads, dilation, groups, pool)
    return out.squeeze(0) if unbatched else out


# ---------------------------------------------------------------------------------------------- pooling
# torch parses pooling sizes as C++ `int`: anything outside int32 is rejected with this message.
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@functools.cache
def _torch_first_line(fn, *args):
    """The first line of torch's error for ``torch.nn.functional.<fn>(small input, *args)``, or None.

    For the few errors whose wording differs between torch releases: asking the running torch keeps
    ours the same as its own on every supported release.
    """
    try:
        getattr(torch.nn.functional, fn)(torch.zeros(1, 1, 4, 4), *args)
    except RuntimeError as e:
        return str(e).split("\n")[0]
    return None


def _in_torchs_words(fn, probe_args, ours):
    """``ours`` (torch's own check, with this call's values in it), unless the running torch reports such a
    call with another error first; then torch's words. (torch 2.11's avg_pool2d says "integer out of
    range" for a non-positive kernel or a negative stride, where later releases name the argument.)"""
    theirs = _torch_first_line(fn, *probe_args)
    return ours if theirs is None or theirs.startswith(ours.split(", but got")[0]) else theirs


def _pool_ints(fn, name, position, value, allow_empty, what):
    """torch's int[] parsing for one pooling argument: an int, or a sequence of one or two ints.

    Returns [h, w] (an empty sequence gives [] when allowed). ``what`` finishes torch's length message.
    """
    if isinstance(value, (list, tuple, torch.Size)):
        values = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not hasattr(v, "__index__"):
                raise TypeError(
                    f"{fn}(): argument '{name}' failed to unpack the object at pos {i + 1} with error "
                    f'"type must be tuple of ints,but got {type(v).__name__}"'
                )
            values.append(operator.index(v))
    elif isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {position}) must be tuple of ints, not {type(value).__name__}"
        )
    else:
        values = [_as_int(fn, name, value)]
    if not (len(values) in (1, 2) or (allow_empty and not values)):
        raise RuntimeError(f"{fn}: {name} must {what}")
    if any(not _INT32_MIN <= v <= _INT32_MAX for v in values):
        message = _torch_first_line("max_pool2d", _INT32_MAX + 1)
        raise RuntimeError(message or f"{fn}: {name} must fit in int32, got {values}")
    return values * 2 if len(values) == 1 else values


def _pool_bool(fn, name, position, value):
    if not isinstance(value, bool):
        where = f" (position {position})" if position is not None else ""
        raise TypeError(f"{fn}(): argument '{name}'{where} must be bool, not {type(value).__name__}")
    return value


def _pool_args(fn, kernel_size, stride, padding, dilation):
    """Normalises the window arguments as torch does: stride None or empty means the kernel size."""
    kernel = _pool_ints(fn, "kernel_size", 2, kernel_size, False, "either be a single int, or a tuple of two ints")
    stride = [] if stride is None else stride
    stride = _pool_ints(fn, "stride", 3, stride, True, "either be omitted, a single int, or a tuple of two ints")
    padding = _pool_ints(fn, "padding", 4, padding, False, "either be a single int, or a tuple of two ints")
    dilation = _pool_ints(fn, "dilation", 5, dilation, False, "be either a single int, or a tuple of two ints")
    return kernel, stride or list(kernel), padding, dilation


def _c_div(a, b):
    """C++ integer division (truncates toward zero), which torch's padding rule uses."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _check_pool_window(fn, input, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling_output_shape (height, then width) followed by pool2d_shape_check."""
    in_size = input.shape[-2:]
    out = []
    for n, k, s, p, d in zip(in_size, kernel, stride, padding, dilation):
        if s == 0:
            raise RuntimeError("stride should not be zero")
        if p < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {p}")
        if p > _c_div((k - 1) * d + 1, 2):
            raise RuntimeError(
                f"pad should be at most half of effective kernel size, but got pad={p}, kernel_size={k} and "
                f"dilation={d}"
            )
        out.append(window_output_size(n, p, p, k, s, d, ceil_mode) if k > 0 and s > 0 and d > 0 else 0)
    if any(k <= 0 for k in kernel):
        ours = f"kernel size should be greater than zero, but got kH: {kernel[0]} kW: {kernel[1]}"
        raise RuntimeError(_in_torchs_words(fn, (0, 1), ours))
    if any(s <= 0 for s in stride):
        ours = f"stride should be greater than zero, but got dH: {stride[0]} dW: {stride[1]}"
        raise RuntimeError(_in_torchs_words(fn, (2, -1), ours))
    if any(d <= 0 for d in dilation):
        raise RuntimeError(
            f"dilation should be greater than zero, but got dilationH: {dilation[0]} dilationW: {dilation[1]}"
        )
    if input.dim() not in (3, 4) or any(size == 0 for size in input.shape[-3:]):
        raise RuntimeError(
            "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:"
            f"{list(input.shape)}"
        )
    # torch checks padding twice: against the dilated window above, and here against the kernel itself
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise RuntimeError(
            "pad should be smaller than or equal to half of kernel size, but got "
            f"padW = {padding[1]}, padH = {padding[0]}, kW = {kernel[1]}, kH = {kernel[0]}"
        )
    if out[0] < 1 or out[1] < 1:
        c, h, w = input.shape[-3:]
        raise RuntimeError(
            f"Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{out[0]}x{out[1]}). "
            "Output size is too small"
        )


_POOL_CHECKED = {"max_pool2d": _CheckedCalls(), "avg_pool2d": _CheckedCalls()}


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Same as :func:`torch.nn.functional.max_pool2d`, computed by lenet_ext's kernels.

    Indices are computed only when they are returned or a gradient will need them.
    """
    key = _signature((input,), (kernel_size, stride, padding, dilation, ceil_mode))
    conf = _POOL_CHECKED["max_pool2d"].result(
        key, _checked_max_pool_args, input, kernel_size, stride, padding, dilation, ceil_mode
    )

    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    if return_indices or (torch.is_grad_enabled() and input.requires_grad):
        out, indices = _ops.call(_MAX_POOL2D, x, *conf)
    else:
        out, indices = _ops.call(_MAX_POOL2D_VALUES, x, *conf), None
    if unbatched:
        out = out.squeeze(0)
        indices = indices.squeeze(0) if indices is not None else None
    return (out, indices) if return_indices else out


def _checked_max_pool_args(input, kernel_size, stride, padding, dilation, ceil_mode):
    fn = "max_pool2d"
    _check_tensor(fn, "input", input, position=1)
    kernel, stride, padding, dilation = _pool_args(fn, kernel_size, stride, padding, dilation)
    ceil_mode = _pool_bool(fn, "ceil_mode", 6, ceil_mode)
    if input.dim() not in (3, 4):
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    _check_pool_window(fn, input, kernel, stride, padding, dilation, ceil_mode)
    return kernel, stride, padding, dilation, ceil_mode


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """Same as :func:`torch.nn.functional.avg_pool2d`, computed by lenet_ext's kernels."""
    key = _signature((input,), (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override))
    conf = _POOL_CHECKED["avg_pool2d"].result(
        key, _checked_avg_pool_args, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )

    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    out = _ops.call(_AVG_POOL2D, x, *conf)
    return out.squeeze(0) if unbatched else out


def _checked_avg_pool_args(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    fn = "avg_pool2d"
    _check_tensor(fn, "input", input, position=1)
    kernel, stride, padding, _ = _pool_args(fn, kernel_size, stride, padding, 1)
    ceil_mode = _pool_bool(fn, "ceil_mode", None, ceil_mode)
    count_include_pad = _pool_bool(fn, "count_include_pad", None, count_include_pad)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not hasattr(divisor_override, "__index__"):
            raise TypeError(f"{fn}(): argument 'divisor_override' must be int, not {type(divisor_override).__name__}")
        divisor_override = _as_int(fn, "divisor_override", divisor_override)
        if divisor_override == 0:
            raise RuntimeError("divisor must be not zero")
    input.size(-3)  # torch reads the channel count first: fewer than 3 dims raise its IndexError
    _check_pool_window(fn, input, kernel, stride, padding, [1, 1], ceil_mode)
    return kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
