"""Shared fixtures: every test that takes `device` runs on the CPU and, when a GPU is present, on CUDA.

Every test runs with TF32 off: torch's cuDNN convolutions use TF32 for float32 by default on Ampere and
later GPUs, so F.conv2d on CUDA would not be a float32 reference (our kernels compute full float32).

Pooling tests take `pool_device` instead: on CUDA they run once with each CUDA pooling kernel family
(CUDA_POOL_KERNELS: the planar kernels, the native channels_last ones of lenet_ext.backends.cuda_pool_layout
and the planar forwards by runs of lenet_ext.backends.cuda_pool_planar), so a GPU run checks them all.
"""

import contextlib

import pytest
import torch

import torch_guard

import lenet_ext  # noqa: F401  (registers the operators)
from lenet_ext.backends import cuda_pool_layout, cuda_pool_planar, tf32_disabled

# torch's CPU max_pool2d backward corrupts the heap on windows of only padding: never in a worker's process
torch_guard.install()

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# The CUDA pooling kernel families: name -> (cuda_pool_layout, cuda_pool_planar). The default first; the
# names of the opt-in ones are the test-id markers scripts/gpu_check.sh counts.
CUDA_POOL_KERNELS = {"planar": ("planar", "outputs"), "native": ("native", "outputs"), "runs": ("planar", "runs")}


@contextlib.contextmanager
def cuda_pool_kernels(name):
    layout, planar = CUDA_POOL_KERNELS[name]
    with cuda_pool_layout(layout), cuda_pool_planar(planar):
        yield name


# (device, CUDA pooling kernel family)
POOL_DEVICES = [pytest.param(("cpu", None), id="cpu")] + [
    pytest.param(("cuda", name), id="cuda" if name == "planar" else f"cuda-{name}", marks=needs_cuda)
    for name in CUDA_POOL_KERNELS
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=POOL_DEVICES)
def pool_device(request):
    device, kernels = request.param
    if kernels is None:
        yield device
        return
    with cuda_pool_kernels(kernels):
        yield device


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Our float32 kernels are full float32; so must every torch reference be."""
    with tf32_disabled():
        yield
