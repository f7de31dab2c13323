"""Private torch names stay behind one door (lenet_ext/_torch_internals.py), and a torch without one of
them fails ``import lenet_ext`` at once, naming it."""

import ast
import pathlib
import runpy
import subprocess
import sys
import textwrap

import pytest

from lenet_ext import _torch_internals

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lenet_ext"
DOOR = PACKAGE / "_torch_internals.py"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node):
    """``a.b.c`` for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def private_torch_uses(source, door_attributes=frozenset()):
    """Each use of a private torch name in ``source``, as (line, what): an import of or from a private
    torch module or name; an attribute chain through a torch module (under any name it was imported as)
    with a private step, except our own operators under torch.ops; and any attribute named like one the
    door resolves (``ctx._autograd_function_id`` is private to torch whatever ``ctx`` is called)."""
    tree = ast.parse(source)
    aliases = {}  # a local name -> the torch module or object it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch" or alias.name.startswith("torch."):
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append((node.lineno, f"import {alias.name}"))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases["torch"] = "torch"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "torch" or node.module.startswith("torch."):
                for alias in node.names:
                    qualified = f"{node.module}.{alias.name}"
                    if any(_private(p) for p in qualified.split(".")):
                        found.append((node.lineno, f"from {node.module} import {alias.name}"))
                    aliases[alias.asname or alias.name] = qualified
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in door_attributes:
            found.append((node.lineno, f".{node.attr}"))
            continue
        dotted = _dotted(node)
        if dotted is None:
            continue
        head, *rest = dotted.split(".")
        if head not in aliases:
            continue
        qualified = ".".join([aliases[head], *rest])
        if qualified.startswith("torch.ops."):
            continue  # our own operators, torch.ops.lenet_ext._accepts_dtype and the like
        # only the step this node adds: a longer chain reports its own first private step once
        if _private(node.attr) and not any(_private(p) for p in qualified.split(".")[:-1]):
            found.append((node.lineno, qualified))
    return sorted(set(found))


def _door_attributes():
    return frozenset(name.rsplit(".", 1)[1] for name in _torch_internals.NAMES if _private(name.rsplit(".", 1)[1]))


def test_no_module_but_the_door_touches_private_torch_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == DOOR:
            continue
        for line, what in private_torch_uses(path.read_text(), _door_attributes()):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not offenders, "private torch names outside lenet_ext/_torch_internals.py:\n" + "\n".join(offenders)


def test_the_scan_finds_each_kind_of_use():
    """The scan above passes because nothing is there, not because it cannot see."""
    source = textwrap.dedent(
        """
        import torch
        import torch._prims_common
        import torch.autograd.forward_ad as fwd
        from torch import _C
        from torch._functorch.utils import enable_single_level_autograd_function
        from torch.autograd.function import _SingleLevelFunction
        from torch.autograd import forward_ad

        torch._C._any_requires_grad(x)
        fwd._current_level
        forward_ad._set_fwd_grad_enabled(True)
        ctx._autograd_function_id
        torch.ops.lenet_ext._accepts_dtype("conv2d_forward", torch.float32)
        torch.__version__
        torch.nn.functional.conv2d
        """
    )
    uses = private_torch_uses(source, _door_attributes())
    assert sorted({line for line, _ in uses}) == [3, 5, 6, 7, 10, 11, 12, 13], uses


def test_every_private_name_the_package_uses_is_resolved_by_the_door():
    names = _torch_internals.NAMES
    for expected in (
        "torch.autograd.function._SingleLevelFunction",
        "torch._C._is_fwd_grad_enabled",
        "torch._functorch.utils.enable_single_level_autograd_function",
        "torch.autograd.forward_ad._current_level",
        "torch.autograd.forward_ad._set_fwd_grad_enabled",
        "torch._C._are_functorch_transforms_active",
        "torch._C._any_requires_grad",
        "torch._C._AutoDispatchBelowAutograd",
        "torch._C._is_any_autocast_enabled",
        "torch._C._ExcludeDispatchKeyGuard",
        "torch._prims_common.suggest_memory_format",
        "ctx._autograd_function_id",
    ):
        assert expected in names
    assert all(purpose for purpose in names.values())


@pytest.mark.parametrize(
    "qualified",
    ["torch._C._no_such_name_in_any_torch", "torch.autograd.forward_ad._no_such_name", "torch._no_such_module.f"],
)
def test_a_missing_name_raises_an_import_error_naming_it(qualified):
    names = dict(_torch_internals.NAMES)
    try:
        with pytest.raises(ImportError, match=qualified.replace(".", r"\.")) as raised:
            _torch_internals.resolve(qualified, "a purpose")
        assert "a purpose" in str(raised.value) and "2.13.0" in str(raised.value)
    finally:
        _torch_internals.NAMES.clear()
        _torch_internals.NAMES.update(names)


# Removes each name the door resolves from torch in turn, then imports lenet_ext afresh: each import must
# fail with an ImportError that names what was removed. Last, with every name back, the import succeeds,
# even under inference mode.
_REMOVE_EACH = """
import importlib.util, sys
import torch
import torch.autograd.function

# the door's list of names, read from its file without importing lenet_ext (whose operators may be
# registered once per process: the import that succeeds at the end must be the first)
spec = importlib.util.spec_from_file_location("door", "lenet_ext/_torch_internals.py")
door = importlib.util.module_from_spec(spec)
spec.loader.exec_module(door)
names = [n for n in door.NAMES if not n.startswith("ctx.")]

def import_fails_naming(removed):
    try:
        import lenet_ext  # noqa: F401
    except ImportError as e:
        assert removed in str(e), (removed, str(e))
    else:
        raise AssertionError(f"import lenet_ext succeeded without {removed}")
    finally:
        for name in list(sys.modules):
            if name == "lenet_ext" or name.startswith("lenet_ext."):
                del sys.modules[name]

for qualified in names:
    owner, attribute = door.owner(qualified)
    saved = owner.__dict__[attribute]
    delattr(owner, attribute)
    try:
        import_fails_naming(qualified)
    finally:
        setattr(owner, attribute, saved)

# a torch whose Functions' ctx carries no _autograd_function_id
meta = torch.autograd.function.FunctionMeta
original_init = meta.__init__
def init_without_id(cls, name, bases, attrs):
    original_init(cls, name, bases, attrs)
    del cls._backward_cls._autograd_function_id
meta.__init__ = init_without_id
try:
    import_fails_naming("_autograd_function_id")
finally:
    meta.__init__ = original_init

with torch.inference_mode():  # the door's probe Function still records its graph
    import lenet_ext  # noqa: F401
print(len(names) + 1, "names")
"""


def test_import_fails_at_once_naming_each_missing_name():
    result = subprocess.run([sys.executable, "-c", _REMOVE_EACH], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_torch_internals.NAMES)} names" in result.stdout


def test_each_name_does_what_the_package_uses_it_for():
    """The probe run on each torch before it joins CHECKED_ON, here on the installed one."""
    probe = runpy.run_path(str(ROOT / "scripts" / "torch_internals_probe.py"))
    probe["probe"](_torch_internals)
