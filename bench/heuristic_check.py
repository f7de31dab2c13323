"""Is `auto` (the CPU conv2d heuristic in csrc/cpu/conv2d.cpp) within 10% of the best of our algorithms?

Runs the conv2d rows of `lenet-ext bench` once per (instruction-set level, algorithm): direct, im2col,
winograd and auto, at each level this CPU has (a lower level is forced for torch's side too, as
bench/run.sh LEVEL= does), `--repeats` times, and prints each row's best time per algorithm and
auto / min(direct, im2col, winograd). Forced "winograd" runs the heuristic where Winograd does not apply.

    python bench/heuristic_check.py [--repeats 2] [--threads 2] [--out bench/results/NAME.txt]
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

from lenet_ext import backends
from lenet_ext.bench.levels import environment

ALGORITHMS = ("direct", "im2col", "winograd", "auto")
FORCED = ALGORITHMS[:-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--levels", nargs="*", default=[lv for lv in ("avx512", "avx2") if lv in backends.available_cpu_isas()]
    )
    p.add_argument("--filter", default="conv2d.", help="rows to time (default: every conv2d row)")
    p.add_argument("--out", help="also write the table here")
    args = p.parse_args(argv)

    times = collections.defaultdict(list)  # (level, row, algorithm) -> medians in ms
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for level in args.levels:
                env = dict(os.environ, **environment(level))
                for algorithm in ALGORITHMS:
                    path = os.path.join(tmp, "run.json")
                    cmd = [
                        sys.executable,
                        "-m",
                        "lenet_ext.bench",
                        "--threads",
                        str(args.threads),
                        "--filter",
                        args.filter,
                        "--conv-algorithm",
                        algorithm,
                        "--json",
                        path,
                    ]
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
                    with open(path) as f:
                        run = json.load(f)
                    for row in run["rows"]:
                        if row.get("ours"):
                            times[level, row["name"], algorithm].append(row["ours"]["median_s"] * 1e3)
        machine = run["machine"]

    lines = [
        f"{machine.get('cpu', '?')}, {args.threads} threads, torch {machine.get('torch', '?')}, "
        f"best of {args.repeats} runs (ms); ratio = auto / best of direct, im2col and winograd",
        f"{'level':7} {'row':52} {'direct':>8} {'im2col':>8} {'winograd':>8} {'auto':>8}  ratio",
    ]
    worst = 0.0
    for level, name in sorted({(lv, n) for lv, n, _ in times}):
        best = {a: min(times[level, name, a]) for a in ALGORITHMS}
        ratio = best["auto"] / min(best[a] for a in FORCED)
        worst = max(worst, ratio)
        cols = " ".join(f"{best[a]:8.3f}" for a in ALGORITHMS)
        lines.append(f"{level:7} {name:52} {cols}  {ratio:.2f}")
    lines.append(f"worst ratio: {worst:.2f} (goal: at most 1.10)")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
