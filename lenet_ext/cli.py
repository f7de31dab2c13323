"""``lenet-ext``: train LeNet beside its torch.nn twin, print its shapes, or benchmark the kernels.

    lenet-ext train [--model lenet|modern] [--epochs N] [--optimizer sgd|adam] [--plot curves.png] ...
    lenet-ext shapes [--model lenet|modern]
    lenet-ext bench [benchmark arguments ...]

Also runnable as ``python -m lenet_ext``, and under ``torchrun --nproc_per_node=N -m lenet_ext train``.
"""

import argparse
import dataclasses
import importlib
import os
import sys

import torch

from ._shape import window_output_size
from .data import IdxError
from .models import MODELS
from .train import TrainConfig, plot_curves, train, write_json

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="lenet-ext",
        description="Train LeNet beside its torch.nn twin, print its shapes, or benchmark the kernels.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,shapes,bench}")

    defaults = TrainConfig()
    t = commands.add_parser(
        "train",
        help="train LeNet on digits beside its torch.nn twin",
        description="Train a LeNet built from lenet_ext layers; by default on the bundled 4,000 MNIST digits, "
        "tested on the 1,000 held out, beside its torch.nn twin (same initial weights, same batches).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--model", choices=sorted(MODELS), default=defaults.model, help="lenet: the seed's sigmoid/avg-pool "
                   "network; modern: ReLU and max pooling")  # fmt: skip
    t.add_argument(
        "--epochs", type=_count(0), default=defaults.epochs, help="total epochs (a resumed run continues up to this)"
    )
    t.add_argument("--batch-size", type=_count(1), default=defaults.batch_size, help="per process under torchrun")
    t.add_argument("--lr", type=float, default=defaults.lr, help="learning rate")
    t.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default=defaults.optimizer,
        help="d2l's recipe is: --optimizer sgd --lr 0.9 --batch-size 256 --epochs 10",
    )
    t.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=defaults.device,
        help="under torchrun, cuda means this process's LOCAL_RANK GPU",
    )
    t.add_argument("--seed", type=int, default=defaults.seed, help="seeds the initial weights and the batch order")
    t.add_argument("--data-dir", help="directory of MNIST-style IDX files (train-images-idx3-ubyte[.gz], ...) "
                   "instead of the bundled digits")  # fmt: skip
    t.add_argument("--limit", type=_count(1), help="use only the first N digits of each split (quick runs)")
    t.add_argument("--compare-builtin", action=argparse.BooleanOptionalAction, default=defaults.compare_builtin,
                   help="also train the torch.nn twin and compare")  # fmt: skip
    t.add_argument("--threads", type=_count(0), default=1, help="CPU threads per process; 0 keeps torch's choice. "
                   "LeNet's tensors are too small for more to pay, and on a busy machine more threads spin and "
                   "wait on each other")  # fmt: skip
    t.add_argument("--cuda-graph", action="store_true", help="with --device cuda: replay each training step as "
                   "one CUDA graph, for both networks (full batches only)")  # fmt: skip
    t.add_argument("--plot", metavar="PATH", help="write a PNG of both training curves")
    t.add_argument("--json", metavar="PATH", help="write the final metrics as JSON")
    t.add_argument("--save", metavar="PATH", help="checkpoint after every epoch (a state_dict either network loads)")
    t.add_argument("--resume", metavar="PATH", help="continue from a --save checkpoint up to --epochs")
    t.set_defaults(run=_train)

    s = commands.add_parser("shapes", help="print each layer's output shape and the output-size arithmetic")
    s.add_argument("--model", choices=sorted(MODELS), default="lenet")
    s.set_defaults(run=_shapes)

    # Only for --help: `bench` hands every argument after it to lenet_ext.bench.cli untouched (see main).
    commands.add_parser("bench", help="benchmark the kernels against torch (arguments go to lenet_ext.bench)")
    return parser


def _count(minimum):
    """An argparse type: an int no smaller than ``minimum``."""

    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    return args.run(args) or 0


# ------------------------------------------------------------------------------------------- commands
def _train(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        results = train(config)
    except (FileNotFoundError, IdxError, ValueError) as e:  # unusable data or settings: the message says which
        print(f"lenet-ext train: {e}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 writes the files
    if args.json:
        write_json(args.json, results)
    if args.plot:
        plot_curves(args.plot, results["history"])
    return 0


def _bench(argv):
    try:
        harness = importlib.import_module(f"{__package__}.bench.cli")
    except ModuleNotFoundError as e:
        if e.name not in (f"{__package__}.bench", f"{__package__}.bench.cli"):
            raise  # the harness exists but something it imports is missing: show that
        print("lenet-ext bench: this installation has no benchmark harness (lenet_ext.bench)", file=sys.stderr)
        return 2
    return harness.main(argv) or 0


def _shapes(args):
    model = MODELS[args.model]()
    x = torch.zeros(1, 1, 28, 28)
    rows = [("", "input", _shape(x), "")]
    with torch.no_grad():
        for index, layer in enumerate(model):
            n = x.shape[-2:]
            x = layer(x)
            rows.append((str(index), _describe(layer), _shape(x), _formula(layer, n)))
    print(f"{type(model).__name__} ({args.model}), one 28×28 digit in; output size per side:")
    print("  (n + 2·padding − kernel)/stride + 1, rounded down; n + 2·p − d·(k − 1) − 1 when dilated\n")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(f"  {row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}   {row[3]}".rstrip())
    return 0


def _shape(t):
    return "×".join(str(s) for s in t.shape[1:])


def _describe(layer):
    """A short description for learners: the numbers that matter, without torch's full repr."""
    name = type(layer).__name__
    if isinstance(layer, torch.nn.Conv2d):
        return f"{name}({layer.in_channels} → {layer.out_channels}, kernel {_side(layer.kernel_size)}, " \
            f"stride {_side(layer.stride)}, padding {_side(layer.padding)})"  # fmt: skip
    if isinstance(layer, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
        return (
            f"{name}(kernel {_side(layer.kernel_size)}, stride {_side(layer.stride)}, padding {_side(layer.padding)})"
        )
    if isinstance(layer, torch.nn.Linear):
        return f"{name}({layer.in_features} → {layer.out_features})"
    return name


def _side(value):
    """``5`` for ``(5, 5)``; ``(5, 3)`` stays a pair."""
    if isinstance(value, tuple) and len(set(value)) == 1:
        return str(value[0])
    return str(value)


def _formula(layer, input_hw):
    """The output-size arithmetic for a conv or pool layer, one side (or H and W when they differ)."""
    if isinstance(layer, torch.nn.Conv2d):
        if layer.padding == "same":
            return "padding='same' keeps the input size"
        k, s, d, ceil = layer.kernel_size, layer.stride, layer.dilation, False
        p = (0, 0) if layer.padding == "valid" else layer.padding
    elif isinstance(layer, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
        k, s, p = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size), _pair(layer.padding)
        d = _pair(getattr(layer, "dilation", 1))
        ceil = layer.ceil_mode
    else:
        return ""
    sides = [_one_side(input_hw[i], k[i], s[i], p[i], d[i], ceil) for i in range(2)]
    return sides[0] if sides[0] == sides[1] else f"H: {sides[0]};  W: {sides[1]}"


def _pair(value):
    """A pooling layer's int or pair argument as a pair (torch's own helper for this is private)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _one_side(n, k, s, p, d, ceil):
    if d == 1:
        span, text = n + 2 * p - k, f"{n} + 2·{p} − {k}"
    else:
        span, text = n + 2 * p - d * (k - 1) - 1, f"{n} + 2·{p} − {d}·({k} − 1) − 1"
    out = window_output_size(n, p, p, k, s, d, ceil)
    quotient = f"({text})/{s}"
    if span % s:
        quotient = f"⌈({text})/{s}⌉" if ceil else f"⌊({text})/{s}⌋"
    return f"{quotient} + 1 = {out}"
