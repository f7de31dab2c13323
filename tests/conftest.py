"""Shared fixtures: every test that takes `device` runs on the CPU and, when a GPU is present, on CUDA."""

import pytest
import torch

import lenet_ext  # noqa: F401  (registers the operators)

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
