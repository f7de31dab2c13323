"""Batched gradients: autograd's own vmap (torch.autograd.grad's is_grads_batched, jacobian and hessian with
vectorize=True, gradcheck's check_batched_grad), which runs the backward under legacy vmap (the `Batched`
dispatch key, lenet_ext/ops/vmap.py), and torch.func.vmap of the fused block's backward; all against
torch's convolution.
"""

import itertools

import pytest
import torch
import torch.nn.functional as TF
from common import assert_close, clone_leaf, make_input
from torch._vmap_internals import _vmap as legacy_vmap

from lenet_ext import functional as F

D = torch.float64
ops = torch.ops.lenet_ext


def _fused_reference(x, w, b, **kw):
    return TF.avg_pool2d(torch.sigmoid(TF.conv2d(x, w, b, **kw)), 2)


# (name, ours, torch's, conv keyword arguments)
CONVS = [
    ("plain", dict()),
    ("padded_strided", dict(padding=1, stride=(1, 2))),
    ("grouped_dilated", dict(padding=2, dilation=2, groups=2)),
    ("same_even", dict(padding="same")),
]
BLOCKS = {"conv": (F.conv2d, TF.conv2d), "fused": (F.conv2d_sigmoid_avgpool2d, _fused_reference)}
# which of (input, weight, bias) require grad: each gradient mask of the backward
WANTS = [w for w in itertools.product([True, False], repeat=3) if any(w)]


def _primals(kw, layout="contiguous", device="cpu", size=(2, 4, 8, 9), out_channels=6):
    x = make_input(size, D, device, layout)
    k = 2 if kw.get("padding") == "same" else 3
    w = torch.randn(out_channels, size[1] // kw.get("groups", 1), k, k, dtype=D, device=device)
    return x, w, torch.randn(out_channels, dtype=D, device=device)


def _same(got, expected):
    """Each pair the same shape and values."""
    for a, e in zip(got, expected):
        assert a.shape == e.shape
        assert_close(a, e)


def _small(kw):
    """Primals small enough for a numerical jacobian (gradcheck) or a hessian, each requiring grad."""
    return [t.requires_grad_() for t in _primals(kw, size=(1, 2, 5, 5), out_channels=2)]


@pytest.mark.parametrize("block", BLOCKS)
def test_the_issue_call(block):
    ours, theirs = BLOCKS[block]
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    results = []
    for f in (ours, theirs):
        out = f(x, w, None)
        v = torch.randn(4, *out.shape, generator=torch.Generator().manual_seed(1))
        results.append(torch.autograd.grad(out, (x, w), v, is_grads_batched=True))
    _same(*results)
    assert results[0][0].shape == (4, 1, 2, 6, 6) and results[0][1].shape == (4, 3, 2, 3, 3)


@pytest.mark.parametrize("wants", WANTS, ids=lambda w: "".join("xwb"[i] for i in range(3) if w[i]))
@pytest.mark.parametrize("conv", CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_is_grads_batched_matches_torch(block, conv, wants, layout, device):
    ours, theirs = BLOCKS[block]
    kw = conv[1]
    primals = _primals(kw, layout=layout, device=device)
    ours_in = [p.clone().requires_grad_(want) for p, want in zip(primals, wants)]
    theirs_in = [clone_leaf(p) for p in ours_in]
    out, ref = ours(*ours_in, **kw), theirs(*theirs_in, **kw)
    v = torch.randn(5, *ref.shape, dtype=D, device=device)
    wanted = [i for i in range(3) if wants[i]]
    got = torch.autograd.grad(out, [ours_in[i] for i in wanted], v, is_grads_batched=True)
    expected = torch.autograd.grad(ref, [theirs_in[i] for i in wanted], v, is_grads_batched=True)
    _same(got, expected)
    assert [a.shape for a in got] == [(5, *primals[i].shape) for i in wanted]


def test_a_batch_of_one(device):
    # runs the operator unbatched; legacy vmap gives the results their batch dimension of 1 back
    x = torch.randn(2, 3, 6, 6, dtype=D, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=D, device=device, requires_grad=True)
    out, ref = F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1)
    v = torch.randn(1, *ref.shape, dtype=D, device=device)
    got = torch.autograd.grad(out, (x, w), v, is_grads_batched=True)
    _same(got, torch.autograd.grad(ref, (x, w), v, is_grads_batched=True))


@pytest.mark.parametrize("conv", CONVS, ids=[c[0] for c in CONVS])
def test_vectorized_jacobian_matches_torch(conv):
    kw = conv[1]
    x, w, b = _primals(kw, size=(1, 2, 5, 6), out_channels=4)
    for ours, theirs in BLOCKS.values():
        got = torch.autograd.functional.jacobian(lambda *p: ours(*p, **kw), (x, w, b), vectorize=True)
        _same(got, torch.autograd.functional.jacobian(lambda *p: theirs(*p, **kw), (x, w, b), vectorize=True))


@pytest.mark.parametrize("conv", CONVS, ids=[c[0] for c in CONVS])
def test_vectorized_hessian_of_a_conv_matches_torch(conv):
    # the outer jacobian runs the double backward under a second legacy vmap level
    kw = conv[1]
    x, w, b = (t.detach() for t in _small(kw))

    def loss(f):
        return lambda x, w, b: f(x, w, b, **kw).sin().sum()

    got = torch.autograd.functional.hessian(loss(F.conv2d), (x, w, b), vectorize=True)
    expected = torch.autograd.functional.hessian(loss(TF.conv2d), (x, w, b), vectorize=True)
    looped = torch.autograd.functional.hessian(loss(F.conv2d), (x, w, b))  # and the loop over rows
    for row, ref_row, looped_row in zip(got, expected, looped):
        _same(row, ref_row)
        _same(row, looped_row)


@pytest.mark.parametrize("conv", CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize("block", BLOCKS)
def test_gradcheck_with_batched_grad(block, conv):
    ours, _ = BLOCKS[block]
    kw = conv[1]
    assert torch.autograd.gradcheck(lambda *p: ours(*p, **kw), _small(kw), check_batched_grad=True)


@pytest.mark.parametrize("conv", CONVS, ids=[c[0] for c in CONVS])
def test_gradgradcheck_with_batched_grad(conv):
    kw = conv[1]
    assert torch.autograd.gradgradcheck(lambda *p: F.conv2d(*p, **kw), _small(kw), check_batched_grad=True)


def test_fused_block_gradgradcheck_refuses_as_without_batched_grad():
    # the fused block has no double backward (ops.py); batched or not, it says so
    for batched in (False, True):
        with pytest.raises(RuntimeError, match="double backward is not supported for lenet_ext.conv2d_sigmoid"):
            torch.autograd.gradgradcheck(F.conv2d_sigmoid_avgpool2d, _small({}), check_batched_grad=batched)


# ---------------------------------------------------------------------------- the operators under legacy vmap
def _torch_conv_backward(grad, x, w, stride, padding, dilation, groups, mask):
    pads = padding[::2]  # these tests use equal padding on both sides
    bias_sizes, transposed, output_padding = [w.shape[0]], False, [0, 0]
    return torch.ops.aten.convolution_backward(
        grad, x, w, bias_sizes, stride, pads, dilation, transposed, output_padding, groups, mask
    )


def _looped(fn, args, in_dims, n):
    """fn over the n slices of the vmapped arguments, stacked (None where fn gives None)."""
    slices = [fn(*(a if d is None else a.select(d, i) for a, d in zip(args, in_dims))) for i in range(n)]
    return [None if r[0] is None else torch.stack(r) for r in zip(*slices)]


# which of (grad_output, input, weight) are vmapped, and where
IN_DIMS = [(0, None, None), (None, 0, None), (None, None, 0), (1, 0, None), (None, 2, 1), (0, 0, 0)]


@pytest.mark.parametrize("in_dims", IN_DIMS, ids=str)
@pytest.mark.parametrize("mask", [m for m in itertools.product([True, False], repeat=3) if any(m)], ids=str)
def test_conv2d_backward_under_legacy_vmap(in_dims, mask, device):
    n, conf = 3, ([1, 2], [1, 1, 2, 2], [1, 1], 2)
    x, w = torch.randn(2, 4, 7, 8, dtype=D, device=device), torch.randn(6, 2, 3, 3, dtype=D, device=device)
    g = torch.randn(2, 6, 7, 5, dtype=D, device=device)
    args = [t if d is None else torch.stack([t * (i + 1) for i in range(n)], d) for t, d in zip((g, x, w), in_dims)]

    def ours(g, x, w):
        return ops.conv2d_backward(g, x, w, *conf, list(mask))

    got = legacy_vmap(ours, in_dims, allow_none_pass_through=True)(*args)
    expected = _looped(lambda g, x, w: _torch_conv_backward(g, x, w, *conf, list(mask)), args, in_dims, n)
    for a, e, want in zip(got, expected, mask):
        assert (a is None) == (not want)
        if want:
            assert_close(a, e)


def test_operators_under_nested_legacy_vmap(device):
    # grad_output batched at the outer level only, the weight at the inner only, the input at both: each
    # argument has its own set of levels, and the results have every level
    x = torch.randn(3, 2, 2, 4, 6, 6, dtype=D, device=device)  # (outer 3, inner 2, N, C, H, W)
    w = torch.randn(2, 5, 4, 3, 3, dtype=D, device=device)  # (inner 2, O, C, KH, KW)
    g = torch.randn(3, 2, 5, 4, 4, dtype=D, device=device)  # (outer 3, N, O, OH, OW)
    conf = ([1, 1], [0, 0, 0, 0], [1, 1], 1)

    def ours(g, x, w):
        return ops.conv2d_backward(g, x, w, *conf, [True, True, True])

    inner = legacy_vmap(ours, (None, 0, 0))
    got = legacy_vmap(inner, (0, 0, None))(g, x, w)
    for i, j in itertools.product(range(3), range(2)):
        expected = _torch_conv_backward(g[i], x[i, j], w[j], *conf, [True, True, True])
        for a, e in zip(got, expected):
            assert_close(a[i, j], e)
    forward = legacy_vmap(legacy_vmap(lambda x, w: ops.conv2d_forward(x, w, None, *conf), (0, 0)), (0, None))(x, w)
    for i, j in itertools.product(range(3), range(2)):
        assert_close(forward[i, j], TF.conv2d(x[i, j], w[j]))


def test_fused_backward_under_both_vmaps(device):
    x, w = torch.randn(2, 4, 8, 8, dtype=D, device=device), torch.randn(6, 2, 3, 3, dtype=D, device=device)
    conf = ([1, 1], [1, 1, 1, 1], [1, 1], 2, [2, 2])
    _, act = ops.conv2d_sigmoid_avgpool2d(x, w, None, *conf)
    gs = torch.randn(4, 2, 6, 4, 4, dtype=D, device=device)
    ws = torch.stack([w, 2 * w, -w, w / 3])

    def fused(g, w):
        return ops.conv2d_sigmoid_avgpool2d_backward(g, x, w, act, *conf, [True, True, True])

    looped = _looped(fused, (gs, ws), (0, 0), 4)
    for vmap in (legacy_vmap, torch.func.vmap):
        for a, e in zip(vmap(fused)(gs, ws), looped):
            assert_close(a, e)


def test_per_sample_gradients_of_the_fused_block_match_torch():
    # torch.func.vmap over grad: the fused backward's vmap rule with a vmapped input and grad_output
    x, w, b = torch.randn(5, 3, 8, 8, dtype=D), torch.randn(4, 3, 3, 3, dtype=D), torch.randn(4, dtype=D)

    def loss(block):
        return lambda w, b, x: block(x[None], w, b, padding=1).square().sum()

    ours = torch.func.vmap(torch.func.grad(loss(F.conv2d_sigmoid_avgpool2d), argnums=(0, 1)), in_dims=(None, None, 0))
    theirs = torch.func.vmap(torch.func.grad(loss(_fused_reference), argnums=(0, 1)), in_dims=(None, None, 0))
    for a, e in zip(ours(w, b, x), theirs(w, b, x)):
        assert_close(a, e)
