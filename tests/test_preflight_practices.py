"""Correct practices that no catalog held, found quiet or fixed in the lead's own probe before the fifth
blind run (docs/checks_heldout.md, section 14), each next to the bug that the same mechanism must still
catch: LBFGS's step(closure), a hand-written update, an optimizer that wraps two others, a penalty in
loss_fn over a global model, large but even gradients, and a long tail shared by train and test."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit.audit import audit_data
from recipe_kit.preflight import preflight

ADAM = lambda p: torch.optim.Adam(p, 1e-3)


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return rk.bugs.standardize(train.images[:600]), train.labels[:600]


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def problems(report, check):
    return {p.severity for p in report.problems if p.check == check}


def lbfgs_step(zero_grad):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch

        def closure():
            if zero_grad:
                optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss
        return optimizer.step(closure).item()
    return step


def test_lbfgs_closure_is_judged_at_its_first_evaluation(fmnist):
    """LBFGS evaluates the closure at several weights per step and keeps a history between steps, so the
    gradient left after a step differs between two identical calls; the first evaluation does not."""
    lbfgs = lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4, history_size=5, line_search_fn="strong_wolfe")
    rk.seed_everything(0)
    good = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), lbfgs, lbfgs_step(True), budget="fast")
    assert not good.problems, str(good)
    rk.seed_everything(0)
    bad = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), lbfgs, lbfgs_step(False), budget="fast")
    assert problems(bad, "zero_grad") == {"error"}, str(bad)


def test_a_hand_written_update_is_not_called_frozen(fmnist):
    def manual(model, batch, loss_fn, optimizer):
        x, y = batch
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
        return loss.item()

    report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, manual, budget="fast")
    assert not report.problems, str(report)
    assert "by hand" in dict(report.skipped)["step_updates"]

    def no_update(model, batch, loss_fn, optimizer):
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        return loss.item()
    report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, no_update, budget="fast")
    (error,) = [p for p in report.errors if p.check == "step_updates"]
    assert "never stepped" in error.message and "the weights never change" in error.message


class TwoOptimizers(torch.optim.Optimizer):
    """SGD with momentum for the body and Adam for the head, stepped together by one optimizer object."""

    def __init__(self, params):
        params = list(params)
        super().__init__([{"params": params[:-2]}, {"params": params[-2:]}], {})
        self.body, self.head = torch.optim.SGD(params[:-2], lr=0.05, momentum=0.9), torch.optim.Adam(params[-2:])

    def step(self, closure=None):
        self.body.step()
        self.head.step()

    def zero_grad(self, set_to_none=True):
        self.body.zero_grad(set_to_none)
        self.head.zero_grad(set_to_none)


def test_optimizers_inside_the_given_one_are_its_own(fmnist):
    report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), TwoOptimizers, budget="fast")
    assert not report.problems, str(report)

    def fresh_adam_each_call(model, batch, loss_fn, optimizer):      # BUG: Adam's moments restart every step
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return loss.item()
    report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, fresh_adam_each_call, budget="fast")
    messages = {p.check: p.message for p in report.errors}
    assert "created inside train_step" in messages["caller_untouched"], str(report)
    assert "only through another optimizer" in messages["step_updates"], str(report)


def test_a_penalty_over_a_global_model_is_a_warning_that_says_so(fmnist):
    model = mlp()
    l2 = lambda out, y: F.cross_entropy(out, y) + 1e-4 * sum((p ** 2).sum() for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    report = preflight(model, fmnist, l2, ADAM, budget="fast")
    assert problems(report, "caller_untouched") == {"warning"}, str(report)
    (warning,) = [p for p in report.warnings if p.check == "caller_untouched"]
    assert "loss_fn reads a global model" in warning.message
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and all(
        p.grad is None for p in model.parameters()), "the caller's model and its gradients are put back"


def test_large_even_gradients_are_named_as_scale_not_spread(fmnist):
    x, _ = fmnist
    counts = (x > 1.5).sum((1, 2, 3)).float()                      # Poisson counts with a mean of ~100
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))
    report = preflight(net, (x, counts), nn.PoissonNLLLoss(log_input=True), ADAM, budget="fast")
    (warning,) = [p for p in report.warnings if p.check == "grad_norms"]
    assert "large gradients" in warning.message and "across layers" not in warning.message
    assert report.details["stats"]["grad_norms"]["spread"] < 100


def test_a_long_tail_in_both_splits_is_a_warning_a_filtered_split_an_error():
    tr, te = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    g = torch.Generator().manual_seed(5)
    keep = torch.rand(3000, generator=g) < 0.6 ** tr.labels[:3000].float()
    keep_t = torch.rand(1000, generator=g) < 0.6 ** te.labels[:1000].float()
    train, test = (tr.images[:3000][keep], tr.labels[:3000][keep]), (te.images[:1000][keep_t], te.labels[:1000][keep_t])
    report = audit_data(train, test, 10, budget="fast")
    assert problems(report, "class_balance") == {"warning"}, str(report)
    assert "share these proportions" in report.warnings[0].message or any(
        "share these proportions" in p.message for p in report.warnings)
    report = audit_data(train, (te.images[:1000], te.labels[:1000]), 10, budget="fast")   # test uniform
    assert "error" in problems(report, "class_balance"), str(report)


def plateau_pipeline(sign):
    """ReduceLROnPlateau (mode='min', patience 10) stepped every batch on a smoothed loss, times `sign`."""
    smooth = {}

    def make(params):
        opt = torch.optim.Adam(params, lr=1e-3)
        opt.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=10)
        return opt

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        smooth[optimizer] = 0.9 * smooth.get(optimizer, loss.item()) + 0.1 * loss.item()
        optimizer.plateau.step(sign * smooth[optimizer])
        return loss.item()
    return make, step


def test_a_plateau_scheduler_is_judged_on_a_model_that_learns(fmnist):
    """Its schedule follows the metric, so the check feeds it the learner's batches and a model that
    learns: the loss fed as a score (negated) never improves in mode='min' while the model learns."""
    for sign, expected in ((-1, {"error"}), (1, set())):
        rk.seed_everything(0)
        report = preflight(mlp(), fmnist, nn.CrossEntropyLoss(), *plateau_pipeline(sign),
                           skip=("overfit_batch", "beats_baseline"), budget="full")
        assert problems(report, "lr_schedule") == expected, str(report)
        assert not expected or "ReduceLROnPlateau" in report.errors[0].message
