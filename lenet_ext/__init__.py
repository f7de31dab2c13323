"""lenet_ext: hand-written C++/CUDA conv2d and pooling kernels as torch operators and torch.nn layers.

    import lenet_ext
    y = lenet_ext.functional.conv2d(x, w, b, stride=1, padding="same")
    layer = lenet_ext.nn.Conv2d(3, 16, 3, padding=1)

The operators themselves are ``torch.ops.lenet_ext.*``.
"""

from . import backends, functional, nn, ops
from .nn import convert

__all__ = ["backends", "convert", "functional", "nn", "ops"]
__version__ = "0.1.0"
