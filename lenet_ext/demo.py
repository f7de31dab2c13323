"""A short demo: our conv2d beside torch's on random data, printing the largest differences.

python -m lenet_ext.demo
"""

import torch
import torch.nn.functional as F

from . import functional as LF


def main():
    torch.manual_seed(0)
    cases = [
        ("3x3, padding 1", (8, 3, 28, 28), (16, 3, 3, 3), dict(padding=1)),
        ("5x5, stride 2", (8, 6, 28, 28), (16, 6, 5, 5), dict(stride=2)),
        ("even kernel, 'same'", (4, 4, 17, 17), (8, 4, 4, 4), dict(padding="same")),
        ("depthwise, dilation 2", (4, 8, 20, 20), (8, 1, 3, 3), dict(groups=8, dilation=2, padding=2)),
    ]
    print(f"{'case':<24} {'output':<20} {'max |ours - torch|':>20} {'max grad diff':>15}")
    for name, x_shape, w_shape, kw in cases:
        x = torch.randn(x_shape, requires_grad=True)
        w = torch.randn(w_shape, requires_grad=True)
        ours, theirs = LF.conv2d(x, w, **kw), F.conv2d(x, w, **kw)
        g = torch.randn_like(ours)
        grads_ours = torch.autograd.grad(ours, (x, w), g)
        grads_theirs = torch.autograd.grad(theirs, (x, w), g)
        grad_diff = max((a - b).abs().max().item() for a, b in zip(grads_ours, grads_theirs))
        diff = (ours - theirs).abs().max().item()
        print(f"{name:<24} {str(tuple(ours.shape)):<20} {diff:>20.2e} {grad_diff:>15.2e}")


if __name__ == "__main__":
    main()
