"""LeNet built from lenet_ext's layers, and its twin built from torch's.

``LeNet`` is the seed's network (LeCun et al. 1998, as taught in d2l.ai): sigmoid activations and average
pooling. ``ModernLeNet`` is the same shape with ReLU and max pooling. Both are ``nn.Sequential`` with the
seed's layer indices, so ``state_dict`` keys (``0.weight``, ``3.bias``, ...) are the same for our network,
its built-in twin (``builtin=True``), and a d2l-style ``nn.Sequential`` — any of them loads the others'
weights.

Shapes for a 1×28×28 digit::

    0 Conv2d(1, 6, 5, padding=2)  6×28×28     6 Flatten                400
    1 activation                                7 Linear(400, 120)       120
    2 pool(2, 2)                  6×14×14     8 activation
    3 Conv2d(6, 16, 5)            16×10×10    9 Linear(120, 84)        84
    4 activation                                10 activation
    5 pool(2, 2)                  16×5×5      11 Linear(84, 10)        10
"""

import torch

from . import nn as ours

__all__ = ["MODELS", "LeNet", "ModernLeNet", "builtin_twin"]


def _lenet_layers(layers, activation, pool):
    """The seed's layer list; ``layers`` is the module providing Conv2d and the pooling classes."""
    nn = torch.nn
    return [
        layers.Conv2d(1, 6, kernel_size=5, padding=2),
        activation(),
        pool(kernel_size=2, stride=2),
        layers.Conv2d(6, 16, kernel_size=5),
        activation(),
        pool(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        activation(),
        nn.Linear(120, 84),
        activation(),
        nn.Linear(84, 10),
    ]


class LeNet(torch.nn.Sequential):
    """The seed's LeNet-5: sigmoid activations, average pooling.

    ``builtin=True`` builds the same network from ``torch.nn`` layers: the twin we check ourselves against.
    """

    def __init__(self, builtin=False):
        layers = torch.nn if builtin else ours
        super().__init__(*_lenet_layers(layers, torch.nn.Sigmoid, layers.AvgPool2d))
        self.builtin = builtin


class ModernLeNet(torch.nn.Sequential):
    """LeNet with ReLU activations and max pooling, which trains faster than the seed's sigmoids."""

    def __init__(self, builtin=False):
        layers = torch.nn if builtin else ours
        super().__init__(*_lenet_layers(layers, torch.nn.ReLU, layers.MaxPool2d))
        self.builtin = builtin


MODELS = {"lenet": LeNet, "modern": ModernLeNet}


def builtin_twin(model):
    """A copy of ``model`` built from ``torch.nn`` layers, with the same weights, device and dtype."""
    param = next(model.parameters())
    with torch.device("meta"):  # no random init: it would be overwritten, and would move the global RNG
        twin = type(model)(builtin=True)
    twin = twin.to_empty(device=param.device).to(param.dtype)
    twin.load_state_dict(model.state_dict())
    twin.train(model.training)
    return twin
