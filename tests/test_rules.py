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
