"""Helpers shared by the tests: memory layouts, tolerances, and comparing against torch."""

import torch
import torch.nn.functional as TF

from torch_guard import padding_only_mask, torch_max_pool2d_grad

import lenet_ext.functional as LF

LAYOUTS = ["contiguous", "channels_last", "permuted", "sliced"]


def make_input(shape, dtype, device, layout="contiguous", requires_grad=False, distinct=False):
    """A 4D (or 3D) tensor with the given values layout; `distinct` gives all-different values (for max)."""
    n = 1
    for s in shape:
        n *= s
    if distinct:
        t = (torch.randperm(max(n, 1), device=device)[:n].to(dtype) / max(n, 1)).reshape(shape)
    else:
        t = torch.randn(shape, dtype=dtype, device=device)
    t = to_layout(t, layout)
    return t.requires_grad_(requires_grad)


def to_layout(t, layout):
    """Same values, different strides."""
    if layout == "contiguous" or t.dim() != 4:
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":  # H and W stored swapped: a non-contiguous view
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced":  # every other element of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    raise ValueError(layout)


def tolerances(dtype):
    return {
        torch.float64: dict(rtol=1e-10, atol=1e-10),
        torch.float32: dict(rtol=1e-4, atol=1e-4),
        torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2),
        torch.float16: dict(rtol=1e-3, atol=1e-3),
    }[dtype]


def assert_close(actual, expected, dtype=None, **kw):
    tol = tolerances(dtype or expected.dtype)
    tol.update(kw)
    torch.testing.assert_close(actual, expected, **tol)


def assert_no_worse_than_torch(ours, theirs, exact):
    """A half-precision result against float64: ours may be off by at most twice torch's own error in
    the same dtype, plus one rounding step of the result (both round to the same few bits)."""
    assert ours.dtype == theirs.dtype
    torch_error = (theirs.double() - exact).abs().max()
    rounding = torch.finfo(theirs.dtype).eps * exact.abs().max()
    assert (ours.double() - exact).abs().max() <= 2 * torch_error + rounding


def grads(out, inputs, grad_out):
    """Gradients of <out, grad_out> for each input that requires grad (None for the others)."""
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def check_conv2d(case, dtype, device="cpu", layout="contiguous", bias=True, unbatched=False):
    """Ours against torch for a cases.Conv2dCase: the output, its shape and dtype, and every gradient."""
    x_shape = case.input[1:] if unbatched else case.input
    x = make_input(x_shape, dtype, device, layout, requires_grad=True)
    w = make_input(case.weight, dtype, device, layout, requires_grad=True)
    b = make_input((case.weight[0],), dtype, device, requires_grad=True) if bias else None
    ours_in = [clone_leaf(t) for t in (x, w, b)]
    expected = case.reference(x, w, b)
    actual = case.ours(*ours_in)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert_close(actual, expected)
    g = torch.randn_like(expected)
    for a, e in zip(grads(actual, ours_in, g), grads(expected, [x, w, b], g)):
        if e is not None:
            assert_close(a, e)


def pool_reference_input(t):
    """What torch's pooling computes the reference from. torch's channels_last CUDA kernels disagree with
    its NCHW and CPU ones in two places, and ours follow the latter: its avg_pool2d backward with padding
    is wrong (pytorch/pytorch#188344, in torch 2.11), and its max_pool2d records index 0 instead of the
    first tap for a window of only padding. So on CUDA the reference reads an NCHW copy."""
    return t.contiguous() if t.is_cuda else t


def check_max_pool2d(case, dtype, device="cpu", layout="contiguous"):
    """Ours against torch for a cases.MaxPool2dCase: values and indices exactly, the values-only forward, the
    input gradient, and the layout of a channels_last result."""
    x = make_input(case.input, dtype, device, layout, requires_grad=True, distinct=True)
    # torch's CPU backward writes out of bounds when a window sees only padding: then its gradient comes from
    # a child process (tests/torch_guard.py)
    unsafe = x.device.type == "cpu" and padding_only_mask(x.shape, **case.kwargs()) is not None
    y = x.detach() if unsafe else clone_leaf(x)
    (out, idx) = LF.max_pool2d(x, **case.kwargs(), return_indices=True)
    (ref, ref_idx) = TF.max_pool2d(y, **case.kwargs(), return_indices=True)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(idx, ref_idx, rtol=0, atol=0)
    g = torch.randn_like(ref)
    expected = torch_max_pool2d_grad(y, g, **case.kwargs()) if unsafe else grads(ref, [y], g)[0]
    assert_close(grads(out, [x], g)[0], expected)
    # the values-only forward (no grad wanted) gives the same values
    with torch.no_grad():
        torch.testing.assert_close(LF.max_pool2d(x, **case.kwargs()), ref, rtol=0, atol=0)
    if layout == "channels_last" and x.dim() == 4 and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last) and idx.stride() == out.stride()


def check_avg_pool2d(case, dtype, device="cpu", layout="contiguous"):
    """Ours against torch for a cases.AvgPool2dCase: the output, the input gradient, and the layout of a
    channels_last result."""
    x = make_input(case.input, dtype, device, layout, requires_grad=True)
    y = clone_leaf(x)
    out = LF.avg_pool2d(x, **case.kwargs())
    ref = TF.avg_pool2d(pool_reference_input(y), **case.kwargs())
    assert out.shape == ref.shape
    assert_close(out, ref)
    g = torch.randn_like(ref)
    gx = grads(out, [x], g)[0]
    assert_close(gx, grads(ref, [y], g)[0])
    if layout == "channels_last" and x.dim() == 4 and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert gx.is_contiguous(memory_format=torch.channels_last)


def clone_leaf(t):
    """A fresh leaf with the same values and strides (so ours and torch's get separate graphs)."""
    if t is None:
        return None
    c = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    c.copy_(t.detach())
    return c.requires_grad_(t.requires_grad)


def raises_like_torch(ours, theirs, same_words=None):
    """Calls both; torch's exception type and first message line must match ours (or both succeed).

    `same_words` replaces the whole first line by the part that must match, for messages that name
    torch's own internals (its argument parser, its kernel names).
    """
    try:
        expected = theirs()
    except Exception as e:  # noqa: BLE001
        expected = e
    try:
        actual = ours()
    except Exception as e:  # noqa: BLE001
        actual = e
    if isinstance(expected, Exception):
        assert isinstance(actual, type(expected)), f"torch raised {expected!r}, ours gave {actual!r}"
        want = same_words or str(expected).split("\n")[0]
        assert same_words is None or same_words in str(expected), f"torch no longer says {same_words!r}"
        assert want in str(actual), f"torch said {want!r}, ours said {str(actual)!r}"
    else:
        assert not isinstance(actual, Exception), f"torch accepted the input, ours raised {actual!r}"
    return expected, actual
