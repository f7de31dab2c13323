"""The benchmark harness's command line: lenet_ext's kernels against torch's built-ins, side by side.

    lenet-ext bench                      # the full CPU suite (a few minutes on 2 cores)
    lenet-ext bench --quick              # smoke mode: tiny shapes, one short round
    python -m lenet_ext.bench --device cuda --filter conv2d --json out.json --plot out.png

Every row is data (``ROWS``): an operation (``BUILDERS`` turns it into an ``ours`` and a ``theirs``
callable doing the same work) and a shape. One code path, ``run_row``, handles any row:

1. rows whose operators are not registered yet are *skipped*, with the reason;
2. correctness first: ours and torch's results are compared with ``torch.testing.assert_close``; a
   mismatch marks the row FAILED and it is not timed;
3. timing: several rounds, alternating which side goes first, each a ``torch.utils.benchmark``
   ``blocked_autorange`` (which synchronises CUDA); the medians of all blocks are reported, with the
   ratio torch/ours (above 1 means ours is faster), the rate (GFLOP/s for convolutions, GB/s for
   pooling, images/s for whole networks) and that rate as a fraction of the machine's ceilings.
   Each time is named for what it measured: *call time* (the user-facing call, Python-side checks
   included) or *operator time* (the raw ``torch.ops.lenet_ext`` call); a row that times a call times
   our operator too. On CUDA, a row whose data fits in L2 has L2 flushed before each timed call
   (``--l2-flush``), the call alone timed by CUDA events.

The ceilings are measured here, on the device and at the thread count in use: copy bandwidth (a large
tensor copy, counting bytes read plus written) and a large float32 matrix product.

This module is the command line, and the run that bench/ scripts share (``add_run_options``,
``run_rows``), so their rows get the same checks, timing, words, table and JSON. The rest of the
harness is its package, ``lenet_ext.bench``, one job per module: ``suite`` (shapes, rows, goals),
``cases`` (what each operation runs, and the correctness check), ``runner`` (skip, check, time, flush
L2; the machine's ceilings and description) and ``report`` (the names of the times, table, chart).
"""

import argparse
import contextlib
import datetime
import json
import os
import sys

import torch

import lenet_ext

from .cases import BUILDERS, REQUIRES, Case, check_close
from .report import CALL_TIME, OPERATOR_TIME, TIME_MEANINGS, format_table, plot_ratios
from .runner import (
    L2_FLUSH_SETTINGS,
    conv_algorithm_setting,
    describe_machine,
    l2_flush_plan,
    load_average,
    machine_info,
    measure_ceilings,
    missing_requirement,
    run_case,
    run_row,
    time_interleaved,
)
from .suite import GOALS, ROWS, Row

__all__ = [
    "BUILDERS",
    "CALL_TIME",
    "GOALS",
    "OPERATOR_TIME",
    "REQUIRES",
    "ROWS",
    "Case",
    "Row",
    "add_run_options",
    "check_close",
    "l2_flush_plan",
    "main",
    "measure_ceilings",
    "missing_requirement",
    "run_case",
    "run_row",
    "run_rows",
    "time_interleaved",
]

SCHEMA = 2  # 2: each side's time is named ("time"), ours_operator, l2_flush per row and per run


def add_run_options(p):
    """The options of every run, `lenet-ext bench`'s and the bench/ scripts': smoke mode, timing, L2
    flush and where the results go."""
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny shapes, one short round")
    p.add_argument("--json", metavar="PATH", help="where to write the results (default: none)")
    p.add_argument("--plot", metavar="PATH", help="where to write the PNG chart of ratios (default: none)")
    p.add_argument(
        "--rounds", type=int, help="interleaved timing rounds per side (default 4 on cpu, 3 on cuda, 1 with --quick)"
    )
    p.add_argument(
        "--min-time",
        type=float,
        help="seconds per blocked_autorange (default 0.15 on cpu, 0.05 on cuda; --quick: one call)",
    )
    p.add_argument(
        "--l2-flush",
        choices=L2_FLUSH_SETTINGS,
        default="auto",
        help="CUDA: before each timed call of a row whose data fits in L2, write a buffer larger than L2 and "
        "time the call alone with CUDA events (auto), or never (off); the CPU is never flushed",
    )


# --------------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="lenet-ext bench", description="Time lenet_ext's kernels against torch's built-ins, side by side."
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    add_run_options(p)
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) before anything runs")
    p.add_argument("--filter", metavar="SUBSTRING", help="only rows whose name contains this (case-insensitive)")
    p.add_argument(
        "--conv-algorithm",
        choices=list(lenet_ext.backends.ALGORITHMS),
        help="force lenet_ext.backends.conv_algorithm for the run (CPU conv2d), to back the heuristic with numbers",
    )
    p.add_argument(
        "--cuda-conv-algorithm",
        choices=list(lenet_ext.backends.CUDA_CONV_ALGORITHMS),
        help="force lenet_ext.backends.cuda_conv_algorithm for the run (CUDA conv2d), to time the opt-in kernels",
    )
    p.add_argument(
        "--cuda-fused-block",
        choices=list(lenet_ext.backends.CUDA_FUSED_BLOCKS),
        help="force lenet_ext.backends.cuda_fused_block for the run (CUDA fused LeNet block), to time the opt-in pass",
    )
    p.add_argument(
        "--cuda-pool-planar",
        choices=list(lenet_ext.backends.CUDA_POOL_PLANAR),
        help="force lenet_ext.backends.cuda_pool_planar for the run (CUDA NCHW pooling forwards), to time the "
        "opt-in runs",
    )
    p.add_argument(
        "--cpu-isa",
        choices=["auto", "default", "avx2", "avx512"],
        default="auto",
        help="force the instruction-set level of lenet_ext's CPU kernels (lenet_ext.backends.cpu_isa) for the "
        "run, to measure each level on one machine; auto keeps the one chosen for this CPU",
    )
    p.add_argument(
        "--huge-pages",
        choices=list(lenet_ext.backends.HUGE_PAGES),
        help="set lenet_ext.backends.huge_pages for the run (CPU result buffers advised as transparent huge "
        "pages, on by default), to measure what the advice gives",
    )
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = [r for r in ROWS if not args.filter or args.filter.lower() in r.name.lower()]
    if args.list:
        print("\n".join(r.name for r in rows))
        return 0
    if not rows:
        print(f"no row matches --filter {args.filter!r}; --list shows them", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print("--threads must be at least 1", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    # Called in-process (tests, notebooks): leave lenet_ext and torch as we found them, even when one of
    # the settings is refused after another was made.
    with contextlib.ExitStack() as settings:
        if args.conv_algorithm:
            settings.enter_context(lenet_ext.backends.conv_algorithm(args.conv_algorithm))
        if args.cuda_conv_algorithm:
            settings.enter_context(lenet_ext.backends.cuda_conv_algorithm(args.cuda_conv_algorithm))
        if args.cuda_fused_block:
            settings.enter_context(lenet_ext.backends.cuda_fused_block(args.cuda_fused_block))
        if args.cuda_pool_planar:
            settings.enter_context(lenet_ext.backends.cuda_pool_planar(args.cuda_pool_planar))
        if args.huge_pages:
            settings.enter_context(lenet_ext.backends.huge_pages(args.huge_pages))
        if not enter_cpu_isa(settings, args.cpu_isa):
            return 2
        try:
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            return run(args, rows)
        finally:
            torch.set_num_threads(threads)


def enter_cpu_isa(settings, level):
    """Forces lenet_ext's CPU level for the run (``settings``: an ExitStack that restores it), unless ``level``
    is "auto". A level this CPU or this build lacks is refused: says why on stderr and returns False."""
    if level == "auto":
        return True
    try:
        settings.enter_context(lenet_ext.backends.cpu_isa(level))
    except (ValueError, RuntimeError) as e:
        print(f"--cpu-isa {level}: {e}", file=sys.stderr)
        return False
    return True


def run(args, rows):
    return run_rows(args, torch.device(args.device), [(row, None) for row in rows], cpu_isa_requested=args.cpu_isa)


def run_script(name, doc, jobs, argv=None) -> int:
    """The command line of the bench/ script ``name`` whose rows run on either device: ``--device``,
    ``--threads`` and the run options, then run_rows over ``jobs``. ``doc`` is the script's docstring,
    whose first line describes it in --help."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) first")
    add_run_options(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{name}: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_rows(args, torch.device(args.device), jobs)


def run_rows(args, device, jobs, table=format_table, **extra) -> int:
    """A whole run: the machine's line, its ceilings, then each job (a Row, and the builder of its Case
    for a row that is not the suite's, else None) checked and timed; prints the table (``table(records,
    ceilings)``, report.format_table unless a script lays out its own) and writes the JSON (``extra`` joins
    its top level) and the chart that ``args`` (see add_run_options) ask for.
    Returns 1 if a row FAILED its check, else 0."""
    # A GPU does thousands of calls in 0.05 s, so its full suite fits in well under a minute
    rounds = args.rounds or (1 if args.quick else 3 if device.type == "cuda" else 4)
    min_time = args.min_time or (None if args.quick else 0.05 if device.type == "cuda" else 0.15)

    info = machine_info(device)
    tf32 = ", TF32 off (both sides full float32)" if device.type == "cuda" else ""
    print(describe_machine(info) + tf32, flush=True)
    records = []
    with lenet_ext.backends.tf32_disabled():  # our kernels are full float32: torch's side must be too
        ceilings = measure_ceilings(device, quick=args.quick, min_run_time=0.01 if args.quick else 0.2)
        for row, build in jobs:
            r = run_row(row, device, ceilings, rounds, min_time, args.quick, args.l2_flush, build)
            records.append(r)
            status = f"{r['ratio']:.2f}x" if r["status"] == "ok" else f"{r['status']} ({r['reason']})"
            print(f"  {row.name}: {status}", file=sys.stderr, flush=True)
    print(table(records, ceilings))

    result = {
        "schema": SCHEMA,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": info,
        "quick": args.quick,
        "rounds": rounds,
        "min_run_time_s": min_time,
        "l2_flush": args.l2_flush,
        "times": TIME_MEANINGS,
        "tf32": False,
        "conv_algorithm": conv_algorithm_setting(),
        "cuda_conv_algorithm": conv_algorithm_setting("cuda"),
        "cuda_fused_block": lenet_ext.backends.current_cuda_fused_block(),
        "cuda_pool_planar": lenet_ext.backends.current_cuda_pool_planar(),
        "huge_pages": lenet_ext.backends.current_huge_pages(),
        **extra,
        "ceilings": ceilings,
        "load_average_at_end": load_average(),
        "rows": records,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        title = f"lenet_ext vs torch: {describe_machine(info)}, {result['date'][:10]}"
        plot_ratios(records, args.plot, title)
    failed = [r["name"] for r in records if r["status"] == "FAILED"]
    if failed:
        print(f"{len(failed)} row(s) FAILED their correctness check: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
