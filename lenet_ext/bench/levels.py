"""The environment that holds a benchmark run to one CPU instruction-set level on both sides: our tile
kernels (``LENET_EXT_CPU_ISA``) and torch's own (ATen's CPU capability, oneDNN's and MKL's instruction
sets), so that the ratio is the one a CPU of that level would see. torch reads its variables when it
loads, so they are set before the process starts: ``bench/run.sh LEVEL=...`` evaluates what this module
prints, and ``bench/heuristic_check.py`` hands ``environment(level)`` to its child processes.

    python -m lenet_ext.bench.levels avx2     # prints one `export NAME=value` line per variable
"""

from __future__ import annotations

import sys

# torch's side of each level; avx512 leaves torch at its own best (this level needs an AVX-512 CPU anyway)
_TORCH_LIMITS = {
    "avx512": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
LEVELS = tuple(_TORCH_LIMITS)


def environment(level: str) -> dict[str, str]:
    """The variables that run both sides at ``level`` (one of LEVELS)."""
    if level not in _TORCH_LIMITS:
        raise ValueError(f"LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    return {"LENET_EXT_CPU_ISA": level, **_TORCH_LIMITS[level]}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m lenet_ext.bench.levels {{{','.join(LEVELS)}}}", file=sys.stderr)
        return 2
    try:
        env = environment(args[0])
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    for name, value in env.items():
        print(f"export {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
