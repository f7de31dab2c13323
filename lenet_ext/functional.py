"""conv2d, max_pool2d and avg_pool2d with ``torch.nn.functional``'s exact signatures.

Argument normalisation and every user-facing check live here, once, with torch's exception types and
wording, so the operators below (``torch.ops.lenet_ext.*``) always receive well-formed arguments.
"""

import operator

import torch

from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._shape import MAX_WINDOW_ARG

__all__ = ["conv2d"]

_INT64_MAX = (1 << 63) - 1


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


def _conv_pair(name, value):
    """torch's rule for conv arguments: one int, or a sequence of exactly two."""
    if isinstance(value, (list, tuple)):
        values = [_as_int("conv2d", name, v) for v in value]
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


def _check_tensor(fn, name, value, optional=False):
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}(): argument '{name}' must be Tensor, not {type(value).__name__}")


def _check_conv_args(input, weight, bias, stride, padding, dilation, groups):
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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as :func:`torch.nn.functional.conv2d`, computed by lenet_ext's kernels."""
    _check_tensor("conv2d", "input", input)
    _check_tensor("conv2d", "weight", weight)
    _check_tensor("conv2d", "bias", bias, optional=True)
    stride = _conv_pair("stride", stride)
    dilation = _conv_pair("dilation", dilation)
    groups = _as_int("conv2d", "groups", groups)
    if isinstance(padding, str):
        pads = _conv_padding(padding, list(weight.shape[2:]) if weight.dim() == 4 else [1, 1], stride, dilation)
    else:
        pads = _conv_padding(padding, None, stride, dilation)
    _check_conv_args(input, weight, bias, stride, pads, dilation, groups)

    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    out = torch.ops.lenet_ext.conv2d_forward(input, weight, bias, stride, pads, dilation, groups)
    return out.squeeze(0) if unbatched else out
