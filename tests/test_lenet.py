"""LeNet from our layers against its torch.nn twin, convert(), and training checkpoints."""

import copy

import pytest
import torch
import torch.nn.functional as torch_F
from torch import nn

import lenet_ext
from lenet_ext.data import load_digits
from lenet_ext.models import MODELS, LeNet, ModernLeNet, builtin_twin
from lenet_ext.train import TrainConfig, load_checkpoint, train

OURS = {nn.Conv2d: lenet_ext.nn.Conv2d, nn.MaxPool2d: lenet_ext.nn.MaxPool2d, nn.AvgPool2d: lenet_ext.nn.AvgPool2d}


def test_lenet_shapes_after_each_layer_match_the_seed():
    model = LeNet()
    shapes = {}
    x = torch.rand(2, 1, 28, 28)
    for index, layer in enumerate(model):
        x = layer(x)
        shapes[index] = tuple(x.shape[1:])
    assert [shapes[i] for i in (0, 2, 3, 5, 6, 7, 9, 11)] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (400,), (120,), (84,), (10,)
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_use_our_layers_and_the_twin_torchs(name):
    ours, twin = MODELS[name](), MODELS[name](builtin=True)
    for a, b in zip(ours, twin):
        if type(b) in OURS:
            assert type(a) is OURS[type(b)]
        else:
            assert type(a) is type(b)
    expected = (nn.AvgPool2d, nn.Sigmoid) if name == "lenet" else (nn.MaxPool2d, nn.ReLU)
    assert (type(twin[2]), type(twin[1])) == expected


def test_state_dicts_are_interchangeable_with_the_twin_and_a_d2l_sequential():
    d2l = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip
    ours = LeNet()
    ours.load_state_dict(d2l.state_dict())
    twin = LeNet(builtin=True)
    twin.load_state_dict(ours.state_dict())
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(ours(x), d2l(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(twin(x), d2l(x), rtol=0, atol=0)


def test_builtin_twin_copies_weights_without_sharing_or_using_the_rng():
    model = ModernLeNet().double()
    state = torch.random.get_rng_state()
    twin = builtin_twin(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert type(twin) is ModernLeNet and twin.builtin and next(twin.parameters()).dtype == torch.float64
    for (ka, a), (kb, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert ka == kb and torch.equal(a, b) and a.data_ptr() != b.data_ptr()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_matches_the_twin_step_for_step_on_real_digits(name, device):
    digits = load_digits("train", limit=64 * 25).to(device)
    torch.manual_seed(1)
    ours = MODELS[name]().to(device)
    twin = builtin_twin(ours)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=2e-3)
    opt_twin = torch.optim.Adam(twin.parameters(), lr=2e-3)
    initial = [p.detach().clone() for p in twin.parameters()]
    losses = []
    for x, y in zip(digits.images.split(64), digits.labels.split(64)):  # 25 steps
        step = []
        for model, opt in ((ours, opt_ours), (twin, opt_twin)):
            opt.zero_grad()
            loss = torch_F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step.append(loss.item())
        losses.append(step)
    assert len(losses) == 25
    for ours_loss, twin_loss in losses:
        assert abs(ours_loss - twin_loss) / twin_loss < 1e-4
    # The weights moved far more than the tolerance below, so agreeing within it means something.
    assert max(float((p.detach() - p0).abs().max()) for p, p0 in zip(twin.parameters(), initial)) > 1e-2
    for (key, a), b in zip(ours.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cuda_graph_training_replays_the_eager_steps(optimizer):
    """`lenet-ext train --device cuda --cuda-graph`: both networks' steps replayed as CUDA graphs (our
    operators captured with the rest) give the eager run's losses, step for step, and both speeds."""
    common = dict(device="cuda", epochs=2, batch_size=64, optimizer=optimizer, progress=False)
    quiet = lambda *_: None  # noqa: E731
    eager = train(TrainConfig(limit=64 * 9, **common), log=quiet)  # full batches: the same steps both ways
    graphed = train(TrainConfig(limit=64 * 9, cuda_graph=True, **common), log=quiet)
    for e, g in zip(eager["history"], graphed["history"], strict=True):
        for key in ("loss", "builtin_loss"):
            assert abs(e[key] - g[key]) <= 1e-4 * abs(e[key]), (key, e[key], g[key])
        for key in ("test_accuracy", "builtin_test_accuracy"):
            assert abs(e[key] - g[key]) <= 5e-3, (key, e[key], g[key])
    assert graphed["max_loss_gap"] < 1e-3
    assert graphed["images_per_second"] > 0 and graphed["builtin_images_per_second"] > 0
    assert graphed["config"]["cuda_graph"] is True
    # a partial last batch is left out, and the replays go on across epochs
    partial = train(TrainConfig(limit=64 * 4 + 20, cuda_graph=True, **common), log=quiet)
    assert len(partial["history"]) == 2 and partial["max_loss_gap"] < 1e-3


# --------------------------------------------------------------------------------------------- convert
class KeepMyForward(nn.Conv2d):
    """A user's Conv2d subclass: convert() must leave it alone."""

    def forward(self, x):
        return super().forward(x) * 2


class Residual(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2, padding_mode="reflect"), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        )  # fmt: skip
        self.stages = nn.ModuleList([Residual(8, 8), Residual(8, 16, stride=2)])
        self.side = KeepMyForward(16, 16, 1)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(self.side(x)).mean((2, 3)))


def test_convert_swaps_exactly_torchs_conv_and_pool_in_nested_models():
    reference = TinyResNet().double()
    reference(torch.rand(4, 3, 33, 31, dtype=torch.float64))  # give BatchNorm running stats
    reference.eval()
    before = copy.deepcopy(reference)
    converted = lenet_ext.convert(reference)

    assert converted is not reference
    swapped = 0
    for (name, a), (_, b) in zip(converted.named_modules(), reference.named_modules()):
        assert type(b) is type(dict(before.named_modules())[name]), "inplace=False must leave the model alone"
        if type(b) in OURS:
            assert type(a) is OURS[type(b)], name
            swapped += 1
        else:
            assert type(a) is type(b), name
        assert a.extra_repr() == b.extra_repr() and a.training == b.training
    assert swapped == 8  # 5 convs in the blocks, the stem's conv and max pool, the avg pool
    assert type(converted.side) is KeepMyForward

    sd_a, sd_b = converted.state_dict(), reference.state_dict()
    assert list(sd_a) == list(sd_b)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)

    x = torch.rand(2, 3, 33, 31, dtype=torch.float64, requires_grad=True)
    y_ours, y_ref = converted(x), reference(x)
    torch.testing.assert_close(y_ours, y_ref)
    g_ours = torch.autograd.grad(y_ours.sum(), [x, *converted.parameters()])
    g_ref = torch.autograd.grad(y_ref.sum(), [x, *reference.parameters()])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


def test_convert_inplace_keeps_the_parameter_tensors():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.AvgPool2d(2)))
    params = list(model.parameters())
    assert lenet_ext.convert(model, inplace=True) is model
    assert type(model[0]) is lenet_ext.nn.Conv2d and type(model[1][0]) is lenet_ext.nn.AvgPool2d
    assert all(a is b for a, b in zip(model.parameters(), params))


def test_convert_a_bare_layer_and_a_model_without_any():
    layer = lenet_ext.convert(nn.MaxPool2d(2, return_indices=True))
    assert type(layer) is lenet_ext.nn.MaxPool2d and layer.return_indices
    mlp = nn.Sequential(nn.Linear(2, 2))
    assert type(lenet_ext.convert(mlp)[0]) is nn.Linear


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_resume(tmp_path):
    common = dict(limit=256, batch_size=64, compare_builtin=False, progress=False)
    straight = train(TrainConfig(epochs=2, save=str(tmp_path / "straight.pt"), **common), log=lambda *_: None)
    train(TrainConfig(epochs=1, save=str(tmp_path / "half.pt"), **common), log=lambda *_: None)
    resumed = train(
        TrainConfig(epochs=2, resume=str(tmp_path / "half.pt"), save=str(tmp_path / "resumed.pt"), **common),
        log=lambda *_: None,
    )
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][1]["loss"] == pytest.approx(straight["history"][1]["loss"], rel=1e-6)

    a, resume_state = load_checkpoint(tmp_path / "straight.pt")
    b, _ = load_checkpoint(tmp_path / "resumed.pt")
    assert resume_state["epoch"] == 2 and resume_state["model"] == "lenet"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)

    twin = LeNet(builtin=True)
    twin.load_state_dict(torch.load(tmp_path / "straight.pt", weights_only=True))  # strict, as it is
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file is renamed into place"


def test_fused_and_layer_by_layer_lenet_agree():
    torch.manual_seed(0)
    fused = LeNet().double()
    layered = LeNet(fused=False).double()
    layered.load_state_dict(fused.state_dict())
    assert fused.fused and not layered.fused and not LeNet(builtin=True).fused
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(fused(x), layered(x))
    fused(x).square().sum().backward()
    layered(x).square().sum().backward()
    for a, b in zip(fused.parameters(), layered.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
