"""``lenet-ext`` as users run it: ``python -m lenet_ext`` in a subprocess, with the checkout on the path."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from lenet_ext import backends, cli
from lenet_ext.models import LeNet

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "lenet_ext", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_train_smoke_run_writes_json_plot_and_checkpoint(tmp_path):
    out = run_cli(
        "train", "--epochs", "1", "--limit", "320", "--batch-size", "32",
        "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "c.png"), "--save", str(tmp_path / "ck.pt"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("test_accuracy", "builtin_test_accuracy", "max_loss_gap", "seconds", "images_per_second",
                "builtin_images_per_second", "epochs", "device", "torch_version"):  # fmt: skip
        assert metrics[key] is not None, key
    assert metrics["epochs"] == 1 and metrics["device"] == "cpu" and metrics["torch_version"] == torch.__version__
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["images_per_second"] > 0
    assert metrics["max_loss_gap"] < 1e-3
    assert len(metrics["history"]) == 1 and metrics["config"]["limit"] == 320 and metrics["threads"] == 1
    # a speed names the instruction-set level of the CPU kernels that made it, from the first line on
    assert metrics["cpu_isa"] == backends.cpu_isa()
    assert f"CPU level {metrics['cpu_isa']}" in out.stdout.splitlines()[0]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    LeNet(builtin=True).load_state_dict(torch.load(tmp_path / "ck.pt", weights_only=True))
    # The final accuracies of both are printed; no progress bar when stdout is not a terminal.
    assert "test accuracy: ours" in out.stdout and "torch.nn twin" in out.stdout
    assert "it/s" not in out.stdout + out.stderr


def test_train_without_the_twin(tmp_path, capsys):
    argv = ["train", "--epochs", "1", "--limit", "128", "--no-compare-builtin", "--optimizer", "sgd", "--lr", "0.9",
            "--batch-size", "64", "--json", str(tmp_path / "m.json")]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["builtin_test_accuracy"] is None and metrics["builtin_images_per_second"] is None
    assert metrics["config"]["optimizer"] == "sgd" and metrics["config"]["lr"] == 0.9
    assert "twin" not in capsys.readouterr().out.split("\n", 1)[1]


def test_train_reports_bad_data_dir(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "1", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet-ext train: ") and "train-images-idx3-ubyte" in err and "Traceback" not in err


def test_train_cuda_graph_needs_cuda(capsys):
    assert cli.main(["train", "--epochs", "1", "--limit", "128", "--cuda-graph"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet-ext train: cuda_graph") and "needs device 'cuda'" in err and "Traceback" not in err


def test_shapes_prints_the_output_size_arithmetic(capsys):
    assert cli.main(["shapes"]) == 0
    out = capsys.readouterr().out
    assert "(28 + 2·2 − 5)/1 + 1 = 28" in out
    assert "(28 + 2·0 − 2)/2 + 1 = 14" in out
    assert "(14 + 2·0 − 5)/1 + 1 = 10" in out
    assert "(10 + 2·0 − 2)/2 + 1 = 5" in out
    assert [line.split()[-1] for line in out.splitlines() if "Linear" in line] == ["120", "84", "10"]


def test_shapes_arithmetic_rounds_as_torch_does():
    assert cli._formula(torch.nn.MaxPool2d(3, 2, ceil_mode=True), (10, 10)) == "⌈(10 + 2·0 − 3)/2⌉ + 1 = 5"
    assert cli._formula(torch.nn.Conv2d(1, 1, 3, stride=2, dilation=2), (10, 9)) == (
        "H: ⌊(10 + 2·0 − 2·(3 − 1) − 1)/2⌋ + 1 = 3;  W: (9 + 2·0 − 2·(3 − 1) − 1)/2 + 1 = 3"
    )


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("lenet_ext.bench.cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "lenet_ext.bench.cli", fake)
    assert cli.main(["bench", "--quick", "--json", "x.json"]) == 0
    assert seen == [["--quick", "--json", "x.json"]]


def test_bench_header_and_json_name_the_cpu_and_its_level(tmp_path):
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "SqueezeNet", "--cpu-isa", "auto", "--json", str(path)]
    out = run_cli("bench", *argv)
    assert out.returncode == 0, out.stderr
    machine = json.loads(path.read_text())["machine"]
    assert machine["cpu_isa"] == backends.cpu_isa() and machine["cpu"]
    header = out.stdout.splitlines()[0]
    assert header.startswith(machine["cpu"]) and f"CPU level {machine['cpu_isa']}" in header


def test_bench_without_the_harness_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lenet_ext.bench.cli", None)  # makes the import fail as if absent
    assert cli.main(["bench"]) == 2
    assert "no benchmark harness" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["train", "--optimizer", "rmsprop"], ["train", "--batch-size", "0"], ["train", "--epochs", "x"],
     ["shapes", "--model", "vgg"], []],
)  # fmt: skip
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
