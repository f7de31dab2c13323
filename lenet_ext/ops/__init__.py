"""Everything the dispatcher needs, beyond the C++ kernels, to run every ``torch.ops.lenet_ext`` operator.

The schemas and the real kernels are C++ (``csrc/ops.cpp``, ``csrc/cpu``, ``csrc/cuda``); this package
teaches the dispatcher the rest, one job per module, each registering its kernels when imported (so on
``import lenet_ext``):

    fake.py          fake kernels for torch.compile and torch.export: the real kernels' shapes, strides
                     and errors; the dtypes each operator accepts (ACCEPTED_DTYPES)
    vmap.py          torch.func.vmap rules
    autocast.py      torch.autocast kernels; autocast_on() and autocast_args() for the functionals
    forward_mode.py  each operator's jvp (forward-mode AD, torch.func.jvp, forward-over-reverse)
    autograd.py      each operator's Autograd kernel: an autograd Function with backward and forward_mode's
                     jvp; call(), the functionals' shortcut through it
    _library.py      loads _C; the operator namespace and the Library our kernels register into

Arrows point down: autograd uses forward_mode and autocast; every module uses _library, and takes any
private torch name from ``lenet_ext._torch_internals``.
"""

from . import autocast, autograd, fake, forward_mode, vmap  # noqa: F401  (each registers its kernels)
from .autocast import autocast_args, autocast_on
from .autograd import call
from .fake import ACCEPTED_DTYPES, POOL_DTYPES

__all__ = ["ACCEPTED_DTYPES", "POOL_DTYPES", "autocast_args", "autocast_on", "call"]
