"""The results as a table and as a chart of ratios, and the words every report uses for what a time is."""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- words
# What a time measures. A row's sides are both user-facing calls or both raw operators; a row whose side
# is a call also times our raw operator, as the difference is Python's, not the kernel's. `lenet-ext bench`,
# bench/gpu_speed.py and bench/pool_variants.py print and record times under these two names only.
CALL_TIME = "call time"
OPERATOR_TIME = "operator time"
TIME_MEANINGS = {
    CALL_TIME: "the user-facing call (lenet_ext.functional or our module; torch.nn.functional or torch's module "
    "on torch's side), its Python-side argument handling and checks included",
    OPERATOR_TIME: "the raw torch.ops.lenet_ext.* call (torch.ops.aten.* on torch's side): no Python-side "
    "argument handling; the dispatcher still runs lenet_ext.ops's autograd kernel, as for every caller",
}


# ------------------------------------------------------------------------------------------- output
def format_table(records, ceilings):
    """One line per row: its time under the name of what was timed, torch's, the ratio, the rates; then
    our operator time where the row timed a call, and whether L2 was flushed before each repetition."""
    head = (
        f"{'row':<58} {'timed as':<13} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>10} {'goal':>5}  "
        f"{'ours rate':>16} {'torch rate':>16}  {'ours operator time ms':>21}  L2"
    )
    lines = [
        f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, float32 matmul {ceilings['matmul_gflops']:.1f} GFLOP/s",
        head,
        "-" * len(head),
    ]
    for r in records:
        name = r["name"] if len(r["name"]) <= 58 else r["name"][:57] + "~"
        if r["status"] != "ok":
            lines.append(f"{name:<58} {r['status']}: {r['reason']}")
            continue
        goal = f"{r['goal']:.1f}x" if r["goal"] else ""
        operator = f"{1e3 * r['ours_operator']['median_s']:.3f}" if "ours_operator" in r else ""
        flushed = "flushed" if r["l2_flush"]["flushed"] else ""
        ours_ms, torch_ms = 1e3 * r["ours"]["median_s"], 1e3 * r["torch"]["median_s"]
        line = (
            f"{name:<58} {r['ours']['time']:<13} {ours_ms:9.3f} {torch_ms:9.3f} {r['ratio']:9.2f}x {goal:>5}  "
            f"{_rate(r, 'ours'):>16} {_rate(r, 'torch'):>16}  {operator:>21}  {flushed}"
        )
        lines.append(line.rstrip())
    lines += ["", *legend(records)]
    return "\n".join(lines)


def legend(records):
    """What the names in a table mean, and how L2 was treated: the lines under every table."""
    lines = [f"{name}: {meaning}" for name, meaning in TIME_MEANINGS.items()]
    flushed = [r["l2_flush"] for r in records if r.get("status") == "ok" and r["l2_flush"]["flushed"]]
    if flushed:
        mib = flushed[0]["flush_bytes"] / 2**20
        lines.append(
            f"L2 flushed: {len(flushed)} row(s) whose data fits in L2 had {mib:.0f} MiB written before each timed "
            "call (not timed; CUDA events around the call alone), so they start from a cold cache"
        )
    return lines


def _rate(record, side):
    s = record[side]
    frac = f" {100 * s['fraction_of_ceiling']:3.0f}%" if "fraction_of_ceiling" in s else ""
    return f"{s['rate']:.3g} {record['rate_unit']}{frac}"


def plot_ratios(records, path, title):
    """A horizontal bar per timed row, drawn from 1.0 to its ratio on a log axis (right of 1: ours faster),
    with its goal (GOALS) as a tick where the row has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in records if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 0.2 * max(len(timed), 1) + 1.1), dpi=72)
    ys = range(len(timed))
    ratios = [r["ratio"] for r in timed]
    colors = ["#2a7d2a" if x >= 1 else "#b03a2e" for x in ratios]
    ax.barh(ys, [x - 1 for x in ratios], left=1, color=colors, height=0.7)
    for y, r in zip(ys, timed):
        ax.annotate(f"{r['ratio']:.2f}x", (r["ratio"], y), xytext=(3 if r["ratio"] >= 1 else -3, 0),
                    textcoords="offset points", ha="left" if r["ratio"] >= 1 else "right", va="center",
                    fontsize=6)  # fmt: skip
        if r["goal"]:
            ax.plot([r["goal"]], [y], marker="|", markersize=9, color="black")
    ax.set_xscale("log")
    lo, hi = min(ratios + [1.0]), max(ratios + [1.0] + [r["goal"] or 1.0 for r in timed])
    ax.set_xlim(lo / 2, hi * 2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys), [r["name"] for r in timed], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("torch time / our time (right of 1: ours faster; | marks the goal)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
