"""Shared fixtures: every test that takes `device` runs on the CPU and, when a GPU is present, on CUDA.

Every test runs with TF32 off: torch's cuDNN convolutions use TF32 for float32 by default on Ampere and
later GPUs, so F.conv2d on CUDA would not be a float32 reference (our kernels compute full float32).

Pooling tests take `pool_device` instead: on CUDA they run once with each of the CUDA pooling kernel
families for channels_last inputs (lenet_ext.backends.cuda_pool_layout), so a GPU run checks both.
"""

import pytest
import torch

import lenet_ext  # noqa: F401  (registers the operators)
from lenet_ext.backends import CUDA_POOL_LAYOUTS, cuda_pool_layout, tf32_disabled

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# (device, CUDA pooling kernels for channels_last)
POOL_DEVICES = [pytest.param(("cpu", None), id="cpu")] + [
    pytest.param(("cuda", layout), id="cuda" if layout == "planar" else f"cuda-{layout}", marks=needs_cuda)
    for layout in CUDA_POOL_LAYOUTS
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=POOL_DEVICES)
def pool_device(request):
    device, layout = request.param
    if layout is None:
        yield device
        return
    with cuda_pool_layout(layout):
        yield device


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Our float32 kernels are full float32; so must every torch reference be."""
    with tf32_disabled():
        yield
