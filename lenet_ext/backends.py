"""Algorithm selection for the CPU conv2d kernels.

    lenet_ext.backends.conv_algorithm("direct")   # force one algorithm
    with lenet_ext.backends.conv_algorithm("im2col"):
        ...                                       # or only inside a block

``"auto"`` (the default) uses the heuristic documented at the top of ``csrc/cpu/conv2d.cpp``:
the direct kernel for stride-1 convolutions with at most 32 output channels per group and at most
1024 taps per output (LeNet's layers, depthwise), im2col + matrix product for everything else.
Strided convolutions always use im2col. The setting is process-wide.
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
