"""Diagnosis by mechanism (docs/checks_heldout.md, section 12): each check that names a cause tests a
property every correct pipeline has, here on planted cases unlike the catalog's, each beside its
corrected twin (which must stay quiet for that check)."""
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit.preflight import CHECKS, preflight


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return rk.bugs.standardize(train.images[:600]), train.labels[:600]


def only(check, *args, budget="fast", **kwargs):
    """preflight with every other check skipped (the test stays fast)."""
    return preflight(*args, skip=[c for c in CHECKS if c != check], budget=budget, **kwargs)


def flagged(report, check):
    return {p.severity for p in report.problems if p.check == check}


def mlp(out=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, out))


ADAM = lambda p: torch.optim.Adam(p, 1e-3)
SGD = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)


def test_softmax_before_bce_on_multi_hot_targets(fmnist):
    """Three overlapping tags per image (bright, large, top-heavy): independent yes/no labels."""
    x, _ = fmnist
    tags = torch.stack([x.mean((1, 2, 3)) > 0, (x > 0).float().mean((1, 2, 3)) > 0.5,
                        x[:, :, :14].mean((1, 2, 3)) > x[:, :, 14:].mean((1, 2, 3))], 1).float()
    assert ((tags.sum(1) == 0) | (tags.sum(1) >= 2)).any()
    bug = only("output_activation", nn.Sequential(mlp(3), nn.Softmax(dim=-1)), (x, tags), nn.BCELoss(), ADAM)
    assert "error" in flagged(bug, "output_activation")
    assert "compete" in next(p.message for p in bug.problems if p.check == "output_activation")
    fixed = only("output_activation", nn.Sequential(mlp(3), nn.Sigmoid()), (x, tags), nn.BCELoss(), ADAM)
    assert not flagged(fixed, "output_activation") and "output_activation" in fixed.passed


def smoothed_by_hand(confidence):
    """A label-smoothed cross-entropy written by hand: `confidence` on the label, the rest spread evenly."""
    def loss_fn(logits, y):
        C = logits.shape[1]
        target = torch.full_like(logits, (1 - confidence) / (C - 1)).scatter(1, y[:, None], confidence)
        return -(target * F.log_softmax(logits, 1)).sum(1).mean()
    return loss_fn


@pytest.mark.parametrize("loss_fn, unsure", [(nn.CrossEntropyLoss(label_smoothing=0.7), True),
                                             (smoothed_by_hand(0.3), True),
                                             (nn.CrossEntropyLoss(label_smoothing=0.05), False),
                                             (smoothed_by_hand(0.9), False),
                                             (nn.MultiMarginLoss(), False)])
def test_a_loss_whose_best_answer_is_unsure(fmnist, loss_fn, unsure):
    report = only("overfit_batch", mlp(), fmnist, loss_fn, ADAM, budget="full")
    share = report.details["stats"]["overfit_batch"]["label_share_at_optimum"]
    assert (share < 0.5) == unsure
    errors = [p.message for p in report.problems if p.check == "overfit_batch" and p.severity == "error"]
    assert any("labelled class only" in m for m in errors) == unsure


def test_a_forward_hook_registered_in_every_step(fmnist):
    """Features kept for a probe by a forward hook: registered once is fine, at every call it stacks."""
    def step_with_hook(every_call):
        def step(model, batch, loss_fn, optimizer):
            if every_call or not model[1]._forward_hooks:
                model[1].register_forward_hook(lambda m, i, o: None)
            return rk.bugs.standard_step(model, batch, loss_fn, optimizer)
        return step
    bug = only("step_updates", mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, step_with_hook(True))
    assert "error" in flagged(bug, "step_updates")
    assert bug.details["stats"]["step_updates"]["hooks_after_calls"] == [1, 2, 3, 4]
    fixed = only("step_updates", mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, step_with_hook(False))
    assert not flagged(fixed, "step_updates")


def test_an_optimizer_hook_registered_in_every_step(fmnist):
    """A step hook on the optimizer (logging the lr) added at every call stacks like a module hook."""
    def step(model, batch, loss_fn, optimizer):
        optimizer.register_step_post_hook(lambda opt, args, kwargs: None)
        return rk.bugs.standard_step(model, batch, loss_fn, optimizer)
    bug = only("step_updates", mlp(), fmnist, nn.CrossEntropyLoss(), ADAM, step)
    assert "error" in flagged(bug, "step_updates")


def penalized_step(lam):
    """An L2 penalty on every parameter (biases too) added to the loss inside the step, under SGD."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        (loss + lam * sum(p.pow(2).sum() for p in model.parameters())).backward()
        optimizer.step()
        return loss.item()
    return step


@pytest.mark.parametrize("lam, strong", [(0.3, True), (1e-4, False)])
def test_an_explicit_penalty_that_dwarfs_the_loss(fmnist, lam, strong):
    report = only("weight_decay", mlp(), fmnist, nn.CrossEntropyLoss(), SGD, penalized_step(lam))
    assert ("error" in flagged(report, "weight_decay")) == strong
    assert (report.details["stats"]["weight_decay"]["penalty_over_grad"] > 1) == strong   # measured in both


def test_class_weights_in_another_order(fmnist):
    """Four classes kept 1:2:4:8; inverse-frequency weights listed by class name (sorted), not class id."""
    x, y = fmnist
    keep = torch.cat([torch.nonzero(y == k)[: 6 * 2 ** k, 0] for k in range(4)])
    x4, y4 = x[keep], y[keep]
    counts = Counter(y4.tolist())
    assert [counts[k] for k in range(4)] == [6, 12, 24, 48]
    names = ["coat", "dress", "shirt", "bag"]
    by_id = torch.tensor([len(y4) / (4 * counts[k]) for k in range(4)])
    by_name = torch.tensor([len(y4) / (4 * counts[names.index(n)]) for n in sorted(names)])
    assert not torch.equal(by_id, by_name)
    bug = only("loss_classes", mlp(4), (x4, y4), nn.CrossEntropyLoss(weight=by_name), ADAM)
    assert "error" in flagged(bug, "loss_classes")
    assert "order" in next(p.message for p in bug.problems if p.check == "loss_classes")
    fixed = only("loss_classes", mlp(4), (x4, y4), nn.CrossEntropyLoss(weight=by_id), ADAM)
    assert not flagged(fixed, "loss_classes") and "loss_classes" in fixed.passed


def conv():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))


def test_inputs_standardized_twice(fmnist):
    """Standardized images standardized again with the training set's own (raw 0..1) statistics."""
    x, y = fmnist
    twice = (x - 0.2860) / 0.3530
    bug = only("input_scale", conv(), (twice, y), nn.CrossEntropyLoss(), ADAM)
    assert "warning" in flagged(bug, "input_scale")
    assert "standardized twice" in next(p.message for p in bug.problems if p.check == "input_scale")
    fixed = only("input_scale", conv(), (x, y), nn.CrossEntropyLoss(), ADAM)
    assert not flagged(fixed, "input_scale") and "input_scale" in fixed.passed
