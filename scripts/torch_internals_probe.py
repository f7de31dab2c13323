"""Checks, without building lenet_ext, that the installed torch has every private name lenet_ext uses
(lenet_ext/_torch_internals.py) and that each still does what lenet_ext uses it for. Run it under a torch
before adding that version to _torch_internals.CHECKED_ON:

    python scripts/torch_internals_probe.py

Exits 0 and prints the torch version when every check holds; a missing name fails with the door's own
ImportError, naming it; a name that is there but behaves otherwise fails its assertion.
"""

import importlib.util
import pathlib
import sys

import torch

DOOR = pathlib.Path(__file__).resolve().parents[1] / "lenet_ext" / "_torch_internals.py"


def load_door():
    """The door module, loaded from its file alone (importing it resolves every name)."""
    spec = importlib.util.spec_from_file_location("_lenet_ext_torch_internals_probe", DOOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(ti):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)

    # autograd Functions: a single-level Function with backward and jvp works in both modes, and compiled
    # autograd's hook reaches our key through the node
    class Twice(ti.SingleLevelFunction):
        @staticmethod
        def forward(t):
            return t * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

        @staticmethod
        def jvp(ctx, tangent):
            return tangent * 2

    y = Twice.apply(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.full_like(x, 2.0))
    key = y.grad_fn._compiled_autograd_key()
    assert isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], int), key

    # forward mode and torch.func state
    assert not ti.forward_ad_or_transforms_active()
    with torch.autograd.forward_ad.dual_level():
        assert ti.forward_ad_or_transforms_active()
        dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
        tangent = torch.autograd.forward_ad.unpack_dual(Twice.apply(dual)).tangent
        assert torch.equal(tangent, torch.full_like(x, 2.0))
    assert not ti.forward_ad_or_transforms_active()
    seen = []
    torch.func.vmap(lambda t: seen.append(ti.forward_ad_or_transforms_active()) or t)(torch.ones(2))
    assert seen == [True], seen
    assert ti.is_fwd_grad_enabled()
    with ti.set_fwd_grad_enabled(False):
        assert not ti.is_fwd_grad_enabled()
    assert ti.is_fwd_grad_enabled()
    with ti.enable_single_level_autograd_function():
        pass

    # dispatcher
    assert ti.any_requires_grad(None, 1, x) and not ti.any_requires_grad(x.detach(), None)
    with ti.AutoDispatchBelowAutograd():
        assert not torch.ops.aten.mul.Tensor(x, x).requires_grad

    # autocast
    assert not ti.is_any_autocast_enabled()
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ti.is_any_autocast_enabled()
        key = "Autocast" + ti.dispatch_key_for_device("cpu")
        assert key == "AutocastCPU", key
        assert torch.mm(a, a).dtype == torch.bfloat16
        with ti.ExcludeDispatchKeyGuard(ti.DispatchKeySet(getattr(ti.DispatchKey, key))):
            assert torch.mm(a, a).dtype == torch.float32
    assert "Autocast" + ti.dispatch_key_for_device("cuda") == "AutocastCUDA"

    # fake kernels' layouts
    assert ti.suggest_memory_format(x) == torch.contiguous_format
    assert ti.suggest_memory_format(x.to(memory_format=torch.channels_last)) == torch.channels_last


def main():
    ti = load_door()
    probe(ti)
    print(f"torch {torch.__version__}: all {len(ti.NAMES)} private names lenet_ext uses are there and behave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
