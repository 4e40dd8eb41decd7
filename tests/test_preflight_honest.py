"""Honest reports: a crashing check says it crashed (with the exception), distinct from "does not
apply"; a model without parameters is an error; a train_step stepping the caller's own optimizer is
caught and its state put back."""
import pytest
import torch
import torch.nn as nn

import recipe_kit as rk
from recipe_kit.bugs import mlp, standard_step, standardize
from recipe_kit.preflight import preflight
from recipe_kit.report import ChecksFailed


@pytest.fixture(scope="module")
def data():
    train = rk.load_dataset("fashion-mnist", "train")
    return standardize(train.images[:1000]), train.labels[:1000]


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def test_a_crashing_check_is_reported_as_crashed_not_skipped(data):
    class BreaksOnSmallBatches(nn.Module):            # the learner's model raises inside one check only
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            if len(x) == 8:
                raise RuntimeError("batch of 8")
            return self.net(x)

    report = preflight(BreaksOnSmallBatches(), data, nn.CrossEntropyLoss(), adam, budget="fast")
    crashed = dict(report.crashed)
    assert "batch_independence" in crashed and "RuntimeError: batch of 8" in crashed["batch_independence"]
    assert "batch_independence" not in dict(report.skipped)
    assert not report.ok and "CRASHED" in str(report) and "crashed" in report._repr_html_()
    with pytest.raises(ChecksFailed, match="batch_independence crashed"):
        report.raise_for_errors()


def test_a_model_without_parameters_is_an_error(data):
    class ListOfLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Flatten(), nn.Linear(784, 10)]   # a plain list: nothing is registered

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    report = preflight(ListOfLayers(), data, nn.CrossEntropyLoss(), adam, budget="fast")
    assert not report.ok and not report.crashed, str(report)
    assert "no parameters" in next(p.message for p in report.errors if p.check == "optimizer_params")
    assert "trainable parameters" in dict(report.skipped)["step_updates"]


def test_a_step_on_the_callers_global_optimizer_is_caught_and_undone(data):
    model = mlp()
    global_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(data[0][:64]).logsumexp(1).mean().backward()       # the caller holds gradients and momentum
    global_opt.step()
    momentum = [global_opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]

    def step(m, batch, loss_fn, optimizer):              # BUG: steps the global optimizer
        global_opt.zero_grad()
        loss = loss_fn(m(batch[0]), batch[1])
        loss.backward()
        global_opt.step()
        return loss.item()

    report = preflight(model, data, nn.CrossEntropyLoss(), adam, step, budget="fast")
    assert "caller_untouched" in {p.check for p in report.errors}, str(report)
    assert "optimizer(s) it was not given" in str(report)
    assert all(torch.equal(global_opt.state[p]["momentum_buffer"], m) for p, m in zip(model.parameters(), momentum))
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    clean = preflight(model, data, nn.CrossEntropyLoss(), adam, standard_step, budget="fast")
    assert clean.ok, str(clean)
