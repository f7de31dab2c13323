"""Where a converted network loses time to torch: each convolution and pooling layer, pass by pass.

    python bench/layer_profile.py [--model resnet18 mobilenet_v2 squeezenet1_1] [--threads N]
                                  [--cpu-isa auto|default|avx2|avx512] [--quick] [--json out.json]

`lenet-ext bench`'s converted rows time whole networks (lenet_ext.zoo's, converted by lenet_ext.convert);
this script splits them. Each network runs once on 4 float32 images of 3x224x224 (--quick: two of 64x64),
with forward hooks keeping every convolution's and pooling layer's input (and, for a training step, the
gradient reaching its output). Then each layer of the converted network (ours) and the same layer of the
original (torch's), given the same tensors, go through the harness (lenet_ext.bench.cli.run_rows): checked
against each other first, then timed interleaved with torch.utils.benchmark, medians.

The passes are a training step's for ResNet-18 and inference for MobileNetV2 and SqueezeNet 1.1, as in
the benchmark's converted rows:
- forward: the layer's call; under no_grad for inference (our max pooling then keeps no indices), with
  autograd recording for training;
- input grad: torch.autograd.grad of the layer's output with respect to its input only (the weights need
  no gradient while the graph is recorded, so neither side computes theirs); not for the first layer,
  whose images need no gradient;
- weight grad: the same with respect to the layer's weight (and bias) only; convolutions only.
Each backward call reuses one recorded graph (retain_graph), so its time is the backward alone.

The table, per network and pass: each layer in the network's order (its name in the network, kind,
channels in->out, kernel, stride, groups, input height x width), our and torch's medians in ms, the ratio
torch/ours (below 1: ours is slower, marked "<<"), the layer's share of our summed time of that pass (the
network's other layers, batch norm and activations, are torch's on both sides and not counted), and our
rate (GFLOP/s, or GB/s moved for pooling) with its fraction of the machine's ceiling. Under each pass:
both totals, and the layers that lose the most milliseconds. Times on a busy machine are noisy; compare
ratios within one run.
"""

import argparse
import contextlib
import dataclasses
import sys

import torch
import torch.nn.functional as torch_F

import lenet_ext
from lenet_ext import zoo
from lenet_ext.bench import cli
from lenet_ext.bench.cases import Case, _calibrate_batch_norm, pool_bytes
from lenet_ext.bench.report import CALL_TIME, TIME_MEANINGS
from lenet_ext.bench.suite import Row, Vision

# Each network, and whether its training step (True) or its inference is profiled.
MODELS = {"resnet18": True, "mobilenet_v2": False, "squeezenet1_1": False}
PASSES = {"forward": "forward", "backward_input": "input grad", "backward_weight": "weight grad"}
# The layers lenet_ext.convert swaps, by the name of the operator that computes them.
KINDS = {lenet_ext.nn.Conv2d: "conv2d", lenet_ext.nn.MaxPool2d: "max_pool2d", lenet_ext.nn.AvgPool2d: "avg_pool2d"}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution or pooling layer of a network, at the input the network gives it."""

    model: str
    name: str  # its name in the network (named_modules)
    kind: str  # conv2d, max_pool2d or avg_pool2d
    n: int
    c: int
    h: int
    w: int
    o: int  # output channels
    oh: int
    ow: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int = 1
    ceil_mode: bool = False  # pooling's

    def shrink(self):
        return self  # --quick shrinks the network's images instead (Vision.shrink)

    def label(self):
        g = f" g{self.groups}" if self.groups > 1 else ""
        ceil = " ceil" if self.ceil_mode else ""
        window = f"{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}{g}{ceil}"
        return f"{self.kind} {self.c}->{self.o}, {window}, {self.h}x{self.w}"

    def numel_in(self):
        return self.n * self.c * self.h * self.w

    def numel_out(self):
        return self.n * self.o * self.oh * self.ow

    def flops(self):
        """One convolution pass: 2 * N * O * OH * OW * (C / groups) * KH * KW."""
        return 2 * self.numel_out() * (self.c // self.groups) * self.kernel[0] * self.kernel[1]


@dataclasses.dataclass
class Seen:
    """What one pass of the network gave a layer."""

    input: torch.Tensor
    needs_grad: bool  # whether the input needs a gradient in the network
    output_shape: torch.Size
    grad_output: torch.Tensor | None = None  # training only


def capture(net, layers, x, labels, train):
    """Each of ``layers`` (name -> module of ``net``): its input, and for a training step the gradient of
    its output, from one forward (and backward) of ``net``."""
    seen = {}

    def hook(name):
        def keep(module, inputs, output):
            seen[name] = Seen(inputs[0].detach(), inputs[0].requires_grad, output.shape)
            if output.requires_grad:
                output.register_hook(lambda grad: setattr(seen[name], "grad_output", grad))

        return keep

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        if train:
            torch_F.cross_entropy(net(x), labels).backward()
            net.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                net(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _forward(layer, x, train):
    def call():
        with torch.set_grad_enabled(train):
            return layer(x)

    return call


def _backward(layer, x, grad, wrt_input):
    """The gradient of ``layer``'s input, or of its parameters, alone: the graph is recorded with only that
    needing a gradient, then each call runs the backward of that one graph."""
    params = list(layer.parameters())
    x = x.detach().requires_grad_(wrt_input)
    for p in params:
        p.requires_grad_(not wrt_input)
    try:
        out = layer(x)
    finally:
        for p in params:
            p.requires_grad_(True)
    wrt = [x] if wrt_input else params
    return lambda: torch.autograd.grad(out, wrt, grad, retain_graph=True)


def layer_case(layer, ours, theirs, seen, pass_, train):
    """Ours and torch's layer doing one pass on the tensors the network gave it."""
    if pass_ == "forward":
        x = seen.input.detach().requires_grad_(train and seen.needs_grad)
        sides = [_forward(m, x, train) for m in (ours, theirs)]
    else:
        sides = [_backward(m, seen.input, seen.grad_output, pass_ == "backward_input") for m in (ours, theirs)]
    if layer.kind == "conv2d":
        return Case(*sides, work=layer.flops(), unit="flop")
    forward = pass_ == "forward"
    moved = pool_bytes(layer.kind.split("_")[0], layer, seen.input.element_size(), forward, not forward)
    if forward and train and layer.kind == "max_pool2d":
        moved += layer.numel_out() * 8  # the indices kept for the backward
    return Case(*sides, work=moved, unit="byte")


def images(model, quick):
    """The batch a network runs on: the suite's converted rows' (Vision), shrunk by --quick."""
    return Vision(model).shrink() if quick else Vision(model)


def model_jobs(model, quick):
    """The harness's jobs for every layer and pass of ``model``: (Row, builder of its Case)."""
    shape = images(model, quick)
    train = MODELS[model]
    torch.manual_seed(0)
    theirs_net = zoo.MODELS[model]()
    x = torch.randn(shape.batch, 3, shape.size, shape.size)
    labels = torch.randint(0, 1000, (shape.batch,))
    if not train:
        _calibrate_batch_norm(theirs_net, x)  # as the converted inference rows: activations of a real scale
    ours_net = lenet_ext.convert(theirs_net)
    ours = {name: m for name, m in ours_net.named_modules() if isinstance(m, tuple(KINDS))}
    theirs = {name: theirs_net.get_submodule(name) for name in ours}
    seen = capture(theirs_net, theirs, x, labels, train)

    jobs = []
    for name, module in ours.items():
        s = seen[name]
        n, c, h, w = s.input.shape
        _, o, oh, ow = s.output_shape
        kind = KINDS[type(module)]
        window = [_pair(getattr(module, key)) for key in ("kernel_size", "stride", "padding")]
        extra = {"groups": module.groups} if kind == "conv2d" else {"ceil_mode": module.ceil_mode}
        layer = Layer(model, name, kind, n, c, h, w, o, oh, ow, *window, **extra)
        passes = ["forward"]
        if train and s.needs_grad:
            passes.append("backward_input")
        if train and kind == "conv2d":
            passes.append("backward_weight")
        jobs += [_job(layer, module, theirs[name], s, pass_, train) for pass_ in passes]
    return jobs


def _job(layer, ours, theirs, seen, pass_, train):
    def build(_shape, _device):  # the layer's tensors are the network's, already on the CPU
        return layer_case(layer, ours, theirs, seen, pass_, train)

    return Row(f"{layer.model} {layer.name}", f"layer.{layer.kind}.{pass_}", layer), build


# --------------------------------------------------------------------------------------------- table
HEAD = (
    f"{'layer':<13} {'kind':<10} {'channels':>10} {'kernel':>6} {'stride':>6} {'groups':>6} {'input':>8} "
    f"{'pass':<11} {'ours ms':>8} {'torch ms':>8} {'torch/ours':>10} {'share':>6}  {'ours rate':>19}"
)


def _line(r, share):
    """One layer's line: ``r`` its record, ``share`` its part of our time for the pass."""
    s = r["shape"]
    kernel = f"{s['kernel'][0]}x{s['kernel'][1]}"
    stride = f"{s['stride'][0]}{' ceil' if s['ceil_mode'] else ''}"
    rate = f"{r['ours']['rate']:.3g} {r['rate_unit']} {100 * r['ours']['fraction_of_ceiling']:3.0f}%"
    return (
        f"{s['name']:<13} {s['kind']:<10} {s['c']:>4}->{s['o']:<5} {kernel:>6} {stride:>6} {s['groups']:>6} "
        f"{s['h']:>3}x{s['w']:<4} {PASSES[_pass(r)]:<11} {_ms(r, 'ours'):8.3f} {_ms(r, 'torch'):8.3f} "
        f"{r['ratio']:9.2f}x {100 * share:5.1f}%  {rate:>19}" + ("  <<" if r["ratio"] < 1 else "")
    )


def _pass(record):
    return record["op"].rsplit(".", 1)[1]


def _ms(record, side):
    return 1e3 * record[side]["median_s"]


def profile_table(records, ceilings):
    """Per network and pass: one line per layer in the network's order, then the totals and the layers
    that lose the most time."""
    groups = {}
    for r in records:
        groups.setdefault((r["shape"]["model"], _pass(r)), []).append(r)
    lines = [f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, float32 matmul {ceilings['matmul_gflops']:.1f} GFLOP/s"]
    for model, pass_ in sorted(groups, key=lambda key: (list(MODELS).index(key[0]), list(PASSES).index(key[1]))):
        rows = groups[model, pass_]
        ok = [r for r in rows if r["status"] == "ok"]
        ours_total, torch_total = sum(_ms(r, "ours") for r in ok), sum(_ms(r, "torch") for r in ok)
        mode = "training step" if MODELS[model] else "inference"
        lines += ["", f"{model}, {mode}: {PASSES[pass_]}", HEAD, "-" * len(HEAD)]
        for r in rows:
            if r["status"] == "ok":
                lines.append(_line(r, _ms(r, "ours") / ours_total))
            else:
                lines.append(f"{r['shape']['name']:<13} {r['status']}: {r['reason']}")
        if not ok:
            continue
        losers = sorted((r for r in ok if r["ratio"] < 1), key=lambda r: _ms(r, "torch") - _ms(r, "ours"))
        lost = sum(_ms(r, "ours") - _ms(r, "torch") for r in losers)
        most = ", ".join(f"{r['shape']['name']} {_ms(r, 'ours') - _ms(r, 'torch'):.2f}" for r in losers[:3])
        lines.append(
            f"total: ours {ours_total:.2f} ms, torch {torch_total:.2f} ms ({torch_total / ours_total:.2f}x) over "
            f"{len(ok)} layers; slower in {len(losers)}, losing {lost:.2f} ms" + (f" (most: {most})" if most else "")
        )
    lines += ["", f"{CALL_TIME} (every time here): {TIME_MEANINGS[CALL_TIME]}; a backward pass is torch.autograd.grad"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", choices=list(MODELS), default=list(MODELS), help="default: all three")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) first")
    p.add_argument(
        "--cpu-isa",
        choices=["auto", *lenet_ext.backends.CPU_ISAS],
        default="auto",
        help="force the instruction-set level of lenet_ext's CPU kernels for the run, as lenet-ext bench's option",
    )
    cli.add_run_options(p)
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as settings:
        if not cli.enter_cpu_isa(settings, args.cpu_isa):
            return 2
        try:
            if args.threads:
                torch.set_num_threads(args.threads)
            jobs = [job for model in args.model for job in model_jobs(model, args.quick)]
            networks = [{**dataclasses.asdict(images(m, args.quick)), "training_step": MODELS[m]} for m in args.model]
            return cli.run_rows(
                args, torch.device("cpu"), jobs, table=profile_table, cpu_isa_requested=args.cpu_isa, networks=networks
            )
        finally:
            torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
