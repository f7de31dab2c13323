"""The operator namespace and the Library that every Python kernel of ours registers into."""

import torch

from .. import _C  # noqa: F401  (loads the library, which registers the schemas and C++ kernels)

ops = torch.ops.lenet_ext
lib = torch.library.Library("lenet_ext", "IMPL")  # our Autograd, Autocast and vmap kernels live here
