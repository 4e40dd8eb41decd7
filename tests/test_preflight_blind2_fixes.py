"""The preflight fixes after the second blind run (docs/checks_heldout.md, section 8): several outputs
accepted, augmentation inside the step and per-pixel labels not mistaken for slow learning, and the new
mechanisms (a loss that is negative or ignores the right answer, eval unlike the average of train mode,
extreme dropout, a scheduler on a stale optimizer), each against the bug and its corrected twin."""
import pytest
import torch
import torch.nn as nn

import recipe_kit as rk
from recipe_kit.bugs_blind2 import BY_NAME, CORRECTED
from recipe_kit.preflight import preflight
from recipe_kit.preflight_checks import step_redraws_inputs
from recipe_kit.pipeline import BadInput, setup

FAST_ONLY = ("lr_schedule", "overfit_batch", "beats_baseline")


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:600], train.labels[:600]


def flagged(report, check):
    return {p.severity for p in report.problems if p.check == check}


def run(name, data, fixed=False, budget="fast", skip=()):
    build = CORRECTED[name] if fixed else BY_NAME[name].build
    return preflight(*build(*data), budget=budget, skip=skip)


def test_a_tuple_of_heads_is_checked_not_refused(fmnist):
    report = run("multi_head_tuple", fmnist)
    assert not report.errors and not report.crashed
    skipped = dict(report.skipped)
    for check in ("loss_at_init", "output_activation", "loss_classes"):
        assert "tuple of 2 outputs" in skipped[check]
    for check in ("input_dependence", "batch_independence", "eval_determinism", "registered_params"):
        assert check not in skipped                   # the checks comparing outputs join the heads


def test_a_dict_model_that_ignores_its_input_is_still_caught(fmnist):
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(784, 10), nn.Linear(784, 4)

        def forward(self, x):
            z = torch.zeros_like(x.flatten(1))       # the bug: x replaced before the heads
            return {"classes": self.a(z), "attributes": self.b(z)}

    x = rk.bugs.standardize(fmnist[0])
    loss = lambda out, y: nn.functional.cross_entropy(out["classes"], y) + out["attributes"].pow(2).mean()
    report = preflight(Heads(), (x, fmnist[1]), loss, lambda p: torch.optim.Adam(p, 1e-3), rk.bugs.standard_step,
                       budget="fast")
    assert "error" in flagged(report, "input_dependence")


def test_several_outputs_with_num_classes_is_refused_with_the_reason(fmnist):
    with pytest.raises(BadInput, match="num_classes"):
        run_parts = BY_NAME["multi_head_tuple"].build(*fmnist)
        preflight(*run_parts, num_classes=10, budget="fast")


def test_augmentation_inside_the_step_is_detected(fmnist):
    for name, redraws in (("cutmix_soft_targets", True), ("stochastic_depth", False)):
        model, train, loss_fn, make, step = BY_NAME[name].build(*fmnist)
        pipe = setup(model, train, loss_fn, make, step, None, 0, None)
        pipe["own_optimizers"] = set()
        batch = (pipe["x"][:8], pipe["y"][:8])
        assert step_redraws_inputs(pipe, batch) is redraws, name


def test_per_pixel_imbalance_is_no_init_warning(fmnist):
    report = run("segmentation_3class_ce", fmnist)
    assert not flagged(report, "loss_at_init")
    assert report.details["stats"]["loss_at_init"]["loss_over_prior"] > 1.2   # imbalanced, and still quiet


def test_kl_div_on_probabilities_is_a_negative_loss(fmnist):
    report = run("kl_div_on_probabilities", fmnist)
    assert "error" in flagged(report, "output_activation")
    assert any("below 0" in p.message for p in report.problems if p.check == "output_activation")
    fixed = run("kl_div_on_probabilities", fmnist, fixed=True)
    assert not flagged(fixed, "output_activation")
    stats = fixed.details["stats"]["output_activation"]
    assert 0 <= stats["loss_right"] < stats["loss_uniform"]


def test_a_loss_that_prefers_the_wrong_answer_is_caught(fmnist):
    x = rk.bugs.standardize(fmnist[0])
    loss = lambda out, y: -nn.functional.cross_entropy(out, y) + 10   # sign error, kept positive
    report = preflight(rk.bugs.mlp(), (x, fmnist[1]), loss, lambda p: torch.optim.Adam(p, 1e-3), budget="fast")
    assert any("does not fall" in p.message for p in report.problems if p.check == "output_activation")


def test_unscaled_drop_path_makes_eval_another_network(fmnist):
    report = run("drop_path_unscaled", fmnist)
    assert "error" in flagged(report, "train_eval_consistency")
    fixed = run("drop_path_unscaled", fmnist, fixed=True)
    assert not flagged(fixed, "train_eval_consistency")
    assert fixed.details["stats"]["train_eval_consistency"]["bias"] < 10 < \
        report.details["stats"]["train_eval_consistency"]["bias"]


def test_keep_prob_passed_as_p_is_named(fmnist):
    report = run("dropout_keep_prob_as_p", fmnist)
    assert "error" in flagged(report, "dropout_rate")
    assert any("p=0.9" in p.message for p in report.problems if p.check == "dropout_rate")
    assert not flagged(run("dropout_keep_prob_as_p", fmnist, fixed=True), "dropout_rate")


def test_a_scheduler_on_a_rebuilt_optimizer_is_caught(fmnist):
    skip = ("overfit_batch", "beats_baseline")
    report = run("scheduler_on_stale_optimizer", fmnist, budget="full", skip=skip)
    assert any("another optimizer" in p.message for p in report.problems if p.check == "lr_schedule")
    assert not flagged(run("scheduler_on_stale_optimizer", fmnist, fixed=True, budget="full", skip=skip),
                       "lr_schedule")


def test_clipping_before_backward_is_caught(fmnist):
    report = run("clip_before_backward", fmnist)
    assert "error" in flagged(report, "grad_clipping")
    fixed = run("clip_before_backward", fmnist, fixed=True)
    assert not flagged(fixed, "grad_clipping") and "grad_clipping" not in dict(fixed.skipped)
    assert "grad_clipping" in dict(run("stochastic_depth", fmnist).skipped)   # no clipping: does not apply
    assert torch.nn.utils.clip_grad_norm_.__name__ == "clip_grad_norm_"      # the spy is removed afterwards


def test_the_default_step_takes_tuple_and_dict_outputs(fmnist):
    model, data, loss_fn, make, _ = BY_NAME["multi_head_tuple"].build(*fmnist)
    report = preflight(model, data, loss_fn, make, None, budget="fast")      # train_step=None: default step
    assert not report.errors and not report.crashed, str(report)
    from recipe_kit.train import default_train_step
    model = rk.bugs_blind2.TupleHeads()
    as_dict = lambda x: dict(zip(("classes", "attributes"), model(x)))
    loss, out = default_train_step(as_dict, (data[0][:8], data[1][:8]), lambda o, y: loss_fn(
        (o["classes"], o["attributes"]), y), torch.optim.SGD(model.parameters(), 0.1))
    assert set(out) == {"classes", "attributes"} and not out["classes"].requires_grad
    batches = [(data[0][:32], data[1][:32]), (data[0][32:64], data[1][32:64])]
    history = rk.train.fit(model, batches, loss_fn, torch.optim.SGD(model.parameters(), 0.1), progress=False)
    assert len(history["loss"]) == 2 and history["stopped"]


def test_adam_eps_that_dominates_the_gradient_is_named(fmnist):
    report = run("adam_eps_one", fmnist, skip=FAST_ONLY)
    (problem,) = [p for p in report.warnings if p.check == "step_updates"]
    assert "eps" in problem.message and problem.details["eps_ratio"] > 1, problem.message
    assert not flagged(run("adam_eps_one", fmnist, fixed=True, skip=FAST_ONLY), "step_updates")
