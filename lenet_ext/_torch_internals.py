"""Every private torch name lenet_ext uses, behind one door.

torch's public ``torch.library.register_autograd`` is reverse mode only (a forward-mode tangent is
dropped without an error, and ``torch.func.grad`` refuses it), so our operators' Autograd kernels are
built from the pieces torch builds its own from: single-level autograd Functions, the dispatcher's
below-autograd and exclude guards, and torch's forward-mode and torch.func state. None of these is
public API, and a torch release may move any of them. So they are imported here and nowhere else (a
test scans the package for any other use), each with what it is for and the torch versions it was
checked on, and a torch that lacks one fails ``import lenet_ext`` at once with an ImportError that
names it, instead of failing in the middle of a training step.

"Checked on" a version means: the name is there, of the kind we use, and does what we use it for (the
probe at the end of ``scripts/torch_internals_probe.py`` runs each one); on the versions marked
"suite" the whole test suite passed as well.
"""

import importlib

import torch

# The torch versions each name below was checked on (see the docstring). Every name here was checked on
# all of them, so one tuple serves; a name added later and checked on fewer passes its own to resolve().
CHECKED_ON = ("2.11.0 (probe)", "2.13.0 (probe, suite)", "2.14.1 (probe)")

NAMES = {}  # "module.attribute" -> what lenet_ext uses it for: every name resolved here, for the tests


def owner(qualified):
    """The module or object that holds ``qualified``'s last name (the longest prefix that is a module,
    then attributes), and that name; AttributeError or ImportError when the prefix is not there."""
    parts = qualified.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:-1]:
            found = getattr(found, attribute)
        return found, parts[-1]
    raise ImportError(f"no module {parts[0]}")


def resolve(qualified, purpose, checked_on=CHECKED_ON):
    """The object at ``qualified``, recorded in NAMES, or an ImportError that names it, says what
    lenet_ext uses it for and which torch versions had it."""
    NAMES[qualified] = purpose
    try:
        holder, name = owner(qualified)
        return getattr(holder, name)
    except (AttributeError, ImportError):
        raise ImportError(
            f"lenet_ext needs {qualified}, which torch {torch.__version__} does not have ({purpose}). "
            f"It was checked on torch {', '.join(checked_on)}."
        ) from None


# --------------------------------------------------------------------------------- autograd Functions
# The base of our operators' autograd Functions. torch.func builds one of these for each level of a
# user's autograd.Function; ours are applied directly at the level the dispatcher reaches them, where a
# torch.autograd.Function would be sent through torch.func's custom_function_call again (and, from
# torch 2.14 on, find no kernel for it below the transforms).
_SingleLevelFunction = resolve(
    "torch.autograd.function._SingleLevelFunction", "the base of an autograd Function applied at one torch.func level"
)

# Compiled autograd asks each backward node for a key, through this method of the node, which calls its
# Function's _compiled_autograd_key(ctx). torch.autograd.Function defines that as
# (ctx._autograd_function_id,); _SingleLevelFunction does not, so SingleLevelFunction below does.
resolve(
    "torch.autograd.function.BackwardCFunction._compiled_autograd_key",
    "the hook through which compiled autograd asks a Function for its key",
)
# _autograd_function_id: set by torch's FunctionMeta on every Function's ctx (backward node) class, one
# per Function; a probe Function (at the end of this module) finds out whether this torch still sets it.
_FUNCTION_ID = "_autograd_function_id"
NAMES[f"ctx.{_FUNCTION_ID}"] = "the per-Function id that compiled autograd keys a Function's backward by"


class SingleLevelFunction(_SingleLevelFunction):
    """_SingleLevelFunction, keyed for compiled autograd as torch.autograd.Function is."""

    @staticmethod
    def _compiled_autograd_key(ctx):
        return (getattr(ctx, _FUNCTION_ID),)


# ------------------------------------------------------------------------- forward mode and torch.func
# Whether forward-mode gradients are being recorded: our Autograd kernel saves it, and the Function's
# forward restores it before re-dispatching, for the torch.func levels below.
is_fwd_grad_enabled = resolve(
    "torch._C._is_fwd_grad_enabled", "whether forward-mode gradients are recorded, saved across a Function"
)
# The context manager that sets it back (torch.autograd.Function turns it off around forward).
set_fwd_grad_enabled = resolve(
    "torch.autograd.forward_ad._set_fwd_grad_enabled", "restores forward-mode recording inside a Function"
)
# Lets a _SingleLevelFunction be applied while torch.func transforms are active (torch refuses it
# otherwise, expecting only its own per-level Functions there).
enable_single_level_autograd_function = resolve(
    "torch._functorch.utils.enable_single_level_autograd_function",
    "allows applying a single-level Function under torch.func transforms",
)
# Whether any torch.func transform (grad, vjp, jvp, vmap, ...) is active.
_are_functorch_transforms_active = resolve(
    "torch._C._are_functorch_transforms_active", "whether a torch.func transform is active"
)
# The innermost open forward-mode dual level (-1: none). A module global torch rebinds as levels open and
# close, so it is read through the module on each call, never imported by value.
_forward_ad = torch.autograd.forward_ad
resolve("torch.autograd.forward_ad._current_level", "the open forward-mode dual level, -1 when none")


def forward_ad_or_transforms_active():
    """Whether forward mode (a dual level is open, so an input may carry a tangent) or a torch.func
    transform may be in play: the one test that sends a call to the Autograd kernel's full path."""
    return _forward_ad._current_level >= 0 or _are_functorch_transforms_active()


# ----------------------------------------------------------------------------------------- dispatcher
# Whether any argument is a tensor that requires grad, in one C++ call (the reverse-mode shortcut's test).
any_requires_grad = resolve("torch._C._any_requires_grad", "whether any argument requires grad, in one call")
# The guard under which a call skips every Autograd key, as ATen's own autograd kernels re-dispatch.
AutoDispatchBelowAutograd = resolve(
    "torch._C._AutoDispatchBelowAutograd", "re-dispatches an operator below the Autograd keys"
)

# ------------------------------------------------------------------------------------------- autocast
# Whether autocast is on for any device: one query, where asking per device costs ten times that.
is_any_autocast_enabled = resolve("torch._C._is_any_autocast_enabled", "whether autocast is on for any device")
# The dispatch key name of a device's autocast ("CPU" -> "AutocastCPU" is built from it).
dispatch_key_for_device = resolve(
    "torch._C._dispatch_key_for_device", "a device type's dispatch key name, for its Autocast key"
)
DispatchKey = resolve("torch._C.DispatchKey", "the dispatch key enum, to name a device's Autocast key")
DispatchKeySet = resolve("torch._C.DispatchKeySet", "a set of dispatch keys, to exclude the Autocast key")
# Excludes the Autocast key while our autocast kernel re-dispatches with cast arguments.
ExcludeDispatchKeyGuard = resolve(
    "torch._C._ExcludeDispatchKeyGuard", "excludes a dispatch key while an autocast kernel re-dispatches"
)

# ------------------------------------------------------------------------------------ legacy vmap
# autograd's batched gradients (is_grads_batched, vectorized jacobian/hessian, check_batched_grad) run the
# backward under torch._vmap_internals' vmap, whose BatchedTensors carry the `Batched` key; ops/vmap.py
# gives every operator a kernel there. Present on 2.11.0 and 2.14.1 (and is_legacy_batchedtensor telling a
# legacy-vmapped tensor on 2.11.0); the suite ran on 2.13.0.
_LEGACY_VMAP_CHECKED_ON = ("2.11.0 (present)", "2.13.0 (suite)", "2.14.1 (present)")
# Whether a tensor is one of legacy vmap's BatchedTensors (functorch's own are told by is_batchedtensor).
is_legacy_batchedtensor = resolve(
    "torch._C._functorch.is_legacy_batchedtensor", "tells legacy vmap's BatchedTensors apart",
    _LEGACY_VMAP_CHECKED_ON,
)
# Unwraps one level: its batch dimension moved to out_dim; a tensor without that level comes back
# expanded to batch_size there (ATen's native/Batching.cpp). Python reaches no other view of the levels.
remove_batch_dim = resolve(
    "torch._remove_batch_dim", "unwraps one level of a legacy vmap BatchedTensor", _LEGACY_VMAP_CHECKED_ON
)
# Wraps a dimension as a level's batch dimension, as torch._vmap_internals does with each input; levels
# are added in increasing order.
add_batch_dim = resolve(
    "torch._add_batch_dim", "wraps a dimension as a legacy vmap level's batch dimension", _LEGACY_VMAP_CHECKED_ON
)

# ------------------------------------------------------------------------------------------ fake kernels
# torch's memory-format rule for a tensor (channels_last when its strides are NHWC), safe on fake and
# symbolic shapes, as our fake kernels need to mirror the real kernels' result layouts.
suggest_memory_format = resolve(
    "torch._prims_common.suggest_memory_format", "a tensor's memory format, for the fake kernels' layouts"
)


# ---------------------------------------------------------------------------------------------- probe
# Last, once every name above is found (torch's own Function.apply uses some of them).
class _Probe(SingleLevelFunction):
    @staticmethod
    def forward(x):
        return x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass


def _check_function_id():
    x = torch.zeros((), requires_grad=True)
    node = _Probe.apply(x).grad_fn
    if not hasattr(node, _FUNCTION_ID):
        raise ImportError(
            f"lenet_ext needs an autograd Function's ctx to carry {_FUNCTION_ID}, which torch {torch.__version__} "
            f"does not set ({NAMES[f'ctx.{_FUNCTION_ID}']}). It was checked on torch {', '.join(CHECKED_ON)}."
        )


with torch.inference_mode(False), torch.enable_grad():  # recorded even if lenet_ext is imported under either
    _check_function_id()
