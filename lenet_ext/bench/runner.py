"""One code path for any row, and for the bench/ scripts' cases: skip a row if its operators are missing,
check ours against torch, then time every side interleaved (with a GPU's L2 flushed before each timed call
where the row's data would otherwise stay in it); and the machine's ceilings and description."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import platform
import socket
import statistics
import time

import torch
from torch.utils import benchmark as torch_benchmark

import lenet_ext

from .cases import BUILDERS, REQUIRES, check_close
from .report import OPERATOR_TIME


# ------------------------------------------------------------------------------------------- running
def missing_requirement(op, device):
    """Why `op` cannot run yet on `device` (None when everything it needs is registered)."""
    key = "CUDA" if device.type == "cuda" else "CPU"
    for kind, name in REQUIRES[op]:
        if kind == "op":
            op = getattr(torch.ops.lenet_ext, name, None)
            if op is None or not op.default.has_kernel_for_dispatch_key(key):
                return f"torch.ops.lenet_ext.{name} has no {key} kernel yet"
        else:
            try:
                module = importlib.import_module(f"lenet_ext.{kind}")
            except ImportError:
                return f"lenet_ext.{kind} is not there yet"
            if not hasattr(module, name):
                return f"lenet_ext.{kind}.{name} is not there yet"
    return None


def time_interleaved(sides, rounds, min_run_time, flush=None):
    """Alternates rounds of blocked_autorange for each of ``sides`` (name -> callable), rotating who goes
    first, so slow drifts of a shared machine hit every side alike; returns all per-block times of each.

    ``min_run_time=None`` is the smoke mode: a single call per round, only to prove the path runs.
    ``flush`` (a CUDA buffer larger than L2) times each call after a flush instead: ``time_after_flush``.
    """
    threads = torch.get_num_threads()
    times = {who: [] for who in sides}
    order = list(sides.items())
    for r in range(rounds):
        k = r % len(order)
        for who, fn in order[k:] + order[:k]:
            if flush is not None:
                times[who] += time_after_flush(fn, flush, min_run_time)
                continue
            timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
            if min_run_time is None:
                times[who] += timer.timeit(number=1).times
            else:
                times[who] += timer.blocked_autorange(min_run_time=min_run_time).times
    return times


FLUSHED_BLOCK = 10  # calls per block when L2 is flushed: each block's time is the mean of its calls


def time_after_flush(fn, flush, min_run_time):
    """Per-block mean times of ``fn`` on CUDA, as llm.c's dev/cuda benchmarks time a kernel: before each
    call, ``flush`` (a buffer larger than L2) is written and the GPU waited for; CUDA events recorded on
    the stream just before and after the call give its time, so the flush is not in it. Every call thus
    starts from a cold L2 and an idle GPU: its time includes the host's work up to the launch, which
    back-to-back calls would hide behind the kernel before. ``min_run_time=None``: one call.
    """
    calls = 1 if min_run_time is None else FLUSHED_BLOCK
    stop = time.perf_counter() + (min_run_time or 0.0)
    stream = torch.cuda.current_stream(flush.device)  # where the device's kernels are launched
    times = []
    while not times or time.perf_counter() < stop:
        marks = []
        for _ in range(calls):
            flush.zero_()
            torch.cuda.synchronize(flush.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            marks.append((start, end))
        torch.cuda.synchronize(flush.device)
        times.append(sum(start.elapsed_time(end) for start, end in marks) / calls / 1e3)  # events count ms
    return times


# ------------------------------------------------------------------------------------------ L2 flush
L2_FLUSH_SETTINGS = ("auto", "off")
FLUSH_BYTES_WHEN_L2_UNKNOWN = 256 << 20  # more than any GPU's L2 so far


def l2_cache_bytes(device):
    """The GPU's L2 cache in bytes; None on the CPU, or where torch does not report it."""
    if device.type != "cuda":
        return None
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None) or None


def l2_flush_plan(setting, device_type, data_bytes, l2_bytes):
    """Whether a row's timed calls are each preceded by an L2 flush, and why: the row's JSON record of it.

    ``auto`` flushes a CUDA row whose data (``data_bytes``: the tensors a call reads and its results)
    fits in L2 (``l2_bytes``; if torch does not report it, at most FLUSH_BYTES_WHEN_L2_UNKNOWN is assumed):
    its repeated calls would otherwise find their inputs in L2, as a network's layer rarely does. Larger
    data evicts itself between calls anyway. The flush writes ``flush_bytes``: twice L2, or the fallback.
    Nothing is flushed on the CPU, with ``off``, or when the data size is not known.
    """
    if setting not in L2_FLUSH_SETTINGS:
        raise ValueError(f"l2_flush must be one of {', '.join(L2_FLUSH_SETTINGS)}, got {setting!r}")
    plan = {"setting": setting, "flushed": False, "data_bytes": data_bytes, "l2_bytes": l2_bytes}
    limit = l2_bytes or FLUSH_BYTES_WHEN_L2_UNKNOWN
    if device_type != "cuda":
        why = f"no L2 flush on {device_type}"
    elif setting == "off":
        why = "L2 flush off"
    elif data_bytes is None:
        why = "the row's data size is not known"
    elif data_bytes > limit:
        why = "the row's data is larger than L2"
    else:
        plan.update(flushed=True, flush_bytes=2 * l2_bytes if l2_bytes else FLUSH_BYTES_WHEN_L2_UNKNOWN)
        why = "the row's data fits in L2"
    return {**plan, "why": why}


def tensor_bytes(values):
    """The bytes of every tensor in ``values``: a tensor, None, or a tuple or list of them."""
    if isinstance(values, torch.Tensor):
        return values.numel() * values.element_size()
    if isinstance(values, (tuple, list)):
        return sum(tensor_bytes(v) for v in values)
    return 0


def _summary(times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "blocks": len(times)}


RATE_UNITS = {
    "flop": ("GFLOP/s", 1e9, "matmul_gflops"),
    "byte": ("GB/s", 1e9, "copy_gbps"),
    "image": ("img/s", 1, None),
}


def run_row(row, device, ceilings, rounds, min_run_time, quick=False, l2_flush="auto", build=None):
    """Builds, checks and times one row; returns its JSON record.

    ``build(shape, device)`` makes the row's Case where ``row.op`` is not one of the suite's operations
    (a bench/ script's own row); otherwise BUILDERS does, once the operators it REQUIRES are there.
    """
    shape = row.shape.shrink() if quick else row.shape
    record = {"name": row.name, "op": row.op, "what": row.what, "shape": dataclasses.asdict(shape)}
    record["label"] = shape.label()
    record["goal"] = row.goal
    if build is None:
        reason = missing_requirement(row.op, device)
        if reason:
            return {**record, "status": "skipped", "reason": reason}
        build = BUILDERS[row.op]
    return run_case(record, lambda: build(shape, device), device, ceilings, rounds, min_run_time, l2_flush)


def run_case(record, build, device, ceilings, rounds, min_run_time, l2_flush="auto"):
    """Checks and times the Case that ``build()`` returns; returns ``record`` (which names it: "name" and
    "goal" at least) completed with the results.

    Ours, our operator where the case has one, and torch's are checked first; a crash or a mismatch is a
    FAILED record, not timed. Then every side is timed, interleaved, each side's time named (CALL_TIME or
    OPERATOR_TIME), with the L2 flush decided by ``l2_flush_plan`` and recorded under "l2_flush".
    """
    torch.manual_seed(0)
    try:
        case = build()
        got = None
        if case.check:
            worst = case.check()
        else:
            got, want = case.ours(), case.theirs()
            worst = check_close(got, want)
            if case.operator:
                try:
                    worst = max(worst, check_close(case.operator(), want))
                except AssertionError as e:
                    raise AssertionError(f"our raw operator's result: {e}") from None
    except Exception as e:  # noqa: BLE001  (a wrong or crashing kernel is a result to report)
        return {**record, "status": "FAILED", "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    record["check"] = {"passed": True, "max_abs_diff": worst}

    data_bytes = None if case.reads is None else tensor_bytes(case.reads) + tensor_bytes(got)
    plan = l2_flush_plan(l2_flush, device.type, data_bytes, l2_cache_bytes(device))
    flush = torch.empty(plan["flush_bytes"], dtype=torch.uint8, device=device) if plan["flushed"] else None
    sides = {"ours": case.ours, "torch": case.theirs}
    names = {"ours": case.time, "torch": case.time}
    if case.operator:
        sides["ours_operator"], names["ours_operator"] = case.operator, OPERATOR_TIME
    times = time_interleaved(sides, rounds, min_run_time, flush)
    del flush

    unit, scale, ceiling_key = RATE_UNITS[case.unit]
    record.update(status="ok", work=case.work, work_unit=case.unit, rate_unit=unit, l2_flush=plan)
    for who in sides:
        summary = {"time": names[who], **_summary(times[who])}
        summary["rate"] = case.work / summary["median_s"] / scale
        if ceiling_key:
            summary["fraction_of_ceiling"] = summary["rate"] / ceilings[ceiling_key]
        record[who] = summary
    record["ratio"] = record["torch"]["median_s"] / record["ours"]["median_s"]
    return record


def measure_ceilings(device, quick=False, min_run_time=0.3, rounds=3):
    """Copy bandwidth (GB/s, read + written) and float32 matmul rate (GFLOP/s) at the current thread count.

    A ceiling is what the machine can do, so each is the fastest block of `rounds` alternating
    measurements: on a shared machine a median would report the neighbours' load instead.
    """
    gpu = device.type == "cuda"
    numel = (1 << 20) if quick else (1 << 28 if gpu else 1 << 25)  # well past the last-level cache
    n = 256 if quick else (8192 if gpu else 2048)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    threads = torch.get_num_threads()
    copy = torch_benchmark.Timer("dst.copy_(src)", globals={"dst": dst, "src": src}, num_threads=threads)
    mm = torch_benchmark.Timer("torch.mm(a, b)", globals={"a": a, "b": b, "torch": torch}, num_threads=threads)
    copy_s = mm_s = math.inf
    for _ in range(1 if quick else rounds):
        copy_s = min(copy_s, *copy.blocked_autorange(min_run_time=min_run_time).times)
        mm_s = min(mm_s, *mm.blocked_autorange(min_run_time=min_run_time).times)
    return {
        "copy_gbps": 2 * numel * src.element_size() / copy_s / 1e9,
        "copy_bytes": numel * src.element_size(),
        "matmul_gflops": 2 * n**3 / mm_s / 1e9,
        "matmul_n": n,
    }


def conv_algorithm_setting(device="cpu"):
    """lenet_ext.backends' conv algorithm for the device's kernels (None when lenet_ext is not importable)."""
    try:
        backends = importlib.import_module("lenet_ext.backends")
    except ImportError:
        return None
    return backends.current_cuda_conv_algorithm() if device == "cuda" else backends.current_conv_algorithm()


def load_average():
    """Other processes' load skews every timing on a shared machine: recorded, so readers can judge."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_isa": lenet_ext.backends.cpu_isa(),  # the instruction-set level of our CPU kernels in this run
        # torch's own levels: ATen's CPU capability, and oneDNN's and MKL's limits when set (bench/run.sh
        # LEVEL=avx2 holds both sides to AVX2 on a machine that has more)
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_isa_limits": {
            k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ
        },
        "logical_cpus": os.cpu_count(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load_average(),
        "torch": torch.__version__,
        "lenet_ext": lenet_ext.__version__,
    }
    return info


def describe_machine(info):
    """One line naming where the figures come from: the device, the CPU with the level of our CPU
    kernels, the thread count and torch's version."""
    cpu = f"{info['cpu']}, CPU level {info['cpu_isa']}"
    where = cpu if info["device"] == "cpu" else f"{info['device_name']}, host {cpu}"
    return f"{where}, {info['threads']} threads, torch {info['torch']}"
