"""loss_classes judges the prior training pulls toward (the constant output that minimizes loss_fn on the
loader's batches) against the data's: a balancing sampler plus balancing class weights inverts it; weights
that favour the frequent class amplify it; either alone, or a softened version, is a choice and stays quiet.
Planted on synthetic tabular data, unlike the catalogs' Fashion-MNIST cases."""
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from recipe_kit.preflight import preflight

SHARES = (0.6, 0.3, 0.1)


def tabular(n=1200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor(SHARES), n, replacement=True, generator=g)
    x = torch.randn(n, 20, generator=g) + 1.5 * nn.functional.one_hot(y, 20).float()
    return x, y


def loader(x, y, balanced):
    counts = torch.bincount(y).double()
    sampler = WeightedRandomSampler((1 / counts)[y], len(y), generator=torch.Generator().manual_seed(1)) \
        if balanced else None
    return DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler, shuffle=not balanced,
                      generator=None if balanced else torch.Generator().manual_seed(1))


def run(train, loss_fn, out=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, out))
    if out == 1:
        model.append(nn.Flatten(0))
    return preflight(model, train, loss_fn, lambda p: torch.optim.Adam(p, 1e-3), budget="fast",
                     skip=("overfit_batch", "beats_baseline"))


def prior_problems(report):
    return [p for p in report.problems if p.check == "loss_classes"]


@pytest.fixture(scope="module")
def data():
    return tabular()


def test_a_balancing_sampler_and_balancing_weights_invert_the_prior(data):
    x, y = data
    inverse = (len(y) / (3 * torch.bincount(y).float()))
    report = run(loader(x, y, balanced=True), nn.CrossEntropyLoss(weight=inverse))
    (problem,) = prior_problems(report)
    assert problem.severity == "warning" and "corrected twice" in problem.message, problem.message
    assert report.details["stats"]["loss_classes"]["prior_slope"] < -0.5


@pytest.mark.parametrize("balanced, weight", [(True, None), (False, "inverse"), (False, "sqrt"), (False, None)])
def test_one_way_of_balancing_or_none_is_quiet(data, balanced, weight):
    x, y = data
    counts = torch.bincount(y).float()
    w = {None: None, "inverse": len(y) / (3 * counts), "sqrt": (len(y) / (3 * counts)).sqrt()}[weight]
    report = run(loader(x, y, balanced), nn.CrossEntropyLoss(weight=w, label_smoothing=0.05))
    assert not prior_problems(report), prior_problems(report)
    assert -0.2 < report.details["stats"]["loss_classes"]["prior_slope"] < 1.2


def test_pos_weight_upside_down_amplifies_the_imbalance(data):
    x, y = data
    positive = (y == 2).float()                       # 10% positive
    share = positive.mean()
    upside_down = nn.BCEWithLogitsLoss(pos_weight=share / (1 - share))      # BUG: pos / neg, not neg / pos
    report = run((x, positive), upside_down, out=1)
    (problem,) = prior_problems(report)
    assert "frequent classes count even more" in problem.message, problem.message
    right = nn.BCEWithLogitsLoss(pos_weight=(1 - share) / share)
    assert not prior_problems(run((x, positive), right, out=1))
