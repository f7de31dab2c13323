"""The operators' argument rules (csrc/checks.h) hold on every path: the CPU kernels, the CUDA kernels
and the fake kernels that torch.compile traces. Each path must accept the same inputs and reject the
others with the same exception type and the same words."""

import pytest
import torch
import torch.nn.functional as F
from common import assert_no_worse_than_torch, clone_leaf, grads, make_input
from conftest import HAS_CUDA
from torch._subclasses.fake_tensor import FakeTensorMode

from lenet_ext import functional as LF
from lenet_ext.ops import ACCEPTED_DTYPES

ops = torch.ops.lenet_ext
FLOATS = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
ALL_DTYPES = sorted(FLOATS | {torch.bool, torch.uint8, torch.int32, torch.int64, torch.complex64}, key=str)
PATHS = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")), "fake"]
CONV_CONF = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
# torch's names for dtypes in its NotImplementedError messages (c10::toString)
_C10_NAMES = {
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.complex64: "ComplexFloat",
}


def test_conv_dtype_table():
    # torch's own convolution takes these four on the CPU and on CUDA; so do ours, on both.
    assert ACCEPTED_DTYPES["conv2d_forward"] == FLOATS
    assert ACCEPTED_DTYPES["conv2d_backward"] == FLOATS


def _conv_call(name, x, w):
    if name == "conv2d_forward":
        return ops.conv2d_forward(x, w, None, *CONV_CONF)
    grad = torch.zeros((*x.shape[:-3], w.shape[0], *x.shape[-2:]), dtype=x.dtype, device=x.device)
    return ops.conv2d_backward(grad, x, w, *CONV_CONF, [True, True, False])[0]


def _outcome(name, x, w):
    """(exception type, first message line) of the call, or (None, result dtype)."""
    try:
        return None, _conv_call(name, x, w).dtype
    except Exception as e:  # noqa: BLE001
        return type(e), str(e).split("\n")[0]


@pytest.mark.parametrize("name", ["conv2d_forward", "conv2d_backward"])
def test_every_conv_path_accepts_the_same_inputs_in_the_same_words(name):
    # The CPU path is the reference; the fake kernels and CUDA must agree with it call by call.
    outcomes = {}
    for path in ["cpu", "fake"] + (["cuda"] if HAS_CUDA else []):
        mode = FakeTensorMode() if path == "fake" else None
        device = "cpu" if path == "fake" else path
        results = []
        for dtype in ALL_DTYPES:
            for x_shape, w_shape in [
                ((1, 2, 5, 5), (3, 2, 3, 3)),
                ((2, 5, 5), (3, 2, 3, 3)),
                ((1, 2, 5, 5), (3, 2, 3)),
            ]:
                x = torch.zeros(x_shape, device=device).to(dtype)
                w = torch.zeros(w_shape, device=device).to(dtype)
                with mode or torch.no_grad():
                    args = (mode.from_tensor(x), mode.from_tensor(w)) if mode else (x, w)
                    results.append(((dtype, x_shape, w_shape), _outcome(name, *args)))
        outcomes[path] = results
    for (dtype, x_shape, w_shape), (error, what) in outcomes["cpu"]:
        if len(x_shape) != 4:
            assert error is RuntimeError
            assert what == f"{name}: expected a 4D input (N, C, H, W), but got input of size: {list(x_shape)}"
        elif len(w_shape) != 4:
            assert error is RuntimeError and what.startswith(f"{name}: expected a 4D weight")
        elif dtype in FLOATS:
            assert (error, what) == (None, dtype)
        else:
            assert error is NotImplementedError
            assert what == f"\"{name}\" not implemented for '{_C10_NAMES[dtype]}'"
    for path, results in outcomes.items():
        assert results == outcomes["cpu"], path


def test_conv_float16_on_the_cpu_matches_torch():
    # torch's CPU convolution takes float16; ours computes it in float32 and rounds once, like bfloat16.
    x = make_input((2, 3, 9, 8), torch.float16, "cpu", requires_grad=True)
    w = make_input((4, 3, 3, 3), torch.float16, "cpu", requires_grad=True)
    b = make_input((4,), torch.float16, "cpu", requires_grad=True)
    kw = dict(stride=(1, 2), padding=1)
    ours_in = [clone_leaf(t) for t in (x, w, b)]
    exact_in = [clone_leaf(t.double()) for t in (x, w, b)]
    expected, actual, exact = F.conv2d(x, w, b, **kw), LF.conv2d(*ours_in, **kw), F.conv2d(*exact_in, **kw)
    assert actual.dtype == torch.float16 and actual.shape == expected.shape
    assert_no_worse_than_torch(actual, expected, exact)
    g = torch.randn_like(expected)
    theirs, ours, exacts = grads(expected, [x, w, b], g), grads(actual, ours_in, g), grads(exact, exact_in, g.double())
    for a, e, ex in zip(ours, theirs, exacts):
        assert a.dtype == torch.float16
        assert_no_worse_than_torch(a, e, ex)


def test_gradient_checks_name_the_operator():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match=r"^conv2d_backward: expected grad_output of size \[1, 3, 3, 3\]"):
        ops.conv2d_backward(torch.randn(1, 3, 4, 4), x, w, [1, 1], [0] * 4, [1, 1], 1, [True] * 3)
    with pytest.raises(RuntimeError, match="^conv2d_backward: expected grad_output of dtype Float, but got Double"):
        ops.conv2d_backward(torch.randn(1, 3, 3, 3).double(), x, w, [1, 1], [0] * 4, [1, 1], 1, [True] * 3)
    out, act = ops.conv2d_sigmoid_avgpool2d(x, w, None, [1, 1], [0] * 4, [1, 1], 1, [1, 1])
    with pytest.raises(RuntimeError, match="^conv2d_sigmoid_avgpool2d_backward: expected grad_output of dtype"):
        ops.conv2d_sigmoid_avgpool2d_backward(out.double(), x, w, act, [1, 1], [0] * 4, [1, 1], 1, [1, 1], [True] * 3)


# ---------------------------------------------------------------------------------- calls checked before
# functional remembers the signatures (shapes, dtypes, devices, argument values and their exact types)
# whose checks passed, and skips the checks for them. A call that differs in anything the checks read
# must be checked again, and raise as torch does.
def _raises_like_torch(ours, theirs):
    with pytest.raises(Exception) as expected:
        theirs()
    with pytest.raises(type(expected.value)):
        ours()


def test_a_checked_signature_does_not_admit_a_different_call():
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    assert LF.conv2d(x, w, b, stride=1, padding=1).shape == (2, 4, 8, 8)  # remembered
    for kwargs in (
        dict(stride=1.0, padding=1),
        dict(stride=True, padding=1),
        dict(stride=(True, 1), padding=1),
        dict(stride=1, padding=(1, 1.5)),
        dict(padding=1, groups=True),
        dict(padding=True),
        dict(padding=1, dilation=True),
    ):
        _raises_like_torch(lambda: LF.conv2d(x, w, b, **kwargs), lambda: F.conv2d(x, w, b, **kwargs))  # noqa: B023
    for bad in (torch.randn(5), torch.randn(4, dtype=torch.float64)):
        _raises_like_torch(lambda: LF.conv2d(x, w, bad, padding=1), lambda: F.conv2d(x, w, bad, padding=1))  # noqa: B023
    with pytest.raises(RuntimeError, match="should be the same"):  # torch computes this one; we refuse (bad_inputs)
        LF.conv2d(x, w, torch.randn(4, device="meta"), padding=1)
    _raises_like_torch(lambda: LF.conv2d(x[:, :2], w, b, padding=1), lambda: F.conv2d(x[:, :2], w, b, padding=1))

    assert LF.max_pool2d(x, 2, ceil_mode=True).shape == (2, 3, 4, 4)
    _raises_like_torch(lambda: LF.max_pool2d(x, 2, ceil_mode=1), lambda: F.max_pool2d(x, 2, ceil_mode=1))
    _raises_like_torch(lambda: LF.max_pool2d(x, 2.0), lambda: F.max_pool2d(x, 2.0))
    assert LF.avg_pool2d(x, 2, divisor_override=3).shape == (2, 3, 4, 4)
    _raises_like_torch(lambda: LF.avg_pool2d(x, 2, divisor_override=0), lambda: F.avg_pool2d(x, 2, divisor_override=0))
    _raises_like_torch(lambda: LF.avg_pool2d(x[0, 0], 2), lambda: F.avg_pool2d(x[0, 0], 2))


def test_a_checked_signature_skips_the_checks(monkeypatch):
    from lenet_ext import functional

    checks = []
    for name in ("_checked_conv_args", "_checked_max_pool_args", "_checked_avg_pool_args"):
        original = getattr(functional, name)
        monkeypatch.setattr(functional, name, lambda *a, _f=original, _n=name: checks.append(_n) or _f(*a))
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    for call in (
        lambda t: LF.conv2d(t, w, None, (2, 1), 1),
        lambda t: LF.max_pool2d(t, 3, 2, 1, ceil_mode=True),
        lambda t: LF.avg_pool2d(t, [2, 2], None, 1, False, False, 3),
    ):
        checks.clear()
        first, again = call(x), call(x.clone())
        assert len(checks) == 1 and torch.equal(first, again)
        call(x[:1])  # another shape: checked again
        call(x.to(memory_format=torch.channels_last)[..., :8, :])
        assert len(checks) == 3


def test_autocast_calls_are_checked_with_their_casts():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    assert LF.conv2d(x, w).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = LF.conv2d(x, w), F.conv2d(x, w)
        # with autocast on, a float64 bias joins bfloat16 tensors: torch raises, so must we
        _raises_like_torch(
            lambda: LF.conv2d(x, w, torch.randn(4).double()), lambda: F.conv2d(x, w, torch.randn(4).double())
        )
    assert ours.dtype == theirs.dtype == torch.bfloat16
