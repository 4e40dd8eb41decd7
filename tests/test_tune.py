"""Tuning ideas: log-uniform sampling, random vs grid coverage, and an LR range test without side effects."""
import hashlib
import math
import pickle
import random

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from recipe_kit import tune
from recipe_kit.loader import BatchLoader

matplotlib.use("Agg")

SPACE = {"lr": (1e-5, 1e-1, "log"), "wd": (1e-6, 1e-2, "log")}


def test_random_search_tries_n_learning_rates_grid_only_sqrt_n():
    for n in (16, 25, 20):
        random_points = tune.random_search_points(n, SPACE, seed=0)
        grid_points = tune.grid_search_points(n, SPACE)
        k = math.isqrt(n)
        assert len(random_points) == n and len(grid_points) == k * k <= n
        assert tune.coverage_of_important_axis(random_points, "lr") == n
        assert tune.coverage_of_important_axis(grid_points, "lr") == k
        assert tune.coverage_of_important_axis(grid_points, "wd") == k
        for p in random_points + grid_points:
            assert SPACE["lr"][0] <= p["lr"] <= SPACE["lr"][1] * (1 + 1e-12)
            assert SPACE["wd"][0] <= p["wd"] <= SPACE["wd"][1] * (1 + 1e-12)


def test_grid_spacing_follows_the_axis_scale():
    points = tune.grid_search_points(9, {"lr": (1e-4, 1e-2, "log"), "dropout": (0.0, 0.5)})
    assert sorted({p["lr"] for p in points}) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert sorted({p["dropout"] for p in points}) == pytest.approx([0.0, 0.25, 0.5])


def test_random_points_are_reproducible_from_the_seed():
    assert tune.random_search_points(5, SPACE, seed=1) == tune.random_search_points(5, SPACE, seed=1)
    assert tune.random_search_points(5, SPACE, seed=1) != tune.random_search_points(5, SPACE, seed=2)


def test_log_uniform_is_in_range_and_uniform_per_decade():
    x = tune.log_uniform(1e-5, 1e-1, 20_000, np.random.default_rng(0))
    assert x.min() >= 1e-5 and x.max() <= 1e-1
    per_decade = np.histogram(np.log10(x), bins=[-5, -4, -3, -2, -1])[0] / len(x)
    assert per_decade == pytest.approx([0.25] * 4, abs=0.02)
    # plain uniform sampling would have put ~90% in the top decade
    assert np.mean(np.random.default_rng(0).uniform(1e-5, 1e-1, 20_000) > 1e-2) == pytest.approx(0.9, abs=0.02)


def test_bad_spaces_say_what_is_wrong():
    with pytest.raises(ValueError, match="low > 0 on a log axis"):
        tune.random_search_points(4, {"lr": (0.0, 1e-1, "log")})
    with pytest.raises(ValueError, match=r"space\['wd'\]"):
        tune.grid_search_points(4, {"lr": (1e-5, 1e-1, "log"), "wd": (1e-2, 1e-6, "log")})
    with pytest.raises(ValueError, match="space is empty"):
        tune.random_search_points(4, {})
    with pytest.raises(ValueError, match="0 < low < high"):
        tune.log_uniform(0.0, 1.0, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="axis='momentum'"):
        tune.coverage_of_important_axis(tune.random_search_points(4, SPACE), "momentum")


# ----------------------------------------------------------------------------- LR range test

def tiny_problem(seed=0):
    """A 3-class linear problem and a small MLP with BatchNorm (buffers) and Dropout (uses the RNG)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
    return x, y, model


class NumpyShuffledLoader:
    """A hand-written loader that shuffles with the global numpy and python RNGs (many do)."""

    def __init__(self, x, y, batch_size=32):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        order = np.random.permutation(len(self.x))
        random.random()
        for i in range(0, len(order), self.batch_size):
            idx = torch.as_tensor(order[i:i + self.batch_size])
            yield self.x[idx], self.y[idx]


def fingerprint(model):
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()


def rng_fingerprint():
    return hashlib.sha256(pickle.dumps((random.getstate(), np.random.get_state(),
                                        torch.get_rng_state().numpy().tobytes()))).hexdigest()


def test_lr_range_test_ramps_up_finds_a_rate_and_touches_nothing():
    x, y, model = tiny_problem()
    loader = NumpyShuffledLoader(x, y)                  # 8 batches: the test cycles through them
    model_before, rng_before = fingerprint(model), rng_fingerprint()
    result = tune.lr_range_test(model, loader, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1),
                                start_lr=1e-4, end_lr=10.0, steps=60)
    assert fingerprint(model) == model_before           # weights and BatchNorm buffers
    assert rng_fingerprint() == rng_before               # python, numpy and torch RNGs

    lrs = np.array(result["lrs"])
    assert len(lrs) == len(result["losses"]) == len(result["smoothed"]) > 8
    assert lrs[0] == pytest.approx(1e-4) and np.all(np.diff(lrs) > 0)
    assert np.diff(np.log(lrs)) == pytest.approx(np.full(len(lrs) - 1, math.log(1e5) / 59))  # exponential
    assert 1e-4 <= result["suggested_lr"] <= 10.0
    assert result["suggested_lr"] == pytest.approx(result["min_loss_lr"] / 10)
    assert 1e-4 <= result["steepest_lr"] <= result["min_loss_lr"]
    assert min(result["smoothed"]) < result["smoothed"][0] - 0.1  # the copy did learn on the way


def test_lr_range_test_stops_when_the_loss_diverges():
    x, y, model = tiny_problem()
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    result = tune.lr_range_test(model, loader, nn.CrossEntropyLoss(),
                                lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                start_lr=1e-3, end_lr=1e4, steps=80)
    assert result["stopped"].startswith("diverged")
    assert len(result["lrs"]) < 80
    smoothed = result["smoothed"]
    assert not math.isfinite(smoothed[-1]) or smoothed[-1] > 4 * min(smoothed)
    assert result["suggested_lr"] < result["lrs"][-1]


def test_lr_range_test_leaves_the_batch_loader_epoch_alone():
    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 2, (64,))
    loader = BatchLoader(images, labels, batch_size=16, seed=0, mean=(0.5,), std=(0.3,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    tune.lr_range_test(model, loader, nn.CrossEntropyLoss(), lambda p: torch.optim.Adam(p), steps=20)
    assert loader.epoch == 0  # the first training epoch still sees epoch 0's order


def test_lr_range_test_checks_its_arguments():
    x, y, model = tiny_problem()
    loader, loss, make = [(x, y)], nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="start_lr=1, end_lr=0.1"):
        tune.lr_range_test(model, loader, loss, make, start_lr=1, end_lr=0.1)
    with pytest.raises(ValueError, match="steps=2"):
        tune.lr_range_test(model, loader, loss, make, steps=2)
    with pytest.raises(ValueError, match="no batches"):
        tune.lr_range_test(model, [], loss, make)


def test_plots_draw_what_they_say():
    fig = tune.plot_random_vs_grid(tune.random_search_points(16, SPACE), tune.grid_search_points(16, SPACE))
    assert "4 values of lr" in fig.axes[0].get_title() and "16 values of lr" in fig.axes[1].get_title()
    x, y, model = tiny_problem()
    result = tune.lr_range_test(model, [(x, y)], nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1),
                                steps=20)
    ax = tune.plot_lr_range_test(result)
    assert ax.get_xscale() == "log"
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx(result["smoothed"])
