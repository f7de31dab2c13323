"""The bad-input catalogue: every case raises torch's exception type (and torch's first message line
where torch has one), or gives exactly torch's result where torch accepts the input.

Any of these could crash a careless kernel, so they all run in one child process (tests/isolation.py;
one torch import, so it stays fast): a crash fails only the case that was running, and the next case
gets a fresh child.
"""

import pytest
import torch
import torch.nn.functional as TF
from cases import CONV2D
from common import raises_like_torch
from isolation import Child, ChildCrashed

import lenet_ext.functional as F

ops = torch.ops.lenet_ext
# the valid call that the cases break (pooling takes X too); the cases below name its sizes
X = torch.randn(CONV2D["plain"].input)
W = torch.randn(CONV2D["plain"].weight)
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def same_as_torch(ours, theirs, same_words=None, exact=True):
    """raises_like_torch, and where torch accepts the input, torch's values (NaN where torch's): exactly
    for max pooling, to float32 rounding for sums in another order (conv; average pooling, which sums each
    window row by row)."""
    expected, actual = raises_like_torch(ours, theirs, same_words)
    if not isinstance(expected, Exception):
        tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-5)
        for a, e in zip(*(v if isinstance(v, tuple) else (v,) for v in (actual, expected))):
            torch.testing.assert_close(a, e, equal_nan=True, **tol)
    return expected


def same_type_as_torch(ours, theirs):
    """For errors whose wording is torch's internals (an allocator, SymInt handling, its own overflowed
    sizes) or a deliberate difference: torch's exception type, our own words."""
    try:
        theirs()
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)):
            ours()
    else:
        raise AssertionError("torch accepts this input")


def conv_case(kwargs, x=X, w=W, bias=None):
    ours, theirs = (lambda: F.conv2d(x, w, bias, **kwargs)), (lambda: TF.conv2d(x, w, bias, **kwargs))
    return same_as_torch(ours, theirs, exact=False)


def pool_case(name, args, kwargs=None):
    kwargs = kwargs or {}
    ours, theirs = getattr(F, name), getattr(TF, name)
    return same_as_torch(lambda: ours(*args, **kwargs), lambda: theirs(*args, **kwargs), exact=name == "max_pool2d")


# ------------------------------------------------------- zero, negative and huge window arguments
for _arg in ("stride", "padding", "dilation", "groups"):
    for _value in (0, -1, 2**31, 2**63 - 1, -(2**63)):
        if (_arg, _value) in {("padding", 0), ("padding", 2**31)}:
            continue  # padding 0 is valid; 2**31 gets its own case below

        def _conv(arg=_arg, value=_value):
            if (arg, value) == ("dilation", 2**63 - 1):
                # torch's d*(k-1) wraps around and it computes a meaningless 10x10 output; we refuse
                with pytest.raises(RuntimeError, match="too large"):
                    F.conv2d(X, W, dilation=value)
            elif value == -(2**63) or (arg, value) == ("padding", 2**63 - 1):
                # torch fails inside its SymInt handling, or says "at most 2^62" where our limit is 2^40
                same_type_as_torch(lambda: F.conv2d(X, W, **{arg: value}), lambda: TF.conv2d(X, W, **{arg: value}))
            else:
                conv_case({arg: value})

        _conv.__name__ = f"conv2d_{_arg}_{_value}"
        case(_conv)

for _arg in ("kernel_size", "stride", "padding", "dilation"):
    for _value in (0, -1, 2**31, 2**63 - 1):

        def _max(arg=_arg, value=_value):
            kwargs = {"kernel_size": 2, arg: value}
            pool_case("max_pool2d", (X,), kwargs)

        _max.__name__ = f"max_pool2d_{_arg}_{_value}"
        case(_max)


@case
def conv2d_padding_2_31_is_an_error_not_an_allocation():
    # torch tries to allocate terabytes and fails; we refuse before allocating anything that large
    same_type_as_torch(lambda: F.conv2d(X, W, padding=2**31), lambda: TF.conv2d(X, W, padding=2**31))


@case
def conv2d_kernel_zero_width():
    conv_case({}, w=torch.randn(4, 2, 3, 0))


@case
def avg_pool2d_huge_kernel_and_divisor():
    pool_case("avg_pool2d", (X, 2**31 - 1))
    pool_case("avg_pool2d", (X, 2), dict(divisor_override=2**31))
    pool_case("avg_pool2d", (X, 2), dict(divisor_override=-(2**31)))


@case
def max_pool2d_dilation_times_kernel_past_int32():
    # torch's own size arithmetic overflows here; both refuse, with our correct (negative) output size
    same_type_as_torch(lambda: F.max_pool2d(X, 2**30, 1, dilation=2**30), lambda: TF.max_pool2d(X, 2**30, 1, 0, 2**30))


# ------------------------------------------------------------------------------------ sparse tensors
@case
def conv2d_sparse_input_or_weight():
    # torch raises a RuntimeError ("unsupported memory format option Contiguous"); ours names the layout
    for x, w in ((X.to_sparse(), W), (X, W.to_sparse())):
        for ours, theirs in ((F.conv2d, TF.conv2d), (F.conv2d_sigmoid_avgpool2d, TF.conv2d)):
            with pytest.raises(RuntimeError, match=r"expected a strided \(dense\) (input|weight), but got "):
                ours(x, w)
            same_type_as_torch(lambda: ours(x, w), lambda: theirs(x, w))


@case
def conv2d_sparse_after_a_dense_call():
    # a checked call's signature includes the layout: the dense call's result is not reused
    F.conv2d(X, W)
    with pytest.raises(RuntimeError, match="layout torch.sparse_coo"):
        F.conv2d(X.to_sparse(), W)


@case
def sparse_bias_and_pooling():
    # no kernel for the sparse backend: NotImplementedError from torch's and from ours
    bias = torch.randn(W.shape[0]).to_sparse()
    same_type_as_torch(lambda: F.conv2d(X, W, bias), lambda: TF.conv2d(X, W, bias))
    for name in ("max_pool2d", "avg_pool2d"):
        same_type_as_torch(lambda: getattr(F, name)(X.to_sparse(), 2), lambda: getattr(TF, name)(X.to_sparse(), 2))


# --------------------------------------------------------------------- tuples of the wrong length
@case
def conv2d_tuples_of_wrong_length():
    for kwargs in (dict(stride=()), dict(dilation=(1, 1, 1)), dict(stride=[1]), dict(padding=(1,))):
        conv_case(kwargs)


@case
def pool_tuples_of_wrong_length():
    for name in ("max_pool2d", "avg_pool2d"):
        pool_case(name, (X, (2, 2, 2)))
        pool_case(name, (X, 2), dict(padding=()))
        pool_case(name, (X, 2), dict(stride=(1, 1, 1)))
    pool_case("max_pool2d", (X, 2), dict(dilation=()))


# ------------------------------------------------------------------------------------ wrong rank
@case
def wrong_rank():
    for x in (X[0, 0, 0], X[0, 0], X[None], torch.tensor(1.0)):
        conv_case({}, x=x)
        if x.dim() > 0:
            pool_case("max_pool2d", (x, 2))
            pool_case("avg_pool2d", (x, 2))
    # a 3D or 5D weight makes torch read the call as conv1d or conv3d and complain about the stride;
    # we name the weight
    for w in (W[0], W[None]):
        same_type_as_torch(lambda w=w: F.conv2d(X, w), lambda w=w: TF.conv2d(X, w))


# ------------------------------------------------------------------------- channels and groups
@case
def channel_and_group_mismatches():
    conv_case({}, w=torch.randn(4, 3, 3, 3))
    conv_case(dict(groups=2), w=torch.randn(4, 2, 3, 3))  # needs 4 input channels
    conv_case(dict(groups=3), x=torch.randn(1, 3, 8, 8), w=torch.randn(4, 1, 3, 3))  # 4 % 3
    conv_case(dict(groups=4), x=torch.randn(1, 4, 8, 8), w=torch.randn(2, 1, 3, 3))  # fewer than groups
    conv_case(dict(groups=2), w=torch.randn(4, 1, 3, 3))  # valid: depthwise-like


@case
def bias_of_the_wrong_shape():
    for bias in (torch.randn(3), torch.randn(5), torch.randn(4, 1), torch.randn(()), torch.randn(0)):
        conv_case({}, bias=bias)


# ---------------------------------------------------------------------- dtypes and devices
@case
def mixed_dtypes():
    conv_case({}, w=W.double())
    conv_case({}, x=X.double())
    conv_case({}, bias=torch.randn(4, dtype=torch.float64))
    conv_case({}, x=X.bfloat16(), w=W.bfloat16(), bias=torch.randn(4))


@case
def mixed_devices_raise_rather_than_compute():
    # torch computes a meta result when only the input is on 'meta' (it follows the input); we raise,
    # since a real kernel cannot read a tensor that has no data
    other = "cuda" if torch.cuda.is_available() else "meta"
    for x, w, b in [(X.to(other), W, None), (X, W.to(other), None), (X, W, torch.randn(4, device=other))]:
        with pytest.raises(RuntimeError, match="should be the same|same device"):
            F.conv2d(x, w, b)


@case
def bool_complex_integer_inputs():
    for dtype in (torch.bool, torch.complex64, torch.int32):
        with pytest.raises(NotImplementedError, match="not implemented for"):
            F.conv2d(X.to(dtype), W.to(dtype))
    for name in ("max_pool2d", "avg_pool2d"):
        for x, words in [(X.bool(), "not implemented for 'Bool'"), (X.to(torch.complex64), "for 'ComplexFloat'")]:
            # torch names its kernel, we name ours
            same_as_torch(lambda: getattr(F, name)(x, 2), lambda: getattr(TF, name)(x, 2), words)  # noqa: B023
    pool_case("max_pool2d", (X.mul(100).long(), 2))  # torch computes integer max pooling; so do we
    pool_case("max_pool2d", (X.mul(100).int(), 3, 2, 1))


# ---------------------------------------------------------------------------- zero-size dims
@case
def zero_size_dimensions():
    conv_case({}, x=torch.randn(0, 2, 8, 8))
    conv_case({}, x=torch.randn(1, 2, 0, 8))
    conv_case(dict(padding=1), x=torch.randn(1, 2, 1, 0))
    conv_case({}, w=torch.randn(0, 2, 3, 3))
    for name in ("max_pool2d", "avg_pool2d"):
        pool_case(name, (torch.randn(0, 2, 8, 8), 2))
        pool_case(name, (torch.randn(1, 0, 8, 8), 2))
        pool_case(name, (torch.randn(1, 2, 0, 8), 2))
        pool_case(name, (torch.randn(2, 0, 8), 2))


# ---------------------------------------------------------------------------- padding strings
@case
def padding_strings():
    conv_case(dict(padding="same", stride=2))
    conv_case(dict(padding="same", stride=(1, 2)))
    for bad in ("SAME", "full", "", " valid"):
        conv_case(dict(padding=bad))
    conv_case(dict(padding="same", dilation=(2, 3)), w=torch.randn(4, 2, 4, 2))  # valid, asymmetric


@case
def pool_padding_over_half_the_kernel():
    for name in ("max_pool2d", "avg_pool2d"):
        pool_case(name, (X, 3), dict(padding=2))
        pool_case(name, (X, (4, 2)), dict(padding=(2, 2)))
        pool_case(name, (X, 3), dict(stride=1, padding=(1, 2)))
    pool_case("max_pool2d", (X, 3), dict(padding=2, dilation=2))  # valid: the effective kernel is 5


@case
def divisor_override_zero():
    pool_case("avg_pool2d", (X, 2), dict(divisor_override=0))
    pool_case("avg_pool2d", (X, 2), dict(divisor_override=0, padding=1, ceil_mode=True))


# ------------------------------------------------------------------------------ special values
def special_input():
    x = torch.randn(2, 3, 9, 9)
    values = [float("nan"), float("inf"), float("-inf"), 3e38, -3e38]
    flat = x.view(-1)
    flat[torch.randperm(flat.numel())[:60]] = torch.tensor(values).repeat(12)
    x[0, 0, :3, :3] = float("-inf")  # a whole window of -inf
    x[0, 1, :3, :3] = 3e38  # sums overflow to inf
    x[1, 2, 3:6, 3:6] = float("nan")
    return x


def gradients_of(fn, tensors, g=None):
    """fn's output and the gradients of <output, g> for fresh leaves with the given values."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    g = torch.randn_like(out) if g is None else g
    return out, g, torch.autograd.grad(out, leaves, g)


def same_nonfinite_pattern(actual, expected):
    """NaN and +-inf exactly where torch has them, the finite rest close (their sums' order may differ)."""
    assert torch.equal(actual.isnan(), expected.isnan())
    assert torch.equal(actual.isposinf(), expected.isposinf()) and torch.equal(actual.isneginf(), expected.isneginf())
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-5, atol=1e-5)


@case
def special_values_pool_gradients():
    # windows holding NaN, +-inf or only -inf: the gradient goes where torch's goes (max pooling follows
    # the index, NaN winning), and avg pooling's does not depend on the values at all
    x = special_input()
    for name, kwargs in [
        ("max_pool2d", dict(kernel_size=2)),
        ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        ("max_pool2d", dict(kernel_size=3, stride=1, dilation=2)),
        ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ]:
        for t in (x, x.contiguous(memory_format=torch.channels_last)):
            ref, g, (expected,) = gradients_of(lambda t: getattr(TF, name)(t, **kwargs), [t])  # noqa: B023
            out, _, (actual,) = gradients_of(lambda t: getattr(F, name)(t, **kwargs), [t], g)  # noqa: B023
            torch.testing.assert_close(out, ref, equal_nan=True)
            torch.testing.assert_close(actual, expected, equal_nan=True)


@case
def special_values_max_pool():
    x = special_input()
    for kwargs in (
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=1, dilation=2),
    ):
        pool_case("max_pool2d", (x,), dict(kwargs, return_indices=True))
        pool_case("max_pool2d", (x.contiguous(memory_format=torch.channels_last),), dict(kwargs, return_indices=True))
        with torch.no_grad():  # the values-only path
            pool_case("max_pool2d", (x,), kwargs)


@case
def special_values_avg_pool():
    x = special_input()
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)):
        out, ref = F.avg_pool2d(x, **kwargs), TF.avg_pool2d(x, **kwargs)
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
        assert torch.equal(out.sign()[ref.isinf()], ref.sign()[ref.isinf()])
        torch.testing.assert_close(out, ref, equal_nan=True)  # finite sums may round differently


@case
def special_values_conv():
    x = special_input()[:, :2]
    # NaN and +-inf: which outputs are NaN or +-inf does not depend on the order of the sums
    # (+inf meeting -inf is NaN either way), so it must be torch's exactly
    nonfinite = x.masked_fill(x.abs() == 3e38, 0.5)
    out, ref = F.conv2d(nonfinite, W, padding=1), TF.conv2d(nonfinite, W, padding=1)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isposinf(), ref.isposinf())
    assert torch.equal(out.isneginf(), ref.isneginf())
    finite = ref.isfinite()
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-5, atol=1e-5)
    # +-3e38 in float32: whether a sum of such terms overflows depends on its order, so compare one
    # term per output (a 1x1 kernel) exactly, and the full sums in float64, where nothing overflows
    big = x.masked_fill(~x.isfinite(), 1.0)
    w1 = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    one = big[:, :1]
    same_as_torch(lambda: F.conv2d(one, w1[:, :1]), lambda: TF.conv2d(one, w1[:, :1]))
    w64 = W.double()
    torch.testing.assert_close(F.conv2d(big.double(), w64, padding=1), TF.conv2d(big.double(), w64, padding=1))
    # gradients: a NaN or +-inf input makes the weight gradient NaN or +-inf exactly where torch's is
    # (a non-finite weight: test_conv2d.py's test_input_gradient_with_a_nonfinite_weight_matches_torch)
    ref, g, expected = gradients_of(lambda x, w: TF.conv2d(x, w, padding=1), [nonfinite, W])
    _, _, actual = gradients_of(lambda x, w: F.conv2d(x, w, padding=1), [nonfinite, W], g)
    for a, e in zip(actual, expected):
        same_nonfinite_pattern(a, e)


# -------------------------------------------------------------------- backward: bad grad_output
@case
def backward_operators_check_grad_output():
    conf = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    good = torch.randn(1, 4, 6, 6)
    for grad, match in [
        (good[..., :5], "grad_output of size"),
        (good.double(), "grad_output of dtype"),
        (good[0], "grad_output of size"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            ops.conv2d_backward(grad, X, W, *conf, [True, True, True])
    pconf = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = ops.max_pool2d_forward(X, *pconf)
    aconf = ([2, 2], [2, 2], [0, 0], False, True, None)
    for grad, match in [(out[..., :3], "grad_output of size"), (out.double(), "grad_output of dtype")]:
        with pytest.raises(RuntimeError, match=match):
            ops.max_pool2d_backward(grad, X, idx, *pconf)
        with pytest.raises(RuntimeError, match=match):
            ops.avg_pool2d_backward(grad, X, *aconf)


@case
def autograd_with_a_hooked_wrong_grad():
    # a hook on the output replaces the incoming gradient with one of the wrong shape or dtype; autograd
    # itself validates it against the output's metadata before any of our backward operators run
    for fn, tfn in [
        (lambda t: F.conv2d(t, W), lambda t: TF.conv2d(t, W)),
        (lambda t: F.max_pool2d(t, 2), lambda t: TF.max_pool2d(t, 2)),
        (lambda t: F.avg_pool2d(t, 2), lambda t: TF.avg_pool2d(t, 2)),
    ]:
        for bad in (lambda g: g[..., :1], lambda g: g.double()):

            def run(f, bad=bad):
                x = X.clone().requires_grad_()
                out = f(x)
                out.register_hook(bad)
                out.sum().backward()
                return x.grad

            same_as_torch(lambda: run(fn), lambda: run(tfn))  # noqa: B023  (called at once)


# --------------------------------------------------------------- indices modified before backward
@case
def pooling_indices_modified_in_place():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    conf = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = ops.max_pool2d_forward(x.detach(), *conf)
    g = torch.randn_like(out)
    # in range: the gradient scatters to wherever the indices say, as torch's backward does
    moved = idx.clone()
    moved[0, 0, 0, 0] = 35
    moved[0, 1] = 7  # every output of a plane onto one input position: the gradients add up
    ref = torch.ops.aten.max_pool2d_with_indices_backward(g, x.detach(), [2, 2], [2, 2], [0, 0], [1, 1], False, moved)
    torch.testing.assert_close(ops.max_pool2d_backward(g, x.detach(), moved, *conf), ref, rtol=0, atol=1e-6)
    # out of range: an error, never a write outside the plane
    for bad in (36, -1, 2**62, -(2**63)):
        wrong = idx.clone()
        wrong[0, 1, 2, 2] = bad
        with pytest.raises(RuntimeError, match="invalid max index"):
            ops.max_pool2d_backward(g, x.detach(), wrong, *conf)
    # through autograd: return_indices hands the saved indices to the user, who changes them in place
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    idx.fill_(100)
    with pytest.raises(RuntimeError, match="modified by an inplace operation|invalid max index"):
        out.sum().backward()


@case
def fused_operator_checks_its_arguments():
    # LeNet's fused conv -> sigmoid -> avg_pool has no torch twin: every bad call must be a clear error
    fused, backward = ops.conv2d_sigmoid_avgpool2d, ops.conv2d_sigmoid_avgpool2d_backward
    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    conf = ([1, 1], [0] * 4, [1, 1], 1)
    for bad in ([0, 2], [-1, 2], [2**50, 2], [7, 7], [2**63 - 1, 1]):
        with pytest.raises(RuntimeError, match="pool_size|Output size is too small"):
            fused(x, w, None, *conf, bad)
    with pytest.raises(RuntimeError, match="too large"):
        fused(x, w, None, [1, 1], [2**50, 0, 0, 0], [1, 1], 1, [2, 2])
    with pytest.raises(RuntimeError, match="scalar type"):
        fused(x, w.double(), None, *conf, [2, 2])
    out, act = fused(x, w, None, *conf, [2, 2])
    for g, a in [(out[..., :2], act), (out, act[..., :3]), (out.double(), act)]:
        with pytest.raises(RuntimeError):
            backward(g, x, w, a, *conf, [2, 2], [True] * 3)
    with pytest.raises(RuntimeError, match="expected a 4D activation"):
        backward(out, x, w, act[0], *conf, [2, 2], [True] * 3)


# ------------------------------------------------------------------------------ the harness
def run_case(name):
    """Runs in the child: one case, "ok" or its exception on one line."""
    torch.manual_seed(0)
    try:
        CASES[name]()
    except BaseException as e:  # noqa: BLE001  (reported by the parent)
        return f"{type(e).__name__}: {e}"
    return "ok"


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.close()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(child, name):
    try:
        result = child.call(run_case, name)
    except ChildCrashed as e:  # the child's stderr, in the captured output, says where
        result = str(e)
    assert result == "ok", result


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40
