"""Determinism and thread safety: the same call twice is bitwise identical (values and every gradient)
on the CPU at 1 and 2 intra-op threads; calls from several Python threads at once are correct; on CUDA
the same holds, or the operator raises under torch.use_deterministic_algorithms(True)."""

import concurrent.futures

import pytest
import torch
import torch.nn.functional as TF
from common import assert_close, to_layout

import lenet_ext.functional as F


# Each returns (output, indices or None): max pooling's indices must repeat too, they route the gradient.
def _conv(x, w, b):
    return F.conv2d(x, w, b, stride=(1, 2), padding=1, dilation=(2, 1), groups=2), None


def _conv_direct(x, w, b):  # stride 1, few output channels: the direct kernel under "auto"
    return F.conv2d(x, w, b, padding="same"), None


def _max(x, w, b):
    return F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)


def _avg(x, w, b):
    return F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), None


OPS = {"conv2d": _conv, "conv2d_direct": _conv_direct, "max_pool2d": _max, "avg_pool2d": _avg}
TORCH_OPS = {
    "conv2d": lambda x, w, b: TF.conv2d(x, w, b, stride=(1, 2), padding=1, dilation=(2, 1), groups=2),
    "conv2d_direct": lambda x, w, b: TF.conv2d(x, w, b, padding="same"),
    "max_pool2d": lambda x, w, b: TF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_pool2d": lambda x, w, b: TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
}


def _inputs(device, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = to_layout(torch.randn(6, 4, 17, 15, generator=g), layout).to(device)
    w = torch.randn(6, 2, 3, 3, generator=g).to(device)
    b = torch.randn(6, generator=g).to(device)
    return [t.requires_grad_() for t in (x, w, b)]


def _run(name, device, layout="contiguous", seed=0):
    x, w, b = _inputs(device, layout, seed)
    if name == "conv2d_direct":
        w = w.detach().repeat(1, 2, 1, 1).requires_grad_()  # 6 x 4 x 3 x 3: no groups
    out, idx = OPS[name](x, w, b)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    wanted = [x, w, b] if name.startswith("conv") else [x]
    grads = torch.autograd.grad(out, wanted, g)
    return out.detach(), grads + ((idx,) if idx is not None else ()), (x, w, b, g)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", list(OPS))
def test_same_call_twice_is_bitwise_identical_on_cpu(name, num_threads, layout, threads):
    threads(num_threads)
    out1, grads1, _ = _run(name, "cpu", layout)
    out2, grads2, _ = _run(name, "cpu", layout)
    assert torch.equal(out1, out2)
    for a, b in zip(grads1, grads2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(OPS))
def test_calls_from_several_python_threads(name, threads):
    threads(2)
    seeds = list(range(8))
    expected = {s: _run(name, "cpu", seed=s) for s in seeds}  # one at a time first
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(seeds, pool.map(lambda s: _run(name, "cpu", seed=s), seeds)))
    for s in seeds:
        out, grads, (x, w, b, g) = results[s]
        # the same answer as alone, and torch's answer
        assert_close(out, expected[s][0], rtol=1e-6, atol=1e-6)
        for a, e in zip(grads, expected[s][1]):
            if e.dtype == torch.int64:
                assert torch.equal(a, e)
            else:
                assert_close(a, e, rtol=1e-6, atol=1e-6)
        ref = TORCH_OPS[name](x, w, b)
        assert_close(out, ref.detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", list(OPS))
def test_cuda_is_deterministic_or_says_so(name):
    try:
        torch.use_deterministic_algorithms(True)
        results = [_run(name, "cuda") for _ in range(2)]
    except RuntimeError as e:
        assert "deterministic" in str(e)
        return
    finally:
        torch.use_deterministic_algorithms(False)
    (out1, grads1, _), (out2, grads2, _) = results
    assert torch.equal(out1, out2)
    for a, b in zip(grads1, grads2):
        assert torch.equal(a, b)
