"""The preflight fixes after the third blind run (docs/checks_heldout.md, section 11), each on a planted
case unlike the catalog's: outputs that are not per sample (a learned temperature or loss weight) returned
beside the per-sample ones, and a label marker (-1 = not annotated) that the loss itself masks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit.pipeline import BadInput
from recipe_kit.preflight import preflight


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return rk.bugs.standardize(train.images[:600]), train.labels[:600]


def flagged(report, check):
    return {p.severity for p in report.problems if p.check == check}


class Tempered(nn.Module):
    """Logits and one learned temperature (a 0-d parameter, the same for every sample), in a dict."""

    def __init__(self, ignore_input=False):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        self.log_t = nn.Parameter(torch.zeros(()))
        self.ignore_input = ignore_input

    def forward(self, x):
        return {"logits": self.net(torch.zeros_like(x) if self.ignore_input else x), "log_t": self.log_t}


def tempered_loss(out, y):
    return F.cross_entropy(out["logits"] / out["log_t"].exp(), y)


ADAM = lambda p: torch.optim.Adam(p, 1e-3)


def test_an_output_shared_by_all_samples_is_accepted(fmnist):
    report = preflight(Tempered(), fmnist, tempered_loss, ADAM, rk.bugs.standard_step, budget="fast")
    assert not report.errors and not report.crashed
    assert "input_dependence" not in dict(report.skipped)


def test_a_model_with_a_shared_output_that_ignores_its_input_is_caught(fmnist):
    report = preflight(Tempered(ignore_input=True), fmnist, tempered_loss, ADAM, rk.bugs.standard_step,
                       budget="fast")
    assert "error" in flagged(report, "input_dependence")


def test_outputs_none_of_which_is_per_sample_are_still_refused(fmnist):
    class Pooled(nn.Module):                                   # the batch averaged away in every output
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(784, 10), nn.Linear(784, 3)

        def forward(self, x):
            h = x.flatten(1).mean(0)
            return self.a(h), self.b(h)

    with pytest.raises(BadInput, match="batch as its first dimension"):
        preflight(Pooled(), fmnist, lambda o, y: o[0].sum() + o[1].sum(), ADAM, budget="fast")


def masked_ce(out, t):
    """Mean cross-entropy over the annotated samples only (t == -1: not annotated)."""
    keep = t >= 0
    return F.cross_entropy(out[keep], t[keep]) if keep.any() else out.sum() * 0


def test_a_not_annotated_marker_the_loss_masks_is_accepted(fmnist):
    x, y = fmnist
    y = y.clone()
    y[torch.arange(len(y)) % 3 == 0] = -1                      # a third not annotated
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    report = preflight(model, (x, y), masked_ce, ADAM, budget="fast")
    assert not report.errors and not report.crashed
    report = preflight(model, (x, y), nn.CrossEntropyLoss(ignore_index=-1), ADAM, budget="fast")
    assert not report.errors and not report.crashed


def test_labels_shifted_below_zero_are_still_refused(fmnist):
    x, y = fmnist
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    for loss in (lambda o, t: F.cross_entropy(o, t), nn.CrossEntropyLoss()):   # labels 0..9 shifted to -1..8
        with pytest.raises(BadInput, match="labels range from -1 to 8"):
            preflight(model, (x, y - 1), loss, ADAM, budget="fast")
    two_markers = y.clone()
    two_markers[:5], two_markers[5:10] = -1, -2                # not one marker: a remapping gone wrong
    with pytest.raises(BadInput, match="labels range from -2"):
        preflight(model, (x, two_markers), masked_ce, ADAM, budget="fast")


@pytest.mark.parametrize("momentum, warned", [(0.95, True), (0.1, False), (0.3, False), (None, False)])
def test_running_statistics_that_are_the_last_batch_are_named(fmnist, momentum, warned):
    """BatchNorm1d in an MLP (the catalog's is a 2-d CNN): momentum 0.95 measured 0.002 of a batch mean's
    spread (RUNNING_STATS_LAST_BATCH = 0.1); the default 0.1 about 1, 0.3 about 0.6, None (a cumulative
    average) is not an exponential average and is left out."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1d(64, momentum=momentum), nn.ReLU(),
                          nn.Linear(64, 10))
    report = preflight(model, fmnist, nn.CrossEntropyLoss(), ADAM, budget="fast")
    assert (flagged(report, "train_eval_consistency") == {"warning"}) == warned, str(report)
    assert not report.errors
    share = report.details["stats"].get("train_eval_consistency", {}).get("running_stats_last_batch")
    assert momentum is None or (share < 0.1) == warned
