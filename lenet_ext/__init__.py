"""lenet_ext: hand-written C++/CUDA conv2d and pooling kernels as torch operators and torch.nn layers.

    import lenet_ext
    y = lenet_ext.functional.conv2d(x, w, b, stride=1, padding="same")
    layer = lenet_ext.nn.Conv2d(3, 16, 3, padding=1)

The operators themselves are ``torch.ops.lenet_ext.*``.
"""

import torch

_REBUILD_COMMAND = "pip install --no-build-isolation -e ."


def _check_built_for_this_torch():
    """Refuses, before _C is loaded, an extension compiled against another torch.

    libtorch has no stable C++ ABI between releases: a _C compiled against one torch fails to load under
    another with an unresolved C++ symbol that names neither version, or, where the symbols happen to
    match, loads against structures laid out differently. setup.py records the torch it compiled
    against; any other torch gets an ImportError that names both and the command that rebuilds.
    """
    try:
        from ._build_info import TORCH_VERSION as built_against
    except ImportError:
        raise ImportError(
            "lenet_ext's C++ extension has no build record (lenet_ext/_build_info.py): it was never built, or was "
            f"built by an older setup.py. Build it against the installed torch {torch.__version__} with: "
            f"{_REBUILD_COMMAND}"
        ) from None
    if built_against != torch.__version__:
        raise ImportError(
            f"lenet_ext was built against torch {built_against}, but torch {torch.__version__} is installed. "
            f"Its C++ extension must be rebuilt for this torch: {_REBUILD_COMMAND}"
        )


_check_built_for_this_torch()

# first: under a torch that lacks a private name we use, the import stops here, naming it
from . import _torch_internals  # noqa: E402, F401, I001
from . import backends, functional, nn, ops  # noqa: E402  (after the check: these load _C)
from .nn import convert  # noqa: E402

__all__ = ["backends", "convert", "functional", "nn", "ops"]
__version__ = "0.1.0"
