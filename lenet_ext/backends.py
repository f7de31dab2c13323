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
