"""Three of torchvision's ImageNet classifiers, rebuilt from plain ``torch.nn`` layers for the benchmark.

    net = lenet_ext.zoo.resnet18()            # torch.nn layers, torchvision's shapes
    ours = lenet_ext.convert(net)             # the same weights, computed by lenet_ext

``resnet18``, ``mobilenet_v2`` and ``squeezenet1_1`` have torchvision's layer shapes, layer for layer:
channels, kernels, strides, paddings, groups, which convolutions have a bias, batch norm, activations,
pooling (ceil mode included) and the classifier; so their parameter counts are torchvision's published
ones. Module names differ (everything is an ``nn.Sequential``), so torchvision's checkpoints do not load
as they are. They exist so that ``lenet-ext bench`` can time real networks without depending on
torchvision, whose wheel pulls in a CUDA build of torch.
"""

import torch
from torch import nn

__all__ = ["MODELS", "mobilenet_v2", "resnet18", "squeezenet1_1"]


class Residual(nn.Module):
    """``activation(body(x) + shortcut(x))``: the skip connection of ResNet and MobileNetV2."""

    def __init__(self, body, shortcut=None, activation=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut or nn.Identity()
        self.activation = activation or nn.Identity()

    def forward(self, x):
        return self.activation(self.body(x) + self.shortcut(x))


class Concat(nn.Sequential):
    """Every branch applied to the same input, the results stacked along channels (SqueezeNet's Fire)."""

    def forward(self, x):
        return torch.cat([branch(x) for branch in self], dim=1)


def _conv_bn(cin, cout, kernel, stride=1, groups=1, activation=None):
    """Convolution without bias (batch norm brings its own), batch norm, then the activation if any."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([activation] if activation else []))


def _init_weights(model):
    """As torchvision does for ResNet and MobileNetV2: He-normal (fan-out) convolutions, unit batch norm.
    What matters here is that activations keep their scale through the depth, so that the benchmark's
    correctness check compares numbers of a realistic size rather than a vanishing signal."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _classifier(features, num_classes, dropout=0.0):
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return head + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(features, num_classes)]


def resnet18(num_classes=1000):
    """ResNet-18 (He et al. 2015) as torchvision builds it: 11,689,512 parameters for 1000 classes."""

    def basic_block(cin, cout, stride):
        body = nn.Sequential(_conv_bn(cin, cout, 3, stride, activation=nn.ReLU(inplace=True)), _conv_bn(cout, cout, 3))
        shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        return Residual(body, shortcut, nn.ReLU(inplace=True))

    layers = [_conv_bn(3, 64, 7, stride=2, activation=nn.ReLU(inplace=True)), nn.MaxPool2d(3, 2, padding=1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [basic_block(cin, cout, stride), basic_block(cout, cout, 1)]
        cin = cout
    return _init_weights(nn.Sequential(*layers, *_classifier(512, num_classes)))


# MobileNetV2's inverted-residual stages: expansion t, output channels c, repeats n, first stride s
_MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def mobilenet_v2(num_classes=1000):
    """MobileNetV2 (Sandler et al. 2018), width 1.0, as torchvision builds it: 3,504,872 parameters."""

    def inverted_residual(cin, cout, stride, expansion):
        hidden = cin * expansion
        expand = [_conv_bn(cin, hidden, 1, activation=nn.ReLU6(inplace=True))] if expansion != 1 else []
        depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6(inplace=True))
        body = nn.Sequential(*expand, depthwise, _conv_bn(hidden, cout, 1))  # linear bottleneck: no activation
        return Residual(body) if stride == 1 and cin == cout else body

    layers = [_conv_bn(3, 32, 3, stride=2, activation=nn.ReLU6(inplace=True))]
    cin = 32
    for expansion, cout, repeats, stride in _MOBILENET_V2_STAGES:
        for i in range(repeats):
            layers.append(inverted_residual(cin, cout, stride if i == 0 else 1, expansion))
            cin = cout
    layers.append(_conv_bn(cin, 1280, 1, activation=nn.ReLU6(inplace=True)))
    return _init_weights(nn.Sequential(*layers, *_classifier(1280, num_classes, dropout=0.2)))


def squeezenet1_1(num_classes=1000):
    """SqueezeNet 1.1 (the official repository's revision of Iandola et al. 2016) as torchvision builds
    it: 1,235,496 parameters. Its convolutions have biases and no batch norm; its classifier is a 1x1
    convolution followed by global average pooling."""

    def conv_relu(cin, cout, kernel, stride=1, padding=0):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(inplace=True))

    def fire(cin, squeeze, expand):
        """Squeeze to few channels with 1x1, expand again with 1x1 and 3x3 side by side."""
        return nn.Sequential(
            conv_relu(cin, squeeze, 1), Concat(conv_relu(squeeze, expand, 1), conv_relu(squeeze, expand, 3, padding=1))
        )

    def pool():
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    model = nn.Sequential(
        conv_relu(3, 64, 3, stride=2),
        pool(), fire(64, 16, 64), fire(128, 16, 64),
        pool(), fire(128, 32, 128), fire(256, 32, 128),
        pool(), fire(256, 48, 192), fire(384, 48, 192), fire(384, 64, 256), fire(512, 64, 256),
        nn.Dropout(0.5), conv_relu(512, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    return _init_weights(model)


MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "squeezenet1_1": squeezenet1_1}
