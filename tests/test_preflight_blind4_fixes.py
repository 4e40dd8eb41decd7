"""The preflight fixes after the fourth blind run (docs/checks_heldout.md, section 13), each on a planted
case unlike the catalog's: a ReZero-style residual MLP (gains of 1e-5 at init) and spectral_norm on a plain
MLP are correct and stay quiet, while vanishing gradients and unscaled dropout in the same models are
still caught; a frozen pretrained part is a note, not a warning."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

import recipe_kit as rk
from recipe_kit.preflight import preflight

ADAM = lambda p: torch.optim.Adam(p, 1e-3)


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return rk.bugs.standardize(train.images[:600]), train.labels[:600]


def severities(report, check):
    return {p.severity for p in report.problems if p.check == check}


class ReZeroMLP(nn.Module):
    """x + alpha * f(x) per block, alpha near 0 at init (ReZero, Bachlechner et al. 2020, starts at exactly 0,
    where the blocks get no gradient at all; 1e-5 leaves them a tiny one)."""

    def __init__(self, depth=4, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(784, 64))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(64, 64), act(), nn.Linear(64, 64)) for _ in range(depth))
        self.alpha = nn.Parameter(torch.full((depth,), 1e-5))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = self.stem(x)
        for a, block in zip(self.alpha, self.blocks):
            h = h + a * block(h)
        return self.head(h)


def sigmoid_stack(depth=12):
    """Vanishing gradients by construction: a deep plain stack of Linear + Sigmoid."""
    layers = [nn.Flatten(), nn.Linear(784, 64), nn.Sigmoid()]
    for _ in range(depth):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def test_a_gain_that_starts_at_zero_is_no_vanishing_gradient(fmnist):
    rk.seed_everything(0)
    report = preflight(ReZeroMLP(), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert not severities(report, "grad_norms"), str(report)
    stats = report.details["stats"]["grad_norms"]
    assert stats["spread"] > 1e4 > stats["spread_gates_opened"]      # closed, it would warn (1e4) or fail (1e6)


def test_vanishing_gradients_behind_an_opened_gate_are_still_caught(fmnist):
    class GatedSigmoidStack(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.gate = sigmoid_stack(), nn.Parameter(torch.zeros(1))
            self.skip = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

        def forward(self, x):
            return self.body(x) + self.gate * self.skip(x)

    for model in (sigmoid_stack(), GatedSigmoidStack()):
        rk.seed_everything(0)
        report = preflight(model, fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
        assert "error" in severities(report, "grad_norms"), str(report)


class SpectralMLP(nn.Module):
    """spectral_norm on every hidden layer: its power iteration updates state in every train-mode forward."""

    def __init__(self, drop=None):
        super().__init__()
        self.a, self.b = spectral_norm(nn.Linear(784, 128)), spectral_norm(nn.Linear(128, 128))
        self.head, self.drop = nn.Linear(128, 10), drop

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        if self.drop and self.training:        # BUG when drop: dropout by hand, kept units not scaled by 1/(1-p)
            h = h * (torch.rand_like(h) > self.drop)
        return self.head(torch.relu(self.b(h)))


def test_spectral_norm_state_is_neither_train_eval_gap_nor_nondeterminism(fmnist):
    rk.seed_everything(0)
    report = preflight(SpectralMLP(), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="full")
    assert report.ok and not report.warnings, str(report)
    assert report.details["stats"]["zero_grad"]["extra"] > 0        # the state does change the gradient a little


def test_unscaled_dropout_in_a_spectral_norm_model_is_still_caught(fmnist):
    rk.seed_everything(0)
    report = preflight(SpectralMLP(drop=0.5), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step,
                       budget="full")
    assert "error" in severities(report, "train_eval_consistency"), str(report)


def test_a_frozen_pretrained_part_is_a_note(fmnist):
    rk.seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = ADAM(model.parameters())
    for i in range(30):                                      # "pretrained": trained a little, then frozen
        rk.bugs.standard_step(model, (fmnist[0][i * 16:(i + 1) * 16], fmnist[1][i * 16:(i + 1) * 16]),
                              nn.CrossEntropyLoss(), opt)
    model[1].requires_grad_(False)
    report = preflight(model, fmnist, nn.CrossEntropyLoss(), lambda p: ADAM([q for q in p if q.requires_grad]),
                       rk.bugs.standard_step, budget="fast")
    assert not severities(report, "optimizer_params"), str(report)
    assert any(check == "optimizer_params" and "frozen" in text for check, text in report.notes)


def test_a_step_that_trains_on_a_captured_batch_is_caught(fmnist):
    kept = {}

    def captured_step(model, batch, loss_fn, optimizer):      # BUG: the first batch it ever saw, forever
        kept.setdefault("batch", batch)
        return rk.bugs.standard_step(model, kept["batch"], loss_fn, optimizer)

    rk.seed_everything(0)
    report = preflight(rk.bugs.mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, captured_step, budget="fast")
    assert "error" in severities(report, "batch_order"), str(report)
    rk.seed_everything(0)
    report = preflight(rk.bugs.mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert not severities(report, "batch_order"), str(report)


def test_eval_randomness_that_fires_half_the_time_is_caught(fmnist):
    class SometimesNoisy(nn.Module):                           # BUG: noise on a coin flip, in eval mode too
        def __init__(self):
            super().__init__()
            self.net = rk.bugs.mlp()

        def forward(self, x):
            return self.net(x + 0.5 * torch.randn_like(x) if torch.rand(()) < 0.3 else x)

    rk.seed_everything(0)
    report = preflight(SometimesNoisy(), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert "error" in severities(report, "eval_determinism"), str(report)


def test_a_loss_linear_in_the_outputs_is_caught(fmnist):
    x, y = fmnist
    target = (y >= 5).float()                                  # a binary task unlike the catalog's
    model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))
    unclamped = lambda out, t: (1 - (2 * t - 1) * out).mean()               # BUG: a hinge loss without its max(0, .)
    hinge = lambda out, t: (1 - (2 * t - 1) * out).clamp(min=0).mean()
    for loss_fn, caught in ((unclamped, True), (hinge, False), (nn.BCEWithLogitsLoss(), False), (nn.L1Loss(), False)):
        rk.seed_everything(0)
        report = preflight(model(), (x, target), loss_fn, ADAM, rk.bugs.standard_step, budget="fast")
        assert ("error" in severities(report, "loss_classes")) == caught, str(report)


def test_targets_a_bounded_output_cannot_reach_are_caught(fmnist):
    x, y = fmnist
    brightness = x.flatten(1).mean(1)
    model = lambda *tail: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 1), *tail,
                                        nn.Flatten(0))
    z = (brightness - brightness.mean()) / brightness.std()           # standardized: half of them negative
    unit = (brightness - brightness.min()) / (brightness.max() - brightness.min())
    for net, target, caught in ((model(nn.Tanh()), 3 * z, True), (model(nn.Sigmoid()), unit, False),
                                (model(), z, False)):
        rk.seed_everything(0)
        report = preflight(net, (x, target), nn.MSELoss(), ADAM, rk.bugs.standard_step, budget="fast")
        assert ("error" in severities(report, "output_activation")) == caught, str(report)


class PooledCNN(nn.Module):
    """Conv features (B, 8, 7, 7) -> pooled -> head; pool: 'spatial' (right), 'channels' (the bug: a 7x7 map of
    channel sums), or 'channels_last' (right, on a (B, H, W, C) copy)."""

    def __init__(self, pool):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.pool = pool
        self.head = nn.Linear(49 if pool == "channels" else 8, 10)

    def forward(self, x):
        h = self.features(x)
        if self.pool == "channels":
            return self.head(h.sum(1).flatten(1))             # BUG: sums the channels, keeps the map
        if self.pool == "channels_last":
            return self.head(h.permute(0, 2, 3, 1).mean((1, 2)))
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("pool, caught", [("channels", True), ("spatial", False), ("channels_last", False)])
def test_pooling_over_the_channel_axis_is_caught(fmnist, pool, caught):
    rk.seed_everything(0)
    report = preflight(PooledCNN(pool), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert ("error" in severities(report, "dead_activations")) == caught, str(report)


def plain_cnn(std=None, depth=6):
    """A deep plain CNN (no normalization); std: N(0, std) weights and zero biases as in pre-2015 recipes
    (Caffe's "gaussian, std 0.01"), None: PyTorch's default init."""
    layers, c = [], 1
    for _ in range(depth):
        layers += [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU()]
        c = 16
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    if std is not None:
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize("std, caught", [(0.01, True), (None, False)])
def test_a_signal_that_vanishes_through_the_layers_at_init_is_caught(fmnist, std, caught):
    rk.seed_everything(0)
    report = preflight(plain_cnn(std), fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert ("error" in severities(report, "grad_norms")) == caught, str(report)


def test_a_step_whose_loss_counts_part_of_its_batch_is_caught(fmnist):
    def half_step(model, batch, loss_fn, optimizer):         # BUG: a slicing typo keeps the second half only
        x, y = batch
        return rk.bugs.standard_step(model, (x[len(x) // 2:], y[len(y) // 2:]), loss_fn, optimizer)

    def ohem_step(model, batch, loss_fn, optimizer):         # right: online hard-example mining, top 70%
        x, y = batch
        optimizer.zero_grad()
        per_sample = nn.functional.cross_entropy(model(x), y, reduction="none")
        loss = per_sample.topk(int(0.7 * len(y))).values.mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    for step, caught in ((half_step, True), (ohem_step, False)):
        rk.seed_everything(0)
        report = preflight(rk.bugs.mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, step, budget="fast")
        assert ("error" in severities(report, "batch_order")) == caught, str(report)


def test_a_zero_initialized_head_is_no_vanishing_signal(fmnist):
    model = plain_cnn()                                       # PyTorch's init, then a zero-initialized head
    nn.init.zeros_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
    rk.seed_everything(0)
    report = preflight(model, fmnist, nn.CrossEntropyLoss(), ADAM, rk.bugs.standard_step, budget="fast")
    assert not severities(report, "grad_norms"), str(report)
