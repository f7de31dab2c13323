"""Property tests (hypothesis): random valid configurations of conv2d, max_pool2d and avg_pool2d,
forward and backward, against torch in float64 on the CPU; and invariants that hold whatever torch does.
"""

import pytest

pytest.importorskip("hypothesis")

import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402
from common import assert_close, grads, to_layout  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lenet_ext.functional as F  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)
D = torch.float64
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))  # noqa: E731
layouts = st.sampled_from(["contiguous", "channels_last", "permuted", "sliced"])


def _tensor(shape, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    return to_layout(torch.randn(shape, dtype=D, generator=g), layout).requires_grad_()


def _leaf(t):
    return t.detach().clone().requires_grad_()


def _fits(n, k, p, d):
    return n + 2 * p >= d * (k - 1) + 1


@st.composite
def pool_window(draw, dilation=True):
    """A pooling configuration torch accepts: padding at most half of the kernel (and of the dilated one)."""
    h, w = draw(pairs(1, 10))
    k = draw(pairs(1, 4))
    s = draw(pairs(1, 4))
    d = draw(pairs(1, 3)) if dilation else (1, 1)
    p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
    ceil = draw(st.booleans())
    for n, ki, pi, di in zip((h, w), k, p, d):
        assume(_fits(n, ki, pi, di))
    return (h, w), k, s, p, d, ceil


# ------------------------------------------------------------------------------ against torch
@SETTINGS
@given(
    n=st.integers(0, 2),
    groups=st.integers(1, 3),
    cg=st.integers(1, 3),
    og=st.sampled_from([1, 2, 5, 9, 17]),  # 9 and 17: several channel blocks, the last one padded
    hw=pairs(1, 24),  # up to several pixel tiles per plane, some starting in a dropped column
    k=pairs(1, 4),
    stride=pairs(1, 3),
    padding=st.one_of(pairs(0, 2), st.sampled_from(["same", "valid"])),
    dilation=pairs(1, 2),
    bias=st.booleans(),
    layout=layouts,
)
@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note about its own copy
def test_conv2d_against_torch(n, groups, cg, og, hw, k, stride, padding, dilation, bias, layout):
    if padding == "same":
        stride = (1, 1)
    pads = (0, 0) if isinstance(padding, str) else padding
    assume(padding == "same" or all(_fits(a, b, c, d) for a, b, c, d in zip(hw, k, pads, dilation)))
    x = _tensor((n, groups * cg, *hw), layout)
    w = _tensor((groups * og, cg, *k), seed=1)
    b = _tensor((groups * og,), seed=2) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ours_in = [_leaf(t) if t is not None else None for t in (x, w, b)]
    out, ref = F.conv2d(*ours_in, **kw), TF.conv2d(x, w, b, **kw)
    assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, e in zip(grads(out, ours_in, g), grads(ref, [x, w, b], g)):
        if e is not None:
            assert_close(a, e)


@SETTINGS
@given(n=st.integers(0, 2), c=st.integers(1, 3), window=pool_window(), layout=layouts)
def test_max_pool2d_against_torch(n, c, window, layout):
    hw, k, s, p, d, ceil = window
    x = _tensor((n, c, *hw), layout)
    x.data.copy_(torch.randperm(x.numel()).view(x.shape).to(D))  # distinct values: one argmax per window
    xo = _leaf(x)
    out, idx = F.max_pool2d(xo, k, s, p, d, ceil, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    g = torch.randn_like(ref)
    # A dilated window can read padding only (output -inf, the values being finite). It depends on no
    # input, so ours gives it no gradient; torch scatters its gradient to an index outside the window.
    reads_input = ref != float("-inf")
    assert_close(grads(out, [xo], g)[0], grads(ref, [x], g * reads_input)[0])


@SETTINGS
@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    window=pool_window(dilation=False),
    include=st.booleans(),
    divisor=st.sampled_from([None, None, 1, 3, -2]),
    layout=layouts,
)
def test_avg_pool2d_against_torch(n, c, window, include, divisor, layout):
    hw, k, s, p, _, ceil = window
    x = _tensor((n, c, *hw), layout)
    xo = _leaf(x)
    out = F.avg_pool2d(xo, k, s, p, ceil, include, divisor)
    ref = TF.avg_pool2d(x, k, s, p, ceil, include, divisor)
    assert_close(out, ref)
    g = torch.randn_like(ref)
    assert_close(grads(out, [xo], g)[0], grads(ref, [x], g)[0])


# --------------------------------------------------------------------------------- invariants
@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 4), hw=pairs(1, 6))
def test_1x1_conv_is_a_matrix_product(n, c, o, hw):
    x, w = _tensor((n, c, *hw)).detach(), _tensor((o, c, 1, 1), seed=1).detach()
    expected = torch.einsum("oc,nchw->nohw", w.view(o, c), x)
    assert_close(F.conv2d(x, w), expected)


@SETTINGS
@given(groups=st.integers(1, 4), cg=st.integers(1, 3), og=st.integers(1, 3), hw=pairs(3, 7), padding=st.integers(0, 1))
def test_grouped_conv_is_the_concatenation_of_per_group_convs(groups, cg, og, hw, padding):
    x = _tensor((2, groups * cg, *hw)).detach()
    w = _tensor((groups * og, cg, 3, 2), seed=1).detach()
    per_group = [
        F.conv2d(x[:, i * cg : (i + 1) * cg], w[i * og : (i + 1) * og], padding=padding) for i in range(groups)
    ]
    assert_close(F.conv2d(x, w, padding=padding, groups=groups), torch.cat(per_group, 1))


@SETTINGS
@given(hw=pairs(2, 7), a=st.floats(-3, 3), b=st.floats(-3, 3), stride=pairs(1, 2))
def test_conv_is_linear_in_input_and_weight(hw, a, b, stride):
    x1, x2 = _tensor((2, 3, *hw)).detach(), _tensor((2, 3, *hw), seed=3).detach()
    w1, w2 = _tensor((4, 3, 2, 2), seed=1).detach(), _tensor((4, 3, 2, 2), seed=2).detach()
    conv = lambda x, w: F.conv2d(x, w, stride=stride, padding=1)  # noqa: E731
    assert_close(conv(a * x1 + b * x2, w1), a * conv(x1, w1) + b * conv(x2, w1))
    assert_close(conv(x1, a * w1 + b * w2), a * conv(x1, w1) + b * conv(x1, w2))


@SETTINGS
@given(shape=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)), layout=layouts)
def test_avg_pool_with_unit_window_is_the_identity(shape, layout):
    x = _tensor(shape, layout).detach()
    assert torch.equal(F.avg_pool2d(x, 1, 1), x)


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), window=pool_window(dilation=False))
def test_max_is_at_least_avg_without_padding_in_the_count(n, c, window):
    hw, k, s, p, _, ceil = window
    x = _tensor((n, c, *hw)).detach()
    mx = F.max_pool2d(x, k, s, p, 1, ceil)
    avg = F.avg_pool2d(x, k, s, p, ceil, count_include_pad=False)
    assert (mx >= avg - 1e-12).all()


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), window=pool_window())
def test_max_pool_input_gradient_sums_to_the_grad_output_sum(n, c, window):
    hw, k, s, p, d, ceil = window
    x = _tensor((n, c, *hw))
    out = F.max_pool2d(x, k, s, p, d, ceil)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    # every output routes its gradient to exactly one input, except a dilated window that reads only
    # padding: its -inf does not depend on the input at all
    assert_close(gx.sum(), g[out > float("-inf")].sum())
