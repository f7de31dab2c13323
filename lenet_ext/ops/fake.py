"""Fake (meta) kernels: what every operator returns under ``torch.compile`` and ``torch.export``, which
run these in place of the device kernels. They must give the same shapes, dtypes and strides as the CPU
and CUDA kernels, and refuse what those refuse with the same errors: the dtypes each operator accepts
are read from the tables the kernels check (``csrc/checks.h``), and the result layouts mirror theirs.
"""

import torch

from .._shape import conv2d_output_size, pool2d_output_size
from .._torch_internals import suggest_memory_format
from ._library import ops as _ops

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
