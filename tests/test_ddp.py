"""Data-parallel training: two CPU processes under torchrun (gloo), our layers, parameters kept identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_two_process_ddp_keeps_parameters_identical(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "lenet_ext", "train", "--epochs", "1", "--limit", "256", "--batch-size", "32", "--no-compare-builtin",
         "--json", str(tmp_path / "m.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["world_size"] == 2
    # Each rank saw its own half of the digits, so only DDP's gradient averaging keeps them equal.
    assert metrics["ddp_param_spread"] == 0.0
    assert metrics["history"][0]["loss"] > 0
    assert out.stdout.count("test accuracy: ours") == 1, "only rank 0 reports"
