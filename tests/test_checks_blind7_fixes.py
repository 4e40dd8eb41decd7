"""The fixes after the seventh blind run (docs/checks_heldout.md, section 17), each on a planted case unlike the
catalog's, next to a correct twin that must stay quiet: a decay scheduler given a gamma above 1, float targets
made in train_step that are not probabilities, and overfit_batch on a step that returns another quantity than
loss_fn (distillation at T^2)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit.preflight import preflight

ADAM = lambda p: torch.optim.Adam(p, 1e-3)
FULL = dict(budget="full", skip=("beats_baseline",))


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return rk.bugs.standardize(train.images[:600]), train.labels[:600]


def problems(report, check):
    return [p for p in report.problems if p.check == check]


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def plain_step(model, batch, loss_fn, optimizer, targets=None):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y if targets is None else targets(x, y))
    loss.backward()
    optimizer.step()
    if hasattr(optimizer, "sched"):
        optimizer.sched.step()
    return loss.item()


def test_a_decay_scheduler_given_a_gamma_above_1_is_an_error(fmnist):
    def sgd_with(gamma):
        def make(params):
            opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
            opt.sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4000, gamma=gamma)   # per step: late steps
            return opt
        return make
    torch.manual_seed(0)
    bug = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), sgd_with(3.0), plain_step, **FULL)   # BUG: 1/3 meant
    (problem,) = problems(bug, "lr_schedule")
    assert "StepLR(gamma=3)" in problem.message and problem.severity == "error", str(bug)
    torch.manual_seed(0)
    assert not problems(preflight(mlp(), fmnist, nn.CrossEntropyLoss(), sgd_with(0.3), plain_step, **FULL),
                        "lr_schedule")


def test_float_targets_made_in_the_step_must_be_probabilities(fmnist):
    def mixup(normalized):
        def targets(x, y):
            one_hot = F.one_hot(y, 10).float()
            partner = one_hot.roll(1, 0)
            return 0.7 * one_hot + 0.3 * partner if normalized else one_hot + partner   # BUG: rows sum to 2
        return lambda model, batch, loss_fn, optimizer: plain_step(model, batch, loss_fn, optimizer, targets)
    torch.manual_seed(0)
    bug = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, mixup(False), budget="fast")
    (problem,) = problems(bug, "loss_classes")
    assert "rows sum to 2..2" in problem.message, str(bug)
    torch.manual_seed(0)
    assert not problems(preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, mixup(True), budget="fast"),
                        "loss_classes")


def test_overfit_batch_judges_loss_fn_when_the_step_returns_another_quantity(fmnist):
    torch.manual_seed(1)
    teacher, (x, y) = mlp(), fmnist                          # a teacher trained on the labels, then frozen
    opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    for i in range(0, 600, 30):
        opt.zero_grad()
        F.cross_entropy(teacher(x[i:i + 30]), y[i:i + 30]).backward()
        opt.step()
    teacher.eval().requires_grad_(False)

    def distill(model, batch, loss_fn, optimizer, T=4.0):
        x, y = batch
        optimizer.zero_grad()
        soft = F.softmax(teacher(x) / T, 1)
        loss = 0.7 * T * T * loss_fn(model(x) / T, soft) + 0.3 * loss_fn(model(x), y)   # Hinton et al. 2015
        loss.backward()
        optimizer.step()
        return loss.item()
    torch.manual_seed(0)
    report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, distill, budget="full",
                       skip=("beats_baseline", "lr_schedule"))
    assert not problems(report, "overfit_batch"), str(report)
    assert report.details["stats"]["overfit_batch"]["judged_on_loss_fn"]

    class Blind(nn.Module):                                  # BUG: the input never reaches the output
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return self.bias.expand(len(x), 10)
    torch.manual_seed(0)
    blind = preflight(Blind(), fmnist, nn.CrossEntropyLoss(), ADAM, distill, budget="full",
                      skip=("beats_baseline", "lr_schedule"))
    assert {p.severity for p in problems(blind, "overfit_batch")} == {"error"}, str(blind)
