"""Property tests (hypothesis): random valid configurations of conv2d, max_pool2d and avg_pool2d,
forward and backward, in float64 and float32 and under each forced CPU algorithm, against torch on the
CPU; and invariants that hold whatever torch does.

Examples are derandomised by default, so CI runs the same ones every time. For a longer random search:

    LENET_EXT_HYPOTHESIS=thorough pytest tests/test_properties.py          # 1000 examples per test
    LENET_EXT_HYPOTHESIS=thorough LENET_EXT_HYPOTHESIS_EXAMPLES=10000 pytest tests/test_properties.py

torch's own CPU convolution can crash on some shapes (a segfault in its channels_last path, e.g.
x (2,18,14,2) channels_last, w (99,6,4,1), stride (2,3), padding (3,1), dilation (1,3), groups 3): the
torch side of each comparison runs in a child process (tests/isolation.py), so such a crash fails one
example, not the whole run.
"""

import os

import pytest

pytest.importorskip("hypothesis")

import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402
from common import assert_close, grads, to_layout  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from isolation import Child, ChildCrashed  # noqa: E402

import lenet_ext  # noqa: E402
import lenet_ext.functional as F  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None)
settings.register_profile(
    "thorough",
    max_examples=int(os.environ.get("LENET_EXT_HYPOTHESIS_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SETTINGS = settings(settings.get_profile(os.environ.get("LENET_EXT_HYPOTHESIS", "ci")))
D = torch.float64
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))  # noqa: E731
layouts = st.sampled_from(["contiguous", "channels_last", "permuted", "sliced"])
dtypes = st.sampled_from([torch.float64, torch.float32])

# Each CPU kernel variant the comparisons force in turn. An instruction-set level (a future
# lenet_ext.backends.cpu_isa) is one more entry: a context manager factory and its id.
# Each CPU algorithm at the best level, and each lower instruction-set level this machine runs (a
# separately compiled copy of the tile kernels) under the automatic choice.
CPU_VARIANTS = [
    pytest.param(lambda a=a: lenet_ext.backends.conv_algorithm(a), id=a) for a in lenet_ext.backends.ALGORITHMS
] + [
    pytest.param(lambda level=level: lenet_ext.backends.cpu_isa(level), id=level)
    for level in lenet_ext.backends.available_cpu_isas()[:-1]
]


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.close()


def _tensor(shape, layout="contiguous", seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return to_layout(torch.randn(shape, dtype=D, generator=g).to(dtype), layout).requires_grad_()


def _torch_reference(name, args, kwargs, grad_out):
    """Runs in the child: torch.nn.functional.<name>(*args, **kwargs) and the gradients of
    <output, grad_out> for every tensor argument that requires grad. grad_out None: a normal one."""
    out = getattr(TF, name)(*args, **kwargs)
    values = out[0] if isinstance(out, tuple) else out
    g = grad_out if grad_out is not None else torch.randn_like(values)
    tensors = [a for a in args if isinstance(a, torch.Tensor) or a is None]
    gradients = grads(values, tensors, g) if any(t is not None and t.requires_grad for t in tensors) else []
    out = tuple(t.detach() for t in out) if isinstance(out, tuple) else out.detach()
    return out, g, gradients


def _in_child(child, name, args, kwargs, grad_out=None):
    """(output, grad_out, gradients) of torch's `name`, computed in the child process."""
    sent = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    return child.call(_torch_reference, name, sent, kwargs, grad_out)


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
@pytest.mark.parametrize("variant", CPU_VARIANTS)
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
    dtype=dtypes,
)
@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note about its own copy
def test_conv2d_against_torch(child, variant, n, groups, cg, og, hw, k, stride, padding, dilation, bias, layout, dtype):
    if padding == "same":
        stride = (1, 1)
    pads = (0, 0) if isinstance(padding, str) else padding
    assume(padding == "same" or all(_fits(a, b, c, d) for a, b, c, d in zip(hw, k, pads, dilation)))
    x = _tensor((n, groups * cg, *hw), layout, dtype=dtype)
    w = _tensor((groups * og, cg, *k), seed=1, dtype=dtype)
    b = _tensor((groups * og,), seed=2, dtype=dtype) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref, g, expected = _in_child(child, "conv2d", [x, w, b], kw)
    ours_in = [_leaf(t) if t is not None else None for t in (x, w, b)]
    with variant():
        out = F.conv2d(*ours_in, **kw)
        actual = grads(out, ours_in, g)
    assert_close(out, ref)
    for a, e in zip(actual, expected):
        if e is not None:
            assert_close(a, e)


@SETTINGS
@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    window=pool_window(),
    layout=layouts,
    dtype=dtypes,
    values=st.sampled_from(["distinct", "ties", "relu", "constant"]),
)
def test_max_pool2d_against_torch(child, n, c, window, layout, dtype, values):
    hw, k, s, p, d, ceil = window
    x = _tensor((n, c, *hw), layout, dtype=dtype)
    if values == "distinct":  # one argmax per window
        x.data.copy_(torch.randperm(x.numel()).view(x.shape).to(dtype))
    elif values == "ties":  # a few levels: most windows hold their maximum more than once
        x.data.copy_(torch.randint(0, 3, x.shape, generator=torch.Generator().manual_seed(1)).to(dtype))
    elif values == "relu":  # after a ReLU: runs of zeros, including whole windows
        x.data.clamp_(min=0)
    else:  # every window a tie
        x.data.fill_(0.5)
    # A dilated window can read padding only (output -inf, the values being finite). It depends on no
    # input, so ours gives it no gradient; torch scatters its gradient to an index outside the window.
    (ref, ref_idx), g, _ = _in_child(child, "max_pool2d", [x.detach(), k, s, p, d, ceil], dict(return_indices=True))
    reads_input = ref != float("-inf")
    _, _, (expected, *_) = _in_child(child, "max_pool2d", [x, k, s, p, d, ceil], {}, g * reads_input)
    xo = _leaf(x)
    out, idx = F.max_pool2d(xo, k, s, p, d, ceil, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert_close(grads(out, [xo], g)[0], expected)


@pytest.mark.parametrize("values", ["constant", "relu"])
@pytest.mark.parametrize(
    "kw",
    [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, dilation=2)],
)
def test_max_pool2d_gradient_at_ties_matches_torch(child, values, kw):
    # the same ties in every run, whatever hypothesis draws above: the whole input one value, or ReLU zeros
    x = torch.randn(2, 3, 9, 8, dtype=D, generator=torch.Generator().manual_seed(3))
    x = torch.full_like(x, 0.5) if values == "constant" else x.clamp(min=0)
    ref, g, (expected,) = _in_child(child, "max_pool2d", [x.requires_grad_()], kw)
    xo = _leaf(x)
    out = F.max_pool2d(xo, **kw)
    assert torch.equal(out, ref)
    assert_close(grads(out, [xo], g)[0], expected)


@SETTINGS
@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    window=pool_window(dilation=False),
    include=st.booleans(),
    divisor=st.sampled_from([None, None, 1, 3, -2]),
    layout=layouts,
    dtype=dtypes,
)
def test_avg_pool2d_against_torch(child, n, c, window, include, divisor, layout, dtype):
    hw, k, s, p, _, ceil = window
    x = _tensor((n, c, *hw), layout, dtype=dtype)
    ref, g, (expected, *_) = _in_child(child, "avg_pool2d", [x, k, s, p, ceil, include, divisor], {})
    xo = _leaf(x)
    out = F.avg_pool2d(xo, k, s, p, ceil, include, divisor)
    assert_close(out, ref)
    assert_close(grads(out, [xo], g)[0], expected)


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


# ------------------------------------------------------------------------- a reference that crashes
def _torch_conv(x, w, b, kw):
    return TF.conv2d(x, w, b, **kw)


def test_a_crashing_torch_reference_fails_one_call(child):
    # torch 2.13's own float32 channels_last CPU convolution segfaults on this shape (ours is right):
    # the child dies, the call says so, and the next call gets a fresh child
    x = torch.randn(2, 18, 14, 2).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(99, 6, 4, 1), torch.randn(99)
    kw = dict(stride=(2, 3), padding=(3, 1), dilation=(1, 3), groups=3)
    try:
        ref = child.call(_torch_conv, x, w, b, kw)
    except ChildCrashed:
        ref = child.call(_torch_conv, x.contiguous(), w, b, kw)  # the same convolution, another torch path
    assert_close(F.conv2d(x, w, b, **kw), ref, dtype=torch.float32)
