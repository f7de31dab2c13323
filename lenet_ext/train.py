"""Trains a LeNet made of lenet_ext layers, step for step beside its built-in twin.

The twin (the same network from ``torch.nn`` layers) starts from the same weights and sees the same
batches in the same order, one step of ours then one of its, so any difference in losses, accuracies or
speed comes from the layers alone. Each step is timed on its own, which makes the two throughputs a
side-by-side comparison under the same machine load.

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel with ``DistributedDataParallel``: gloo on
the CPU, nccl on CUDA. Every rank shuffles the same way and takes its own slice of each epoch, and
``--batch-size`` is per process, as usual for DDP.

On CUDA, ``--cuda-graph`` captures each network's whole training step (forward, backward and optimizer
step) as one CUDA graph after a few eager warm-up steps, and replays it for every batch, so the host no
longer launches each kernel; both networks are replayed alike. Graphs have fixed shapes, so an epoch's
last, partial batch is left out (for both networks).

Checkpoints are the model's ``state_dict`` itself, so either network's ``load_state_dict`` accepts one
directly; what ``--resume`` needs besides (optimizer state, epochs done, history) rides in the
state_dict's ``_metadata`` under a key no module path can have, which ``load_state_dict`` ignores.
"""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as torch_F
from torch.nn.parallel import DistributedDataParallel

try:
    from tqdm import tqdm
except ImportError:  # a bare install (the GPU check installs with --no-deps): train without a progress bar

    class tqdm:  # noqa: N801  (stands in for tqdm.tqdm)
        write = staticmethod(print)

        def __init__(self, iterable, **_):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)


from . import backends
from .backends import tf32_disabled
from .data import load_digits
from .models import MODELS, builtin_twin

__all__ = ["TrainConfig", "load_checkpoint", "save_checkpoint", "train"]

CHECKPOINT_KEY = "lenet_ext.checkpoint"
TARGET_ACCURACY = 0.95


@dataclass
class TrainConfig:
    """Everything a run depends on; the defaults reach >= 95% on the bundled digits in well under a minute."""

    model: str = "lenet"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 4e-3
    optimizer: str = "adam"
    device: str = "cpu"
    seed: int = 0
    data_dir: str | None = None
    compare_builtin: bool = True
    limit: int | None = None  # use only the first N digits of each split (quick runs)
    save: str | None = None
    resume: str | None = None
    progress: bool | None = None  # None: show progress bars when stdout is a terminal
    cuda_graph: bool = False  # CUDA, one process: replay each training step as a CUDA graph (full batches only)


@dataclass
class _Side:
    """One network in training: ours or the twin, with its optimizer and the current epoch's tallies."""

    prefix: str  # of its keys in the metrics: "" for ours, "builtin_" for the twin
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step_seconds: float = 0.0
    images: int = 0
    losses: list = field(default_factory=list)
    correct: torch.Tensor | int = 0  # this epoch's correct predictions, summed on the device
    graphed: "_GraphedStep | None" = None


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path, model, optimizer, epoch, config, history):
    """Writes ``model``'s state_dict (plus resume state in its metadata) to ``path`` atomically."""
    state = _unwrap(model).state_dict()
    state._metadata[CHECKPOINT_KEY] = {
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "model": config.model,
        "history": history,
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # readers see the old checkpoint or the new one, never half of one


def load_checkpoint(path):
    """``(state_dict, resume_state)``; ``resume_state`` is None for a plain state_dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    resume = getattr(state, "_metadata", {}).get(CHECKPOINT_KEY)
    return state, resume


# ----------------------------------------------------------------------------------------- the training
def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _make_optimizer(name, params, lr, capturable=False):
    """capturable: the optimizer's step can be captured in a CUDA graph (Adam keeps its step count on the
    device then)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, capturable=capturable)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def _epoch_order(n, seed, epoch, rank, world):
    """This rank's sample order for one epoch; seeded by (seed, epoch) so a resumed run sees the same."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    usable = n - n % world  # every rank must take the same number of steps, or DDP would wait forever
    return order[rank:usable:world]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward_backward_step(side, x, y):
    out = side.model(x)
    loss = torch_F.cross_entropy(out, y)
    loss.backward()
    side.optimizer.step()
    return out, loss


class _GraphedStep:
    """One network's training step replayed as a CUDA graph (torch.cuda.graph's whole-network recipe).

    Each call copies the batch into static input tensors. The first WARMUP calls run the step eagerly on a
    side stream, as capture requires (allocator pools, cuDNN's choices, the optimizer's state); the next
    one captures forward, backward and optimizer step with the gradients unset, so the captured backward
    writes them, and every call from then on replays the graph. The returned output and loss are the
    graph's static tensors: read them before the next call.
    """

    WARMUP = 3

    def __init__(self, side, x, y):
        self.side = side
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.calls = 0
        self.graph = None
        self.out = self.loss = None

    def __call__(self, x, y):
        self.x.copy_(x)
        self.y.copy_(y)
        self.calls += 1
        if self.calls <= self.WARMUP:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.side.optimizer.zero_grad(set_to_none=True)
                out, loss = _forward_backward_step(self.side, self.x, self.y)
            torch.cuda.current_stream().wait_stream(stream)
            return out, loss
        if self.graph is None:
            self.side.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out, self.loss = _forward_backward_step(self.side, self.x, self.y)
        self.graph.replay()
        return self.out, self.loss


def _step(side, x, y, device):
    _sync(device)
    start = time.perf_counter()
    if side.graphed is not None:
        out, loss = side.graphed(x, y)
    else:
        side.optimizer.zero_grad(set_to_none=True)
        out, loss = _forward_backward_step(side, x, y)
    _sync(device)
    side.step_seconds += time.perf_counter() - start
    side.images += len(y)
    side.losses.append(loss.detach().clone())  # a replayed graph overwrites its loss
    side.correct = side.correct + (out.argmax(1) == y).sum()  # no host sync per step


@torch.no_grad()
def _evaluate(model, data, batch_size=1000):
    model.eval()
    correct = sum(
        int((model(data.images[i : i + batch_size]).argmax(1) == data.labels[i : i + batch_size]).sum())
        for i in range(0, len(data), batch_size)
    )
    model.train()
    return correct / max(len(data), 1)


def _all_reduce_sum(values, device, world):
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _param_spread(model):
    """Largest difference of any parameter across ranks: DDP must keep it at exactly zero."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).max())


def train(config, log=tqdm.write):
    """Runs one training and returns its metrics (the dict ``--json`` writes).

    ``log`` receives one line per epoch and the summary (``tqdm.write`` keeps them clear of the progress
    bars); only rank 0 logs. Launched by torchrun
    (``WORLD_SIZE`` > 1), it joins the process group, and leaves it again if it was the one to join.
    """
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {config.model!r}")
    for name in ("epochs", "batch_size", "limit"):
        value = getattr(config, name)
        if value is not None and value < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be {'>= 0' if name == 'epochs' else 'positive'}, got {value}")
    device = torch.device(config.device)
    if config.cuda_graph and device.type != "cuda":
        raise ValueError("cuda_graph (--cuda-graph) replays CUDA graphs: it needs device 'cuda'")
    if config.cuda_graph and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("cuda_graph (--cuda-graph) is for one process; under torchrun, leave it off")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    # Our kernels compute float32 in full; the twin's cuDNN convolutions would use TF32 by default, and
    # the loss gap would then measure TF32's rounding instead of our kernels.
    with tf32_disabled():
        return _train_here_or_distributed(config, device, log)


def _train_here_or_distributed(config, device, log):
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _train(config, 0, 1, device, log)

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank()
        result = _train(config, rank, dist.get_world_size(), device, log if rank == 0 else lambda *_: None)
        # every rank is done with the group before any tears it down (seen once on torch 2.11, under load:
        # a rank aborted at exit with 'terminate called without an active exception')
        dist.barrier()
        return result
    finally:
        if joined:
            dist.destroy_process_group()


def _train(config, rank, world, device, log):
    show_progress = rank == 0 and (sys.stdout.isatty() if config.progress is None else config.progress)
    started = time.perf_counter()

    train_set = load_digits("train", config.data_dir, config.limit).to(device)
    test_set = load_digits("test", config.data_dir, config.limit).to(device)

    torch.manual_seed(config.seed)
    model = MODELS[config.model]().to(device)
    first_epoch, history, resume = 0, [], None
    if config.resume:
        state, resume = load_checkpoint(config.resume)
        if resume is not None and resume["model"] != config.model:
            raise ValueError(f"{config.resume} holds a {resume['model']!r} model, not {config.model!r}")
        model.load_state_dict(state)
        if resume is not None:
            first_epoch, history = resume["epoch"], list(resume["history"])

    graphs = config.cuda_graph
    if graphs and len(train_set) < config.batch_size:
        raise ValueError(
            f"cuda_graph replays full batches only: {len(train_set)} training digits make no batch of "
            f"{config.batch_size}"
        )
    sides = [_Side("", model, _make_optimizer(config.optimizer, model.parameters(), config.lr, graphs))]
    if config.compare_builtin:
        twin = builtin_twin(model)
        sides.append(_Side("builtin_", twin, _make_optimizer(config.optimizer, twin.parameters(), config.lr, graphs)))
    for side in sides:
        if resume is not None:
            side.optimizer.load_state_dict(resume["optimizer"])
        if world > 1:
            side.model = DistributedDataParallel(side.model, device_ids=[device] if device.type == "cuda" else None)

    log(
        f"training {config.model} ({'with' if config.compare_builtin else 'without'} its torch.nn twin) on "
        f"{len(train_set)} digits, {config.optimizer} lr {config.lr}, batch {config.batch_size}"
        f"{f' x {world} processes' if world > 1 else ''}, {device.type}, CPU level {backends.cpu_isa()}, "
        f"epochs {first_epoch + 1}..{config.epochs}"
    )
    if device.type == "cuda":
        log("TF32 off for torch's convolutions and matmuls: ours and the twin both compute full float32")
    if graphs:
        log(f"CUDA graphs: each network's training step replays as one graph after {_GraphedStep.WARMUP} eager "
            "steps; the last, partial batch of each epoch is left out")  # fmt: skip
    epochs = tqdm(range(first_epoch, config.epochs), desc="epochs", disable=not show_progress, leave=False)
    for epoch in epochs:
        order = _epoch_order(len(train_set), config.seed, epoch, rank, world)
        batches = order.split(config.batch_size)
        if graphs and len(batches[-1]) < config.batch_size:
            batches = batches[:-1]  # a graph replays one batch size
        for side in sides:
            side.losses, side.correct = [], 0
        for idx in tqdm(batches, desc=f"epoch {epoch + 1}", disable=not show_progress, leave=False):
            idx = idx.to(device)
            x, y = train_set.images[idx], train_set.labels[idx]
            for side in sides:
                if graphs and side.graphed is None:
                    side.graphed = _GraphedStep(side, x, y)
                _step(side, x, y, device)

        record = {"epoch": epoch + 1}
        for side in sides:
            losses = torch.stack(side.losses).double()
            weights = torch.tensor([len(b) for b in batches], dtype=torch.float64, device=losses.device)
            loss_sum, correct, count = _all_reduce_sum(
                [float((losses * weights).sum()), int(side.correct), sum(len(b) for b in batches)], device, world
            )
            record[side.prefix + "loss"] = loss_sum / count
            record[side.prefix + "accuracy"] = correct / count
            record[side.prefix + "test_accuracy"] = _evaluate(_unwrap(side.model), test_set)
        if len(sides) == 2:
            ours, theirs = (torch.stack(s.losses).double() for s in sides)
            gap = (ours - theirs).abs()
            record["max_loss_gap"] = float(gap.max())
            record["max_relative_loss_gap"] = float((gap / theirs.abs().clamp_min(1e-12)).max())
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        log(_epoch_line(record, config.epochs))
        if config.save and rank == 0:
            save_checkpoint(config.save, sides[0].model, sides[0].optimizer, epoch + 1, config, history)

    results = _summary(config, history, sides, time.perf_counter() - started, device, world)
    if world > 1:
        results["ddp_param_spread"] = _param_spread(sides[0].model)
    log(_summary_lines(results))
    return results


# ----------------------------------------------------------------------------------------- reporting
def _summary(config, history, sides, seconds, device, world):
    last = history[-1] if history else {}
    reached = next((r["seconds"] for r in history if r["test_accuracy"] >= TARGET_ACCURACY), None)
    results = {
        "model": config.model,
        "test_accuracy": last.get("test_accuracy"),
        "builtin_test_accuracy": last.get("builtin_test_accuracy"),
        "max_loss_gap": max((r["max_loss_gap"] for r in history if "max_loss_gap" in r), default=None),
        "max_relative_loss_gap": max(
            (r["max_relative_loss_gap"] for r in history if "max_relative_loss_gap" in r), default=None
        ),
        "seconds": seconds,
        "seconds_to_95_percent": reached,
        "epochs": config.epochs,
        "device": device.type,
        "world_size": world,
        "threads": torch.get_num_threads(),
        "cpu_isa": backends.cpu_isa(),
        "tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None,
        "torch_version": torch.__version__,
        "config": asdict(config),
        "history": history,
    }
    results["builtin_images_per_second"] = None
    for side in sides:
        rate = side.images * world / side.step_seconds if side.step_seconds else None
        results[side.prefix + "images_per_second"] = rate
    return results


def _pct(value):
    return "  n/a " if value is None else f"{100 * value:5.1f}%"


def _epoch_line(r, epochs):
    line = f"epoch {r['epoch']:3d}/{epochs}  loss {r['loss']:.4f}  train {_pct(r['accuracy'])}"
    line += f"  test {_pct(r['test_accuracy'])}"
    if "builtin_loss" in r:
        line += f"  | builtin loss {r['builtin_loss']:.4f}  test {_pct(r['builtin_test_accuracy'])}"
        line += f"  | gap {r['max_loss_gap']:.1e}"
    return line + f"  {r['seconds']:6.1f} s"


def _summary_lines(r):
    lines = [f"test accuracy: ours {_pct(r['test_accuracy'])}"]
    if r["builtin_test_accuracy"] is not None:
        lines[0] += f", torch.nn twin {_pct(r['builtin_test_accuracy'])}"
        lines.append(f"largest loss gap: {r['max_loss_gap']:.2e} (relative {r['max_relative_loss_gap']:.2e})")
    speed = f"{r['images_per_second']:.0f} images/s" if r["images_per_second"] else "n/a"
    if r["builtin_images_per_second"]:
        ratio = r["images_per_second"] / r["builtin_images_per_second"]
        speed += f" (twin {r['builtin_images_per_second']:.0f} images/s; ours {ratio:.2f}x)"
    lines.append(f"training speed: {speed}")
    reached = r["seconds_to_95_percent"]
    when = f"{reached:.1f} s" if reached is not None else "not reached"
    lines.append(f"total {r['seconds']:.1f} s; {100 * TARGET_ACCURACY:.0f}% test accuracy: {when}")
    return "\n".join(lines)


def write_json(path, results):
    Path(path).write_text(json.dumps(results, indent=2) + "\n")


def plot_curves(path, history):
    """A PNG of the per-epoch loss and test accuracy, ours solid and the twin dashed."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for prefix, label, style in (("", "lenet_ext", "-"), ("builtin_", "torch.nn twin", "--")):
        if history and prefix + "loss" in history[0]:
            loss_ax.plot(epochs, [r[prefix + "loss"] for r in history], style, label=label)
            acc_ax.plot(epochs, [100 * r[prefix + "test_accuracy"] for r in history], style, label=label)
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="test accuracy")
    acc_ax.axhline(100 * TARGET_ACCURACY, color="grey", linewidth=0.8, linestyle=":")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path)
