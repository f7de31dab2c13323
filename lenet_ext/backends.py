"""Algorithm selection for the CPU conv2d kernels.

    lenet_ext.backends.conv_algorithm("direct")   # force one algorithm
    with lenet_ext.backends.conv_algorithm("im2col"):
        ...                                       # or only inside a block

``"auto"`` (the default) uses the heuristics documented in ``csrc/cpu/conv2d.cpp``
(``choose_forward_kernel``, ``choose_weight_grad``): direct register-tiled kernels for stride-1
convolutions up to 1152 taps per output (pointwise ones with more than 8 output channels per group
excepted), and for strided ones with 4 to 32 output channels per group; im2col + matrix product for
the rest. ``"direct"`` forces the direct kernels, ``"im2col"`` the matrix product. The setting is
process-wide.
"""

import contextlib

import torch

from . import _C  # noqa: F401

ALGORITHMS = ("auto", "direct", "im2col")


class conv_algorithm(contextlib.ContextDecorator):
    """Sets the CPU conv2d forward algorithm; also a context manager that restores the previous one."""

    def __init__(self, name):
        if name not in ALGORITHMS:
            raise ValueError(f"conv_algorithm must be one of {ALGORITHMS}, got {name!r}")
        self.previous = ALGORITHMS[torch.ops.lenet_ext._set_conv_algorithm(ALGORITHMS.index(name))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        torch.ops.lenet_ext._set_conv_algorithm(ALGORITHMS.index(self.previous))
        return False


def current_conv_algorithm():
    return ALGORITHMS[torch.ops.lenet_ext._set_conv_algorithm(-1)]


# ------------------------------------------------------------------------------- CUDA pooling layout
CUDA_POOL_LAYOUTS = ("planar", "native")


class cuda_pool_layout(contextlib.ContextDecorator):
    """Chooses the CUDA pooling kernels for channels_last inputs; also a context manager.

    ``"planar"`` (the default) copies a channels_last input to NCHW, runs the planar kernels and copies
    the result back to channels_last. ``"native"`` runs kernels that read and write channels_last as it is,
    a vector of channels per access: no copies, but not yet verified on a GPU (see the table at the top
    of ``csrc/cuda/pool2d.cu``), so opt-in. Either way the result is channels_last. Process-wide; no effect
    on the CPU kernels.
    """

    def __init__(self, name):
        if name not in CUDA_POOL_LAYOUTS:
            raise ValueError(f"cuda_pool_layout must be one of {CUDA_POOL_LAYOUTS}, got {name!r}")
        self.previous = CUDA_POOL_LAYOUTS[torch.ops.lenet_ext._set_cuda_pool_layout(CUDA_POOL_LAYOUTS.index(name))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        torch.ops.lenet_ext._set_cuda_pool_layout(CUDA_POOL_LAYOUTS.index(self.previous))
        return False


def current_cuda_pool_layout():
    return CUDA_POOL_LAYOUTS[torch.ops.lenet_ext._set_cuda_pool_layout(-1)]


@contextlib.contextmanager
def tf32_disabled():
    """Full float32 in torch's own CUDA convolutions and matrix products inside the block.

    On Ampere and later GPUs cuDNN may use TF32 (10-bit mantissa) for float32 convolutions by default.
    Our kernels compute in full float32, so a torch reference, a twin in training or a benchmark rival
    must too, or the comparison measures TF32's rounding instead of our kernels. Restores the previous
    settings on exit.
    """
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
