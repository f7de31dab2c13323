"""What each benchmark operation runs: for a row's shape, an ``ours`` and a ``theirs`` callable doing the
same work (``BUILDERS``), and the operators and modules each one needs (``REQUIRES``)."""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as torch_F

import lenet_ext

from .. import functional as F
from .report import CALL_TIME, OPERATOR_TIME
from .suite import ROWS

_aten = torch.ops.aten
_ops = torch.ops.lenet_ext


# -------------------------------------------------------------------------------------------- builders
def check_close(ours, theirs):
    """float32 tolerances (one rounding for 16-bit results), with the absolute one scaled by the result's
    magnitude: long reductions (a weight gradient sums 200,000 products) add in a different order in each
    implementation. Integer results (max pooling's indices) must be equal."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    if len(ours) != len(theirs):
        raise AssertionError(f"ours returned {len(ours)} tensors, torch {len(theirs)}")
    worst = 0.0
    for a, b in zip(ours, theirs):
        if not b.is_floating_point():
            torch.testing.assert_close(a, b, rtol=0, atol=0, check_stride=False)
            continue
        scale = max(1.0, b.detach().abs().max().item()) if b.numel() else 1.0
        # 16-bit results: one rounding apart (each side rounds its float32 result once)
        tol = torch.finfo(b.dtype).eps if b.element_size() == 2 else 1e-4
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale, check_stride=False)
        if a.numel():
            worst = max(worst, (a.double() - b.double()).abs().max().item())
    return worst


@dataclass
class Case:
    """What a builder returns: two callables doing the same work, and how much work that is.

    ``ours()`` and ``theirs()`` return tensors (or tuples of them) that must agree; ``work`` is counted in
    ``unit`` ("flop", "byte" or "image") per call. ``check``, where given, replaces comparing their first
    results: it raises AssertionError on a mismatch and returns the largest difference, as check_close.

    ``time`` says what both callables are: user-facing calls (CALL_TIME) or raw operators
    (OPERATOR_TIME). Where they are calls, ``operator`` (if given) is ours as the raw
    ``torch.ops.lenet_ext`` call(s) that the user-facing one makes, with the arguments it would pass and on
    tensors that need no gradient: it is checked and timed too, as our operator time. ``reads`` are the
    tensors a call reads; with its results they are the row's data, which decides whether a GPU's L2 is
    flushed between timed calls (None: not known, as for a whole network, whose activations are hidden).
    """

    ours: Callable[[], Any]
    theirs: Callable[[], Any]
    work: float
    unit: str
    check: Callable[[], float] | None = None
    time: str = CALL_TIME
    operator: Callable[[], Any] | None = None
    reads: tuple[torch.Tensor | None, ...] | None = None


# Each operation names what it needs from lenet_ext, so a row is skipped (not faked) until it is there:
# ("op", name) is an operator with a kernel for the device, ("functional", name) / ("models", name) an
# attribute of that module.
REQUIRES = {
    "conv2d.forward": [("functional", "conv2d"), ("op", "conv2d_forward")],
    "conv2d.backward_input": [("op", "conv2d_backward")],
    "conv2d.backward_weight": [("op", "conv2d_backward")],
    "conv2d.forward+backward_weight_bias": [("op", "conv2d_forward"), ("op", "conv2d_backward")],
    "max_pool2d.forward": [("functional", "max_pool2d"), ("op", "max_pool2d_forward_values")],
    "max_pool2d.backward": [("op", "max_pool2d_forward"), ("op", "max_pool2d_backward")],
    "avg_pool2d.forward": [("functional", "avg_pool2d"), ("op", "avg_pool2d_forward")],
    "avg_pool2d.backward": [("op", "avg_pool2d_backward")],
    "avg_pool2d.forward+backward": [("op", "avg_pool2d_forward"), ("op", "avg_pool2d_backward")],
    "max_pool2d.forward+backward": [("op", "max_pool2d_forward"), ("op", "max_pool2d_backward")],
    "lenet_block.forward": [("functional", "conv2d_sigmoid_avgpool2d"), ("op", "conv2d_sigmoid_avgpool2d")],
    "lenet_block.forward+backward_weight_bias": [
        ("functional", "conv2d_sigmoid_avgpool2d"),
        ("op", "conv2d_sigmoid_avgpool2d"),
        ("op", "conv2d_sigmoid_avgpool2d_backward"),
    ],
    "model.train_step": [("models", "builtin_twin")],
    "model.inference": [("models", "builtin_twin")],
    "converted.inference": [("nn", "convert"), ("op", "conv2d_forward"), ("op", "max_pool2d_forward_values")],
    "converted.train_step": [
        ("nn", "convert"),
        ("op", "conv2d_forward"),
        ("op", "conv2d_backward"),
        ("op", "max_pool2d_forward"),
        ("op", "max_pool2d_backward"),
    ],
}


def _conv_case(shape, device, mask=None, with_forward=False):
    """Forward (mask None), or the masked backward, optionally preceded by the forward."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    w = torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device) / math.sqrt(
        shape.c // shape.groups * shape.k * shape.k
    )
    b = torch.randn(shape.o, device=device)
    s, p, d, g = [shape.stride] * 2, [shape.padding] * 2, [1, 1], shape.groups
    ours_pad = [shape.padding] * 4  # (top, bottom, left, right)
    if mask is None:
        return Case(
            ours=lambda: F.conv2d(x, w, b, s, p, d, g),
            theirs=lambda: torch_F.conv2d(x, w, b, s, p, d, g),
            work=shape.flops(),
            unit="flop",
            operator=lambda: _ops.conv2d_forward(x, w, b, s, ours_pad, d, g),
            reads=(x, w, b),
        )
    grad = torch.randn(shape.n, shape.o, *shape.out_size(), device=device)
    bias_sizes = [shape.o] if mask[2] else None

    def ours():
        if with_forward:
            _ops.conv2d_forward(x, w, b, s, ours_pad, d, g)
        return _present(_ops.conv2d_backward(grad, x, w, s, ours_pad, d, g, mask))

    def theirs():
        if with_forward:
            _aten.convolution(x, w, b, s, p, d, False, [0, 0], g)
        return _present(_aten.convolution_backward(grad, x, w, bias_sizes, s, p, d, False, [0, 0], g, mask))

    passes = sum(mask[:2]) + with_forward  # the bias gradient is a sum: no multiply-adds worth counting
    reads = (grad, x, w, b) if with_forward else (grad, x, w)
    return Case(ours, theirs, work=passes * shape.flops(), unit="flop", time=OPERATOR_TIME, reads=reads)


def _present(results):
    return tuple(r for r in results if r is not None)


def _pool_input(shape, device, distinct):
    """Max pooling gets all-different values, so ours and torch cannot pick different maxima of a tie.
    The input is in the shape's layout (NCHW or channels_last)."""
    n = shape.numel_in()
    if distinct and n <= 1 << 24:  # float32 holds every integer up to 2^24 exactly
        x = torch.randperm(n, device=device).to(torch.float32).div_(n).view(shape.n, shape.c, shape.h, shape.w)
    else:
        x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    x = x.to(getattr(torch, shape.dtype))  # bfloat16 rounds distinct values into ties: both sides pick the first
    return x.contiguous(memory_format=torch.channels_last) if getattr(shape, "channels_last", False) else x


def pool_bytes(kind, shape, item_size, forward, backward):
    """The bytes a pooling call must move: input read and output written by the forward, grad_output read
    and grad_input written by the backward; max pooling's int64 indices, read by the backward and
    written by a forward that keeps them for it."""
    moved = (forward + backward) * (shape.numel_in() + shape.numel_out()) * item_size
    if kind == "max" and backward:
        moved += (forward + 1) * shape.numel_out() * 8
    return moved


def pool_call_case(kind, shape, device, backward=False, channels_last=False, return_indices=False):
    """A pooling layer as a user calls it, ``lenet_ext.functional`` against ``torch.nn.functional``: the
    forward (with indices if ``return_indices``), or the forward and the input's gradient through autograd.
    ``operator`` is the same work by our raw operators: values only when neither a gradient nor indices
    are wanted, as the functional chooses."""
    x = _pool_input(shape, device, distinct=kind == "max")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    leaf = x.detach().requires_grad_(backward)
    k, s, p, dil = [shape.k] * 2, [shape.stride] * 2, [shape.padding] * 2, [1, 1]
    ours_pool, theirs_pool = (F.max_pool2d, torch_F.max_pool2d) if kind == "max" else (F.avg_pool2d, torch_F.avg_pool2d)
    indices = {"return_indices": True} if return_indices else {}
    grad = torch.randn_like(theirs_pool(x, k, s, p)) if backward else None  # in the output's layout

    def call(pool):
        def run():
            out = pool(leaf, k, s, p, **indices)
            return torch.autograd.grad(out, leaf, grad) if backward else out

        return run

    def operator():
        if kind == "avg":
            out = _ops.avg_pool2d_forward(x, k, s, p, False, True, None)
            return _ops.avg_pool2d_backward(grad, x, k, s, p, False, True, None) if backward else out
        if not (backward or return_indices):
            return _ops.max_pool2d_forward_values(x, k, s, p, dil, False)
        out, idx = _ops.max_pool2d_forward(x, k, s, p, dil, False)
        return _ops.max_pool2d_backward(grad, x, idx, k, s, p, dil, False) if backward else (out, idx)

    work = pool_bytes(kind, shape, x.element_size(), True, backward) + return_indices * shape.numel_out() * 8
    reads = (x, grad) if backward else (x,)
    return Case(call(ours_pool), call(theirs_pool), work=work, unit="byte", operator=operator, reads=reads)


def _pool_case(kind, shape, device, forward, backward):
    """Pooling forward as a user calls it (``pool_call_case``), or our backward operator, alone or after
    our forward operator, against aten's (max pooling: the backward alone, from each side's indices)."""
    if not backward:
        return pool_call_case(kind, shape, device, channels_last=shape.channels_last)
    x = _pool_input(shape, device, distinct=kind == "max")
    grad = torch.randn(shape.n, shape.c, *shape.out_size(), device=device)
    if shape.channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    k, s, p, dil = [shape.k] * 2, [shape.stride] * 2, [shape.padding] * 2, [1, 1]
    work = pool_bytes(kind, shape, x.element_size(), forward, backward)
    if kind == "max" and forward:
        # the training path: the forward that keeps indices, then the backward from them
        def ours_max():
            _, idx = _ops.max_pool2d_forward(x, k, s, p, dil, False)
            return _ops.max_pool2d_backward(grad, x, idx, k, s, p, dil, False)

        def theirs_max():
            _, idx = _aten.max_pool2d_with_indices(x, k, s, p, dil, False)
            return _aten.max_pool2d_with_indices_backward(grad, x, k, s, p, dil, False, idx)

        return Case(ours_max, theirs_max, work=work, unit="byte", time=OPERATOR_TIME, reads=(grad, x))
    if kind == "max":
        _, our_idx = _ops.max_pool2d_forward(x, k, s, p, dil, False)
        _, their_idx = _aten.max_pool2d_with_indices(x, k, s, p, dil, False)
        return Case(
            ours=lambda: _ops.max_pool2d_backward(grad, x, our_idx, k, s, p, dil, False),
            theirs=lambda: _aten.max_pool2d_with_indices_backward(grad, x, k, s, p, dil, False, their_idx),
            work=work,
            unit="byte",
            time=OPERATOR_TIME,
            reads=(grad, x, our_idx),
        )

    def ours():
        if forward:
            _ops.avg_pool2d_forward(x, k, s, p, False, True, None)
        return _ops.avg_pool2d_backward(grad, x, k, s, p, False, True, None)

    def theirs():
        if forward:
            _aten.avg_pool2d(x, k, s, p, False, True, None)
        return _aten.avg_pool2d_backward(grad, x, k, s, p, False, True, None)

    return Case(ours, theirs, work=work, unit="byte", time=OPERATOR_TIME, reads=(grad, x))


def _block_case(shape, device, backward):
    """conv -> sigmoid -> 2x2 avg-pool, forward, or forward and the weight and bias gradients through
    autograd (as in training, where the first layer's input needs no gradient), on both sides."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device)
    fan_in = shape.c // shape.groups * shape.k * shape.k
    w = (
        torch.randn(shape.o, shape.c // shape.groups, shape.k, shape.k, device=device) / math.sqrt(fan_in)
    ).requires_grad_(backward)
    b = torch.randn(shape.o, device=device).requires_grad_(backward)
    conf = (shape.stride, shape.padding, 1, shape.groups)
    oh, ow = shape.out_size()
    grad = torch.randn(shape.n, shape.o, oh // 2, ow // 2, device=device)

    def run(block):
        if not backward:
            with torch.no_grad():
                return block()
        return torch.autograd.grad(block(), (w, b), grad)

    ours = lambda: run(lambda: F.conv2d_sigmoid_avgpool2d(x, w, b, *conf))
    theirs = lambda: run(lambda: torch_F.avg_pool2d(torch.sigmoid(torch_F.conv2d(x, w, b, *conf)), 2))

    # what the functional and the autograd kernel pass down, on tensors that need no gradient
    w0, b0 = w.detach(), b.detach()
    op_conf = ([shape.stride] * 2, [shape.padding] * 4, [1, 1], shape.groups, [2, 2])

    def operator():
        out, activation = _ops.conv2d_sigmoid_avgpool2d(x, w0, b0, *op_conf)
        if not backward:
            return out
        return _present(_ops.conv2d_sigmoid_avgpool2d_backward(grad, x, w0, activation, *op_conf, [False, True, True]))

    reads = (x, w, b, grad) if backward else (x, w, b)
    return Case(ours, theirs, work=(1 + backward) * shape.flops(), unit="flop", operator=operator, reads=reads)


def _model_case(shape, device, train):
    """Our network and its torch.nn twin with identical weights, on the same batch.

    A training step is forward + cross-entropy + backward + SGD step; it returns the loss and the updated
    parameters, so the first call of each side (from identical weights) can be compared.
    """
    models = importlib.import_module("lenet_ext.models")
    ours_net = getattr(models, shape.model)().to(device)
    theirs_net = models.builtin_twin(ours_net)
    x = torch.randn(shape.batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (shape.batch,), device=device)

    if not train:
        ours_net.eval()
        theirs_net.eval()

        def infer(net):
            with torch.no_grad():
                return net(x)

        return Case(lambda: infer(ours_net), lambda: infer(theirs_net), work=shape.batch, unit="image")

    def stepper(net):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = torch_F.cross_entropy(net(x), labels)
            loss.backward()
            optimizer.step()
            return (loss.detach(), *(p.detach() for p in net.parameters()))

        return step

    return Case(stepper(ours_net), stepper(theirs_net), work=shape.batch, unit="image")


def _converted_case(shape, device, train):
    """A zoo network in torch.nn layers against ``lenet_ext.convert()`` of it: same weights, same images.

    Inference runs in eval mode, after one pass in training mode has set batch norm's running statistics
    from this batch (fresh ones, 0 and 1, would leave activations at whatever scale the initialisation
    gives). A training step, in training mode, is forward, cross-entropy against random labels, and the
    gradients of every parameter by ``torch.autograd.grad`` (no optimizer, so each call starts from the
    same weights). Its check compares the loss and the logits in float32; every gradient in float32
    only norm-wise and loosely (GRADIENT_NORM_TOLERANCE), which catches a gross error in the timed kernels;
    and every gradient closely in float64 (``_float64_gradients_check`` says why).
    """
    zoo = importlib.import_module("lenet_ext.zoo")
    theirs_net = zoo.MODELS[shape.model]().to(device)
    x = torch.randn(shape.batch, 3, shape.size, shape.size, device=device)
    if not train:
        _calibrate_batch_norm(theirs_net, x)
        ours_net = lenet_ext.convert(theirs_net)

        def infer(net):
            with torch.no_grad():
                return net(x)

        return Case(lambda: infer(ours_net), lambda: infer(theirs_net), work=shape.batch, unit="image")

    labels = torch.randint(0, 1000, (shape.batch,), device=device)
    ours, theirs = _train_step(lenet_ext.convert(theirs_net), x, labels), _train_step(theirs_net, x, labels)

    def check():
        ours_result, theirs_result = ours(), theirs()
        _check_norm_close(ours_result[2:], theirs_result[2:], GRADIENT_NORM_TOLERANCE)
        return max(check_close(ours_result[:2], theirs_result[:2]), _float64_gradients_check(theirs_net, x, labels))

    return Case(ours, theirs, work=shape.batch, unit="image", check=check)


def _train_step(net, x, labels):
    """A callable returning the loss, the logits and the gradient of every parameter of one step."""
    params = list(net.parameters())

    def step():
        logits = net(x)
        loss = torch_F.cross_entropy(logits, labels)
        return (loss.detach(), logits.detach(), *torch.autograd.grad(loss, params))

    return step


# float32 gradients of a ReLU network differ by a few percent norm-wise for reasons no kernel can fix (see
# _float64_gradients_check: 2% in ResNet-18 at batch 4); a wrong kernel is off by the gradient's own size.
GRADIENT_NORM_TOLERANCE = 0.25


def _check_norm_close(ours, theirs, tolerance):
    """Each of ``ours`` within ``tolerance`` of the matching tensor of ``theirs``, as ||a - b|| / ||b||."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        difference = (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-30)
        if not difference <= tolerance:  # also NaN
            raise AssertionError(f"tensor {i} is not close: ||ours - torch|| / ||torch|| = {difference:.2e}")


def _float64_gradients_check(net, x, labels):
    """Every gradient of a training step of ``lenet_ext.convert(net)`` against ``net``'s, both in float64.

    float32 gradients of a deep ReLU network cannot be compared element by element: a rounding-sized
    change in the forward moves a few pre-activations across zero (5 of ResNet-18's at batch 4, all within
    7e-6 of it), which switches their ReLU's gradient on or off, and batch norm spreads that over the
    channel; a weight gradient made of a few hundred terms then moves by several percent of its largest
    value (up to 20% in ResNet-18 at batch 4). torch's own float32 step moves that much when one stem
    weight changes by 1e-7, where in float64 the same change moves it by 1e-6. So the gradients are
    compared where rounding cannot cross a kink: float64 copies of both networks (same weights, images and
    labels), run by the float64 instances of the same kernels.
    """
    net64 = copy.deepcopy(net).double()
    x64 = x.double()
    return check_close(_train_step(lenet_ext.convert(net64), x64, labels)(), _train_step(net64, x64, labels)())


def _calibrate_batch_norm(net, x):
    """Running statistics of batch norm from one pass over ``x`` (momentum None: a plain average), then
    eval mode."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


BUILDERS = {
    "conv2d.forward": lambda s, dev: _conv_case(s, dev),
    "conv2d.backward_input": lambda s, dev: _conv_case(s, dev, [True, False, False]),
    "conv2d.backward_weight": lambda s, dev: _conv_case(s, dev, [False, True, False]),
    "conv2d.forward+backward_weight_bias": lambda s, dev: _conv_case(s, dev, [False, True, True], with_forward=True),
    "max_pool2d.forward": lambda s, dev: _pool_case("max", s, dev, forward=True, backward=False),
    "max_pool2d.backward": lambda s, dev: _pool_case("max", s, dev, forward=False, backward=True),
    "avg_pool2d.forward": lambda s, dev: _pool_case("avg", s, dev, forward=True, backward=False),
    "avg_pool2d.backward": lambda s, dev: _pool_case("avg", s, dev, forward=False, backward=True),
    "avg_pool2d.forward+backward": lambda s, dev: _pool_case("avg", s, dev, forward=True, backward=True),
    "max_pool2d.forward+backward": lambda s, dev: _pool_case("max", s, dev, forward=True, backward=True),
    "lenet_block.forward": lambda s, dev: _block_case(s, dev, backward=False),
    "lenet_block.forward+backward_weight_bias": lambda s, dev: _block_case(s, dev, backward=True),
    "model.train_step": lambda s, dev: _model_case(s, dev, train=True),
    "model.inference": lambda s, dev: _model_case(s, dev, train=False),
    "converted.inference": lambda s, dev: _converted_case(s, dev, train=False),
    "converted.train_step": lambda s, dev: _converted_case(s, dev, train=True),
}
assert set(BUILDERS) == set(REQUIRES) and all(r.op in BUILDERS for r in ROWS)
