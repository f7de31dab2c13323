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


# ---------------------------------------------------------------------------------------------------
# PLACEHOLDER (bench branch only): the real cpu_isa comes with the per-level CPU kernels, on the lead's
# branch, and replaces everything below on merge. Until then this build has one level, "default", so
# this reports it and refuses the others rather than pretend to switch.
CPU_ISAS = ("default", "avx2", "avx512")


def cpu_isa(level=None):
    """The instruction-set level of the CPU kernels in use; ``cpu_isa(level)`` would force one."""
    if level is None:
        return "default"
    if level not in CPU_ISAS:
        raise ValueError(f"cpu_isa must be one of {CPU_ISAS}, got {level!r}")
    if level != "default":
        raise RuntimeError(f"cpu_isa {level!r}: this build of lenet_ext has only the 'default' CPU kernels")
    return contextlib.nullcontext()
