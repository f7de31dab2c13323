"""One code path for any row: skip it if its operators are missing, check ours against torch, then time
both sides interleaved; and the machine's ceilings and description."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import platform
import socket
import statistics

import torch
from torch.utils import benchmark as torch_benchmark

import lenet_ext

from .cases import BUILDERS, REQUIRES, check_close


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


def time_interleaved(ours, theirs, rounds, min_run_time):
    """Alternates rounds of blocked_autorange for each side (switching who goes first), so slow drifts
    of a shared machine hit both alike; returns all per-block times of each side.

    ``min_run_time=None`` is the smoke mode: a single call per round, only to prove the path runs.
    """
    threads = torch.get_num_threads()
    times = {"ours": [], "torch": []}
    sides = [("ours", ours), ("torch", theirs)]
    for r in range(rounds):
        for who, fn in sides if r % 2 == 0 else sides[::-1]:
            timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
            if min_run_time is None:
                times[who] += timer.timeit(number=1).times
            else:
                times[who] += timer.blocked_autorange(min_run_time=min_run_time).times
    return times


def _summary(times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "blocks": len(times)}


RATE_UNITS = {
    "flop": ("GFLOP/s", 1e9, "matmul_gflops"),
    "byte": ("GB/s", 1e9, "copy_gbps"),
    "image": ("img/s", 1, None),
}


def run_row(row, device, ceilings, rounds, min_run_time, quick=False):
    """Builds, checks and times one row; returns its JSON record."""
    shape = row.shape.shrink() if quick else row.shape
    record = {"name": row.name, "op": row.op, "what": row.what, "shape": dataclasses.asdict(shape)}
    record["label"] = shape.label()
    record["goal"] = row.goal
    reason = missing_requirement(row.op, device)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    torch.manual_seed(0)
    try:
        case = BUILDERS[row.op](shape, device)
        worst = case.check() if case.check else check_close(case.ours(), case.theirs())
    except Exception as e:  # noqa: BLE001  (a wrong or crashing kernel is a result to report)
        return {**record, "status": "FAILED", "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    record["check"] = {"passed": True, "max_abs_diff": worst}

    times = time_interleaved(case.ours, case.theirs, rounds, min_run_time)
    unit, scale, ceiling_key = RATE_UNITS[case.unit]
    record.update(status="ok", work=case.work, work_unit=case.unit, rate_unit=unit)
    for who in ("ours", "torch"):
        summary = _summary(times[who])
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


def conv_algorithm_setting():
    try:
        return importlib.import_module("lenet_ext.backends").current_conv_algorithm()
    except (ImportError, AttributeError):
        return None


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
