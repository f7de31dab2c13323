"""Does torch's own CPU max_pool2d backward corrupt this process's heap, and can a later C++ throw die of it?

torch's CPU max_pool2d (ATen native/cpu/MaxPoolKernel.cpp, cpu_max_pool) records, for a window whose
taps all fall in the padding, the index of its first tap clamped into the input: ih0 * W + iw0 with ih0
stepped past the top padding by the dilation. Where that lands past the last row it is an index outside
the plane, >= H * W. The backward (cpu_max_pool_backward) adds the window's gradient at that index
without a bounds check: into the next plane, or, for the last plane, past the end of the gradient's
allocation, over the next malloc chunk's header. Example: a 1-row input, kernel (2, 5), stride (4, 2),
padding (1, 2), dilation (2, 1): the row taps are -1 and 1, both padding; the indices are 17..31 for a
17-wide plane.

Each trial runs in a child process (so this script survives it) and reports its exit status, the
signal, the last phase the child reached and the tail of its stderr (glibc's message, faulthandler's
dump). The trials:

  unmasked   the backward with a nonzero gradient on the all-padding windows, N times
  masked     the same with those windows' gradient zeroed (g * (out != -inf)), as our tests' references
             did: the out-of-bounds add then writes back the bits it read
  throw      K unmasked backwards (K = 1 by default: corrupt once), then a loop of C++ throws from one of
             our operators (a weight with the wrong channel count), then plain tensor allocations;
             the phase the child dies in says whether the corruption surfaces at a throw (needs lenet_ext)

    python scripts/torch_maxpool_heap_probe.py                 # every trial, 3 runs each
    python scripts/torch_maxpool_heap_probe.py --runs 10 --trial throw --corrupt 1
    python scripts/torch_maxpool_heap_probe.py --json out.json

The throw trial imports lenet_ext from the child's working directory first (python -c): run it from
the checkout where the extension was built, or from elsewhere for an installed one.
Seen on glibc 2.36, torch 2.13.0+cpu and 2.11.0+cu130 (CPU tensors): unmasked dies in its first or second
backward (SIGABRT with glibc's "double free or corruption (out)" and the like, sometimes SIGSEGV); masked
survives 2000 backwards; throw died inside the corrupting backward 7 times of 8, and the survivor then
threw 300 times and allocated 300 tensors without dying.
"""

import argparse
import json
import os
import signal
import subprocess
import sys

CHILD = r"""
import faulthandler, sys
faulthandler.enable()
import torch, torch.nn.functional as F

trial, n, corrupt, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), getattr(torch, sys.argv[4])
CONF = dict(kernel_size=(2, 5), stride=(4, 2), padding=(1, 2), dilation=(2, 1))

def phase(name):
    print(name, flush=True)

def backward(masked):
    x = torch.randn(1, 8, 1, 17, dtype=dtype, requires_grad=True)
    out = F.max_pool2d(x, **CONF)
    g = torch.ones_like(out)
    if masked:
        g = g * (out != float("-inf"))
    torch.autograd.grad(out, x, g)

_, idx = F.max_pool2d(torch.randn(1, 8, 1, 17, dtype=dtype), **CONF, return_indices=True)
phase(f"indices {int(idx.min())}..{int(idx.max())} for a plane of 17")
if trial in ("unmasked", "masked"):
    for i in range(n):
        phase(f"backward {i}")
        backward(trial == "masked")
else:
    import lenet_ext  # noqa: F401  (registers torch.ops.lenet_ext)
    for i in range(corrupt):
        phase(f"backward {i}")
        backward(False)
    x, w = torch.randn(1, 2, 6, 6), torch.randn(4, 3, 3, 3)  # 2 input channels, a weight for 3
    for i in range(n):
        phase(f"throw {i}")
        try:
            torch.ops.lenet_ext.conv2d_forward(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
        except RuntimeError:
            pass
        else:
            raise SystemExit("conv2d_forward accepted a weight with the wrong channel count")
    for i in range(n):
        phase(f"alloc {i}")
        torch.empty(1 + (i * 37) % 400)
phase("survived")
"""


def run_trial(trial, n, corrupt, dtype, timeout):
    try:
        p = subprocess.run(
            [sys.executable, "-c", CHILD, trial, str(n), str(corrupt), dtype],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return dict(trial=trial, returncode=None, signal=None, last_phase="timeout", said=[], stderr_tail="")
    phases = [line for line in p.stdout.splitlines() if line.strip()]
    sig = signal.Signals(-p.returncode).name if p.returncode < 0 else None
    err = [line for line in p.stderr.splitlines() if line.strip() and "NumPy" not in line and "_conversion" not in line]
    # glibc's own report (malloc(): ..., double free or corruption ...) and faulthandler's headline
    said = [line for line in err if not line.startswith((" ", "Thread ", "Current thread", "Extension modules"))]
    return dict(
        trial=trial, n=n, corrupt=corrupt if trial == "throw" else None, dtype=dtype, returncode=p.returncode,
        signal=sig, indices=phases[0] if phases else None, last_phase=phases[-1] if phases else None,
        said=said[:4], stderr_tail="\n".join(err[-40:]),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trial", choices=["unmasked", "masked", "throw", "all"], default="all")
    ap.add_argument("--runs", type=int, default=3, help="child processes per trial")
    ap.add_argument("-n", type=int, default=200, help="backwards (unmasked, masked) or throws and allocations (throw)")
    ap.add_argument("--corrupt", type=int, default=1, help="unmasked backwards before the throws")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, pid {os.getpid()}")
    trials = ["unmasked", "masked", "throw"] if args.trial == "all" else [args.trial]
    results = []
    for trial in trials:
        for _ in range(args.runs):
            r = run_trial(trial, args.n, args.corrupt, args.dtype, args.timeout)
            results.append(r)
            died = f"signal {r['signal']}" if r["signal"] else f"exit {r['returncode']}"
            print(f"{trial:9s} {died:16s} last phase: {r['last_phase']!s:14s} {' | '.join(r.get('said', []))[:120]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, python=sys.version, results=results), f, indent=1)


if __name__ == "__main__":
    main()
