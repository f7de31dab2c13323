"""The benchmark harness in smoke mode: every row is built, checked against torch, and run once.

No timing is asserted: only that the checks ran, the records are complete, and the files are written.
"""

import contextlib
import importlib.util
import io
import json
import pathlib

import pytest
import torch
from conftest import HAS_CUDA, needs_cuda

import lenet_ext
from lenet_ext import zoo
from lenet_ext.bench import cli, runner

CONVERTED_ROWS = [r for r in cli.ROWS if r.op.startswith("converted.")]
BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def quick_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path, plot_path = out / "r.json", out / "r.png"
    # one thread keeps the smoke run quick on a shared machine; the thread count must come back after
    threads = torch.get_num_threads()
    argv = ["--quick", "--device", request.param, "--threads", "1", "--json", str(json_path), "--plot", str(plot_path)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = cli.main(argv)
    assert torch.get_num_threads() == threads
    return code, json.loads(json_path.read_text()), plot_path, printed.getvalue()


def test_quick_run_writes_complete_json(quick_run):
    code, result, *_ = quick_run
    assert code == 0
    assert result["quick"] is True
    machine = result["machine"]
    for key in ("hostname", "platform", "cpu", "cpu_isa", "threads", "torch", "device", "lenet_ext"):
        assert machine[key] not in (None, ""), key
    assert machine["torch"] == torch.__version__ and machine["device"] in ("cpu", "cuda")
    assert machine["cpu_isa"] == lenet_ext.backends.cpu_isa() and result["cpu_isa_requested"] == "auto"
    assert result["ceilings"]["copy_gbps"] > 0 and result["ceilings"]["matmul_gflops"] > 0
    assert [r["name"] for r in result["rows"]] == [r.name for r in cli.ROWS]


def test_every_time_is_named_call_or_operator_time(quick_run):
    """Both sides of a row are timed alike, under one of the two names; a row that times a user-facing
    call also times our raw operator, as operator time; the table and the JSON say which is which."""
    _, result, _, stdout = quick_run
    assert set(result["times"]) == {cli.CALL_TIME, cli.OPERATOR_TIME}
    ok = {r["name"]: r for r in result["rows"] if r["status"] == "ok"}
    for name, r in ok.items():
        assert r["ours"]["time"] == r["torch"]["time"] in (cli.CALL_TIME, cli.OPERATOR_TIME), name
        if "ours_operator" in r:
            assert r["ours"]["time"] == cli.CALL_TIME and r["ours_operator"]["time"] == cli.OPERATOR_TIME
            assert r["ours_operator"]["median_s"] > 0 and r["ours_operator"]["rate"] > 0
    by_op = {}
    for r in ok.values():
        by_op.setdefault(r["op"], set()).add((r["ours"]["time"], "ours_operator" in r))
    call_and_operator = {(cli.CALL_TIME, True)}
    for op in ("conv2d.forward", "max_pool2d.forward", "avg_pool2d.forward", "lenet_block.forward"):
        assert by_op[op] == call_and_operator, op
    for op in ("conv2d.backward_input", "max_pool2d.backward", "avg_pool2d.forward+backward"):
        assert by_op[op] == {(cli.OPERATOR_TIME, False)}, op
    assert by_op["model.train_step"] == {(cli.CALL_TIME, False)}
    table = stdout[stdout.index("timed as") :]
    conv1 = next(line for line in table.splitlines() if line.startswith("conv2d.forward | LeNet conv1 "))
    operator_ms = 1e3 * ok["conv2d.forward | LeNet conv1"]["ours_operator"]["median_s"]
    assert cli.CALL_TIME in conv1 and f"{operator_ms:.3f}" in conv1
    for name, meaning in result["times"].items():
        assert f"{name}: {meaning}" in table


def test_l2_flush_is_recorded_for_every_timed_row(quick_run):
    """Each row records what it decided and why, from the sizes it records: on the CPU nothing is flushed;
    a kernel row knows its data size (inputs read, results written), a whole network does not."""
    _, result, *_ = quick_run
    assert result["l2_flush"] == "auto"
    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        plan = r["l2_flush"]
        assert plan == runner.l2_flush_plan("auto", result["machine"]["device"], plan["data_bytes"], plan["l2_bytes"])
        if result["machine"]["device"] == "cpu":
            assert plan["flushed"] is False and plan["l2_bytes"] is None and "cpu" in plan["why"]
        assert (plan["data_bytes"] is None) == r["op"].startswith(("model.", "converted.")), r["name"]
    conv1 = next(r for r in result["rows"] if r["name"] == "conv2d.forward | LeNet conv1")
    n, c, h, w, o, k = (conv1["shape"][key] for key in "nchwok")  # padding 2 keeps h x w
    assert conv1["l2_flush"]["data_bytes"] == 4 * (n * c * h * w + o * c * k * k + o + n * o * h * w)


def test_the_header_names_the_cpu_and_its_level(quick_run):
    _, result, _, stdout = quick_run
    machine = result["machine"]
    header = stdout.splitlines()[0]
    assert machine["cpu"] in header and f"CPU level {machine['cpu_isa']}" in header
    assert f"{machine['threads']} threads" in header


def test_every_row_is_checked_before_timing(quick_run):
    _, result, *_ = quick_run
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
    # conv2d and max pooling are on main from the start, and the converted networks need nothing else
    must_run = [r.name for r in cli.ROWS if r.op.startswith(("conv2d", "converted."))]
    assert set(must_run) <= set(by_status.get("ok", [])), set(must_run) - set(by_status.get("ok", []))


def test_plot_is_a_small_png(quick_run):
    _, _, plot_path, _ = quick_run
    data = plot_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 200_000


@pytest.mark.parametrize(
    "side, caught_by", [("ours", "Tensor-likes are not close"), ("operator", "our raw operator's result: Tensor")]
)
def test_wrong_result_fails_the_row_and_skips_timing(monkeypatch, side, caught_by):
    """Ours, or our raw operator where the row times it too, off by a bit: FAILED, and nothing is timed."""
    row = next(r for r in cli.ROWS if r.op == "conv2d.forward")
    real = cli.BUILDERS["conv2d.forward"]

    def off_by_a_bit(shape, device):
        case = real(shape, device)
        right = getattr(case, side)
        setattr(case, side, lambda: right() + 1e-2)
        return case

    monkeypatch.setitem(cli.BUILDERS, "conv2d.forward", off_by_a_bit)
    record = cli.run_row(row, torch.device("cpu"), {}, rounds=1, min_run_time=None, quick=True)
    assert record["status"] == "FAILED" and "ours" not in record and "ratio" not in record
    assert caught_by in record["reason"], record


def test_missing_operator_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setitem(cli.REQUIRES, "conv2d.forward", [("op", "no_such_operator")])
    row = next(r for r in cli.ROWS if r.op == "conv2d.forward")
    record = cli.run_row(row, torch.device("cpu"), {}, rounds=1, min_run_time=None, quick=True)
    assert record["status"] == "skipped"
    assert "no_such_operator" in record["reason"]


def test_filter_and_list(capsys):
    assert cli.main(["--list", "--filter", "LeNet CONV1"]) == 0
    names = capsys.readouterr().out.split("\n")
    assert names[0] and all("lenet conv1" in n.lower() for n in names if n)
    assert cli.main(["--quick", "--filter", "matches no row at all"]) == 2


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd"])
def test_conv_algorithm_is_forced_for_the_run_and_restored(tmp_path, algorithm):
    backends = pytest.importorskip("lenet_ext.backends")
    before = backends.current_conv_algorithm()
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "conv2d.forward |", "--conv-algorithm", algorithm]
    assert cli.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["conv_algorithm"] == algorithm
    assert {r["status"] for r in result["rows"]} == {"ok"}
    assert backends.current_conv_algorithm() == before


def test_cuda_settings_are_forced_for_the_run_recorded_and_restored(tmp_path):
    # the CUDA settings change nothing on the CPU rows, but the run records them and restores them after
    backends = pytest.importorskip("lenet_ext.backends")
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "lenet_block.forward |", "--cuda-conv-algorithm", "direct"]
    argv += ["--cuda-fused-block", "fused", "--cuda-pool-planar", "runs"]
    assert cli.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["cuda_conv_algorithm"] == "direct" and result["cuda_fused_block"] == "fused"
    assert result["cuda_pool_planar"] == "runs"
    assert {r["status"] for r in result["rows"]} == {"ok"}
    assert backends.current_cuda_conv_algorithm() == "auto" and backends.current_cuda_fused_block() == "auto"
    assert backends.current_cuda_pool_planar() == "auto"


# torchvision's published sizes (the num_params of each model's weights): the zoo must have its shapes
@pytest.mark.parametrize(
    "name, params, features",
    [("resnet18", 11_689_512, (512, 7, 7)), ("mobilenet_v2", 3_504_872, (1280, 7, 7)),
     ("squeezenet1_1", 1_235_496, (1000, 13, 13))],
)  # fmt: skip
def test_zoo_has_torchvisions_shapes(name, params, features):
    net = zoo.MODELS[name]().eval()
    assert sum(p.numel() for p in net.parameters()) == params
    pooled = [i for i, m in enumerate(net) if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    assert len(pooled) == 1
    with torch.no_grad():
        maps = net[: pooled[0]](torch.randn(1, 3, 224, 224))
        assert maps.shape == (1, *features) and net[pooled[0] :](maps).shape == (1, 1000)
        assert zoo.MODELS[name](num_classes=10).eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_convert_swaps_every_conv_and_pool_of_the_zoo():
    for build in zoo.MODELS.values():
        net = build()
        ours = lenet_ext.convert(net)
        kinds = {torch.nn.Conv2d: lenet_ext.nn.Conv2d, torch.nn.MaxPool2d: lenet_ext.nn.MaxPool2d}
        theirs_layers = [type(m) for m in net.modules() if type(m) in kinds]
        ours_layers = [type(m) for m in ours.modules() if isinstance(m, tuple(kinds))]
        assert theirs_layers and ours_layers == [kinds[t] for t in theirs_layers]


def _convert_then(monkeypatch, change):
    """Makes the harness's lenet_ext.convert hand back a network that ``change`` has altered (it gets the
    list of the converted network's convolutions): a stand-in for a kernel that computes the wrong thing."""
    real = lenet_ext.convert

    def convert(model, inplace=False):
        ours = real(model, inplace)
        change([m for m in ours.modules() if isinstance(m, lenet_ext.nn.Conv2d)])
        return ours

    monkeypatch.setattr(lenet_ext, "convert", convert)


def _run_quick(row):
    return cli.run_row(row, torch.device("cpu"), {}, rounds=1, min_run_time=None, quick=True)


@pytest.mark.parametrize("row", CONVERTED_ROWS, ids=lambda r: r.name)
def test_converted_row_fails_when_a_weight_is_off(monkeypatch, row):
    def scale_a_middle_conv(convs):
        with torch.no_grad():
            convs[len(convs) // 2].weight.mul_(1.01)

    _convert_then(monkeypatch, scale_a_middle_conv)
    record = _run_quick(row)
    assert record["status"] == "FAILED" and "ours" not in record and "ratio" not in record, record
    assert "not close" in record["reason"]


@pytest.mark.parametrize(
    "wrong, caught_by",
    [(lambda grad: grad * 1.001, "Tensor-likes are not close"),
     (lambda grad: -grad if grad.dtype == torch.float32 else grad, "||ours - torch|| / ||torch||")],
    ids=["0.1% off", "float32 only, sign flipped"],
)  # fmt: skip
def test_train_step_row_checks_the_last_gradient_computed(monkeypatch, wrong, caught_by):
    """A forward that is right and one gradient wrong, the stem's (the last one backward reaches): a little
    in both dtypes (the float64 check's to catch), or grossly in float32 only (the norm-wise check's, as a
    float32-only kernel bug would be). The same row passes in the quick run."""
    row = next(r for r in CONVERTED_ROWS if r.op == "converted.train_step")
    _convert_then(monkeypatch, lambda convs: convs[0].weight.register_hook(wrong))
    record = _run_quick(row)
    assert record["status"] == "FAILED" and caught_by in record["reason"], record


@pytest.mark.parametrize("level", ["default", "avx2", "avx512"])
def test_cpu_isa_is_forced_for_the_run_and_restored(tmp_path, capsys, level):
    """A level this build and CPU offer is used and recorded; one they lack is refused (exit 2, no
    traceback); either way the level in force before comes back."""
    backends = lenet_ext.backends
    before = backends.cpu_isa()
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "converted.inference | SqueezeNet", "--cpu-isa", level]
    code = cli.main([*argv, "--json", str(path)])
    out = capsys.readouterr()
    assert backends.cpu_isa() == before
    if level not in backends.available_cpu_isas():
        assert code == 2 and f"--cpu-isa {level}" in out.err and not path.exists()
        return
    assert code == 0
    result = json.loads(path.read_text())
    assert result["machine"]["cpu_isa"] == level and result["cpu_isa_requested"] == level
    assert f"CPU level {level}" in out.out.splitlines()[0]
    assert {r["status"] for r in result["rows"]} == {"ok"}


def test_level_environment_holds_both_sides_to_the_level(capsys):
    from lenet_ext.bench import levels

    env = levels.environment("avx2")
    assert env["LENET_EXT_CPU_ISA"] == "avx2"
    assert (env["ATEN_CPU_CAPABILITY"], env["ONEDNN_MAX_CPU_ISA"], env["MKL_ENABLE_INSTRUCTIONS"]) == (
        "avx2",
        "AVX2",
        "AVX2",
    )
    assert levels.environment("avx512") == {"LENET_EXT_CPU_ISA": "avx512"}
    assert levels.main(["default"]) == 0
    assert "export ONEDNN_MAX_CPU_ISA=SSE41" in capsys.readouterr().out.splitlines()
    with pytest.raises(ValueError, match="LEVEL must be one of avx512, avx2, default"):
        levels.environment("avx1024")
    assert levels.main(["avx1024"]) == 2
    assert "avx1024" in capsys.readouterr().err


MIB = 1 << 20


@pytest.mark.parametrize(
    "device, data, l2, flushed, flush_bytes, why",
    [
        ("cpu", 1 * MIB, None, False, None, "no L2 flush on cpu"),
        ("cuda", 10 * MIB, 50 * MIB, True, 100 * MIB, "fits in L2"),
        ("cuda", 50 * MIB, 50 * MIB, True, 100 * MIB, "fits in L2"),
        ("cuda", 50 * MIB + 1, 50 * MIB, False, None, "larger than L2"),
        ("cuda", None, 50 * MIB, False, None, "not known"),
        ("cuda", 200 * MIB, None, True, 256 * MIB, "fits in L2"),  # L2 not reported: at most 256 MiB assumed
        ("cuda", 300 * MIB, None, False, None, "larger than L2"),
    ],
)
def test_l2_flush_plan_flushes_cuda_rows_whose_data_fits_in_l2(device, data, l2, flushed, flush_bytes, why):
    plan = runner.l2_flush_plan("auto", device, data, l2)
    assert plan["flushed"] is flushed and why in plan["why"]
    assert (plan["setting"], plan["data_bytes"], plan["l2_bytes"]) == ("auto", data, l2)
    assert plan.get("flush_bytes") == flush_bytes
    if flushed:
        assert plan["flush_bytes"] > (l2 or 0) and plan["flush_bytes"] >= data
    off = runner.l2_flush_plan("off", device, data, l2)
    assert off["flushed"] is False and off["setting"] == "off" and "flush_bytes" not in off
    with pytest.raises(ValueError, match="l2_flush must be one of auto, off, got 'on'"):
        runner.l2_flush_plan("on", device, data, l2)


def test_l2_flush_setting_is_recorded(tmp_path):
    path = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--filter", "conv2d.forward | LeNet conv1", "--l2-flush", "off"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["l2_flush"] == "off" and result["schema"] == cli.SCHEMA
    (row,) = result["rows"]
    assert row["l2_flush"]["setting"] == "off" and row["l2_flush"]["flushed"] is False


def test_flushed_timing_writes_l2_before_each_call_and_times_the_call_alone(monkeypatch):
    """The CUDA path's host-side logic, with torch.cuda's events and synchronisation stood in for: before
    each call the buffer is written and the GPU waited for; the events enclose the call and nothing else;
    a block's time is the mean of its calls' event times, in seconds."""
    log = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self, stream):
            assert stream == "stream"
            self.at = len(log)
            log.append("event")

        def elapsed_time(self, end):
            return float(end.at - self.at)  # "ms": the log entries between the two marks

    class Buffer:
        device = torch.device("cuda", 0)

        def zero_(self):
            log.append("flush")

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: "stream")
    times = runner.time_after_flush(lambda: log.append("call"), Buffer(), min_run_time=None)
    assert log == ["flush", "sync", "event", "call", "event", "sync"] and times == [2e-3]

    log.clear()
    times = runner.time_after_flush(lambda: log.append("call"), Buffer(), min_run_time=1e-9)
    one_call = ["flush", "sync", "event", "call", "event"]
    assert log == one_call * runner.FLUSHED_BLOCK + ["sync"] and times == [2e-3]


def test_time_interleaved_times_every_side(monkeypatch):
    """Each side gets one list of block times per round; the order rotates, so none is always first."""
    calls = []

    def side(name):
        return lambda: calls.append(name)

    real_timer = runner.torch_benchmark.Timer

    def timer(stmt, globals, num_threads):
        calls.append("start")
        return real_timer(stmt, globals=globals, num_threads=num_threads)

    monkeypatch.setattr(runner.torch_benchmark, "Timer", timer)
    sides = {"ours": side("ours"), "torch": side("torch"), "ours_operator": side("ours_operator")}
    times = runner.time_interleaved(sides, rounds=3, min_run_time=None)
    assert {who: len(t) for who, t in times.items()} == {"ours": 3, "torch": 3, "ours_operator": 3}
    starts = [i for i, c in enumerate(calls) if c == "start"]
    firsts = [calls[i + 1] for i in starts[::3]]
    assert firsts == ["ours", "torch", "ours_operator"]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal without a GPU")
def test_gpu_speed_refuses_the_cpu_with_a_clear_message(capsys):
    assert _load_script("gpu_speed").main([]) == 2
    assert "no CUDA device; this script times CUDA kernels only" in capsys.readouterr().err


def test_gpu_speed_rows_check_on_the_cpu():
    """The script's own cases (forward + backward through autograd, pooling with indices) and the suite
    rows it reuses, shrunk: each side and our operator agree with torch, and are timed under their names."""
    gpu_speed = _load_script("gpu_speed")
    ceilings = {"copy_gbps": 1.0, "matmul_gflops": 1.0}
    for row, build in gpu_speed.JOBS:
        record = runner.run_row(row, torch.device("cpu"), ceilings, 1, None, quick=True, build=build)
        assert record["status"] == "ok", record
        assert record["ours"]["time"] == cli.CALL_TIME
        assert record["ours_operator"]["time"] == cli.OPERATOR_TIME


def test_pool_variants_runs_through_the_harness(tmp_path):
    path = tmp_path / "pool.json"
    pool_variants = _load_script("pool_variants")
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert pool_variants.main(["--quick", "--threads", "1", "--json", str(path)]) == 0
    torch.set_num_threads(threads)
    result = json.loads(path.read_text())
    assert [r["what"] for r in result["rows"]] == [case[0] for case in pool_variants.CASES]
    for r in result["rows"]:
        assert r["status"] == "ok" and r["ours"]["time"] == cli.CALL_TIME, r
        assert r["ours_operator"]["time"] == cli.OPERATOR_TIME
        assert r["l2_flush"]["flushed"] is False and r["l2_flush"]["data_bytes"] > 0
    assert "ours operator time ms" in printed.getvalue()


def test_host_time_runs_through_the_harness(tmp_path):
    """Its rows (conv with and without gradients, the backward through autograd, pooling with a gradient
    wanted) agree with torch, and each is timed as a call with our raw operator beside it."""
    path = tmp_path / "host.json"
    host_time = _load_script("host_time")
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()):
        assert host_time.main(["--quick", "--threads", "1", "--json", str(path)]) == 0
    torch.set_num_threads(threads)
    result = json.loads(path.read_text())
    assert [r["what"] for r in result["rows"]] == [row.what for row, _ in host_time.JOBS]
    for r in result["rows"]:
        assert r["status"] == "ok" and r["ours"]["time"] == cli.CALL_TIME, r
        assert r["ours_operator"]["time"] == cli.OPERATOR_TIME


@pytest.fixture(scope="module")
def layer_profile_run(tmp_path_factory):
    """bench/layer_profile.py in smoke mode on every network, at the lowest CPU level (forced, then restored)."""
    path = tmp_path_factory.mktemp("layers") / "layers.json"
    layer_profile = _load_script("layer_profile")
    level, before = lenet_ext.backends.available_cpu_isas()[0], lenet_ext.backends.cpu_isa()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = layer_profile.main(["--quick", "--threads", "1", "--cpu-isa", level, "--json", str(path)])
    assert torch.get_num_threads() == threads and lenet_ext.backends.cpu_isa() == before
    return layer_profile, code, level, json.loads(path.read_text()), printed.getvalue()


def test_layer_profile_checks_then_times_every_layer_and_pass(layer_profile_run):
    """Each conv and pooling layer of each network, at each pass its run needs (ResNet-18's training step:
    forward, input gradient but for the stem's images, weight gradient but for pooling; inference: forward),
    is checked against torch's same layer on the same tensors, then timed; the records name the layer, the
    run its machine and level, and the table shows every network and pass."""
    layer_profile, code, level, result, printed = layer_profile_run
    assert code == 0
    assert result["machine"]["cpu_isa"] == level and result["cpu_isa_requested"] == level
    assert result["machine"]["torch"] == torch.__version__ and result["quick"] is True and result["date"]
    assert [(n["model"], n["training_step"]) for n in result["networks"]] == list(layer_profile.MODELS.items())

    expected = []
    for model, train in layer_profile.MODELS.items():
        for name, m in lenet_ext.convert(zoo.MODELS[model]()).named_modules():
            if type(m) in layer_profile.KINDS:
                kind = layer_profile.KINDS[type(m)]
                passes = ["forward"] + ["backward_input"] * (train and name != "0.0")
                passes += ["backward_weight"] * (train and kind == "conv2d")
                expected += [(model, name, f"layer.{kind}.{p}") for p in passes]
    assert [(r["shape"]["model"], r["shape"]["name"], r["op"]) for r in result["rows"]] == expected

    for r in result["rows"]:
        assert r["status"] == "ok" and r["check"]["passed"] is True and r["check"]["max_abs_diff"] >= 0, r["name"]
        for side in ("ours", "torch"):
            assert r[side]["time"] == cli.CALL_TIME and r[side]["median_s"] > 0 and r[side]["fraction_of_ceiling"] > 0
        assert r["ratio"] == pytest.approx(r["torch"]["median_s"] / r["ours"]["median_s"])
    for model, train in layer_profile.MODELS.items():
        mode = "training step" if train else "inference"
        for pass_ in ["forward", "input grad", "weight grad"] if train else ["forward"]:
            assert f"{model}, {mode}: {pass_}\n" in printed


def test_layer_profile_fails_a_wrong_layer_and_times_nothing_of_it(monkeypatch, tmp_path):
    """A converted conv whose weight is off by 1%: its forward and input gradient FAIL their check and are not
    timed, the run exits 1; its weight gradient, which never reads the weight, and every other layer pass."""

    def scale_a_middle_conv(convs):
        with torch.no_grad():
            convs[len(convs) // 2].weight.mul_(1.01)

    _convert_then(monkeypatch, scale_a_middle_conv)
    path = tmp_path / "layers.json"
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()):
        argv = ["--quick", "--threads", "1", "--model", "resnet18", "--json", str(path)]
        code = _load_script("layer_profile").main(argv)
    torch.set_num_threads(threads)
    assert code == 1
    rows = json.loads(path.read_text())["rows"]
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert {r["op"] for r in failed} == {"layer.conv2d.forward", "layer.conv2d.backward_input"}
    assert len({r["what"] for r in failed}) == 1 and all("not close" in r["reason"] and "ours" not in r for r in failed)
    assert all(r["status"] == "ok" for r in rows if r not in failed)
