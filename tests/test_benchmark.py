"""The benchmark harness in smoke mode: every row is built, checked against torch, and run once.

No timing is asserted: only that the checks ran, the records are complete, and the files are written.
"""

import json

import pytest
import torch
from conftest import needs_cuda

from lenet_ext import benchmark


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def quick_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path, plot_path = out / "r.json", out / "r.png"
    # one thread keeps the smoke run quick on a shared machine; the thread count must come back after
    threads = torch.get_num_threads()
    argv = ["--quick", "--device", request.param, "--threads", "1", "--json", str(json_path), "--plot", str(plot_path)]
    code = benchmark.main(argv)
    assert torch.get_num_threads() == threads
    return code, json.loads(json_path.read_text()), plot_path


def test_quick_run_writes_complete_json(quick_run):
    code, result, _ = quick_run
    assert code == 0
    assert result["quick"] is True
    machine = result["machine"]
    for key in ("hostname", "platform", "cpu", "threads", "torch", "device", "lenet_ext"):
        assert machine[key] not in (None, ""), key
    assert machine["torch"] == torch.__version__ and machine["device"] in ("cpu", "cuda")
    assert result["ceilings"]["copy_gbps"] > 0 and result["ceilings"]["matmul_gflops"] > 0
    assert [r["name"] for r in result["rows"]] == [r.name for r in benchmark.ROWS]


def test_every_row_is_checked_before_timing(quick_run):
    _, result, _ = quick_run
    by_status = {}
    for r in result["rows"]:
        by_status.setdefault(r["status"], []).append(r["name"])
        if r["status"] == "ok":
            assert r["check"]["passed"] is True
            for side in ("ours", "torch"):
                assert r[side]["median_s"] > 0 and r[side]["blocks"] >= 1 and r[side]["rate"] > 0
            assert r["ratio"] == pytest.approx(r["torch"]["median_s"] / r["ours"]["median_s"])
            if r["work_unit"] in ("flop", "byte"):
                assert r["ours"]["fraction_of_ceiling"] > 0
        else:
            assert r["reason"] and "ours" not in r, r
    assert "FAILED" not in by_status, by_status.get("FAILED")
    # conv2d is on main from the start: its rows must run, not be skipped
    assert all(n in by_status.get("ok", []) for n in (r.name for r in benchmark.ROWS if r.op.startswith("conv2d")))


def test_plot_is_a_small_png(quick_run):
    _, _, plot_path = quick_run
    data = plot_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 200_000


def test_wrong_result_fails_the_row_and_skips_timing(monkeypatch):
    row = next(r for r in benchmark.ROWS if r.op == "conv2d.forward")
    real = benchmark.BUILDERS["conv2d.forward"]

    def off_by_a_bit(shape, device):
        case = real(shape, device)
        ours = case.ours
        case.ours = lambda: ours() + 1e-2
        return case

    monkeypatch.setitem(benchmark.BUILDERS, "conv2d.forward", off_by_a_bit)
    record = benchmark.run_row(row, torch.device("cpu"), {}, rounds=1, min_run_time=None, quick=True)
    assert record["status"] == "FAILED" and "ours" not in record and "ratio" not in record
    assert "AssertionError" in record["reason"] or "not close" in record["reason"]


def test_missing_operator_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setitem(benchmark.REQUIRES, "conv2d.forward", [("op", "no_such_operator")])
    row = next(r for r in benchmark.ROWS if r.op == "conv2d.forward")
    record = benchmark.run_row(row, torch.device("cpu"), {}, rounds=1, min_run_time=None, quick=True)
    assert record["status"] == "skipped"
    assert "no_such_operator" in record["reason"]


def test_filter_and_list(capsys):
    assert benchmark.main(["--list", "--filter", "LeNet CONV1"]) == 0
    names = capsys.readouterr().out.split("\n")
    assert names[0] and all("lenet conv1" in n.lower() for n in names if n)
    assert benchmark.main(["--quick", "--filter", "matches no row at all"]) == 2


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_conv_algorithm_is_forced_for_the_run_and_restored(tmp_path, algorithm):
    backends = pytest.importorskip("lenet_ext.backends")
    before = backends.current_conv_algorithm()
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "conv2d.forward |", "--conv-algorithm", algorithm]
    assert benchmark.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["conv_algorithm"] == algorithm
    assert {r["status"] for r in result["rows"]} == {"ok"}
    assert backends.current_conv_algorithm() == before
