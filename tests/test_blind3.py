"""The third blind catalog (recipe_kit/bugs_blind3.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind3.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants. None of these tests runs preflight or
audit_data: the catalog is scored once, by benchmarks/checks_blind3.py, not here.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit import bugs, bugs_blind, bugs_blind2, bugs_heldout, correct_pipelines
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs_blind3 import (BLIND3, BY_NAME, CORRECT_BLIND3, CORRECTED, FASHION_NAMES, NOT_A_CHECK,
                                    clean_splits3, grey_levels)

N = 512


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:N], train.labels[:N]


def parts(name, data, fixed=False):
    torch.manual_seed(0)
    return (CORRECTED[name] if fixed else BY_NAME[name].build)(*data)


def batch(train, i=0, n=64):
    x, y = train
    return x[i:i + n], y[i:i + n]


def run_steps(model, train, loss_fn, make, step, n, opt=None):
    opt = opt or make(model.parameters())
    for i in range(n):
        model.train()
        step(model, batch(train, (i * 64) % (len(train[0]) - 64)), loss_fn, opt)
    return opt


def both(name, data, n, seed=0):
    """(bug, fixed): each pipeline's model and optimizer after n training steps."""
    out = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts(name, data, fixed)
        torch.manual_seed(seed)
        out[fixed] = model, run_steps(model, train, loss_fn, make, step, n), train, loss_fn
    return out[False], out[True]


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND} | {b.name for b in bugs_blind2.BLIND2})
    assert not old & {b.name for b in BLIND3}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}
                | {p.name for p in bugs_blind2.CORRECT_BLIND2}) & {p.name for p in CORRECT_BLIND3}
    assert len({b.name for b in BLIND3}) == len(BLIND3) >= 20 and len(CORRECT_BLIND3) >= 8
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    assert not NOT_A_CHECK & known
    for b in BLIND3:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    assert sum(b.kind == "data" for b in BLIND3) >= 6 and sum(b.kind == "pipeline" for b in BLIND3) >= 12


@pytest.mark.parametrize("pipeline", CORRECT_BLIND3, ids=[p.name for p in CORRECT_BLIND3])
def test_correct_pipelines_train(pipeline, fmnist):
    torch.manual_seed(0)
    model, train, loss_fn, make, step = pipeline.build(*fmnist)
    opt = make(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for i in range(6):
        model.train()
        losses.append(step(model, batch(train, i * 64), loss_fn, opt))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


PIPELINE_BUGS = [b.name for b in BLIND3 if b.kind == "pipeline"]


@pytest.mark.parametrize("name", PIPELINE_BUGS)
def test_bug_and_fix_both_run(name, fmnist):
    """Silent: the planted bug and its fix both train without an exception and with finite losses."""
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts(name, fmnist, fixed)
        opt = make(model.parameters())
        for i in range(3):
            model.train()
            assert torch.isfinite(torch.tensor(step(model, batch(train, i * 64), loss_fn, opt))), (name, fixed)


def test_clean_splits(fmnist):
    test = rk.load_dataset("fashion-mnist", "test")
    for name, (x, y), (xt, yt), classes in clean_splits3(*fmnist, test.images[:N // 2], test.labels[:N // 2]):
        assert len(x) == len(y) and len(xt) == len(yt)
        assert set(yt.tolist()) == set(y.tolist()) == set(range(classes)), name
        assert x.dtype == xt.dtype == torch.uint8 and x.shape[1:] == xt.shape[1:]


# ----------------------------------------------------------------------------- eval / train mode

def test_normalization_inside_training_branch(fmnist):
    x = parts("normalization_inside_training_branch", fmnist)[1][0][:32]
    for fixed in (False, True):
        model = parts("normalization_inside_training_branch", fmnist, fixed)[0].eval()
        with torch.no_grad():
            same = torch.allclose(model(x), model.net((x - bugs.MEAN) / bugs.STD), atol=1e-5)
        assert same == fixed                          # eval must standardize as training did


def test_batchnorm_momentum_keras_convention(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("batchnorm_momentum_keras_convention", fmnist, fixed)
        bn = model[1]
        x = batch(train, 64)[0]
        model.train()
        with torch.no_grad():
            model(x)
            batch_mean = model[0](x).mean((0, 2, 3))
        assert train[0].shape[1:] == (3, 32, 32)
        close = torch.allclose(bn.running_mean, batch_mean, rtol=0.02, atol=0.02)
        assert close != fixed                         # one batch replaces the running statistics


# ----------------------------------------------------------------------------- what the loss computes

def test_cross_entropy_on_single_logit(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("cross_entropy_on_single_logit", fmnist, fixed)
        x, y = batch(train)
        assert y.shape == (64, 1) and 0 < y.mean() < 1
        loss = loss_fn(model(x), y)
        loss.backward()
        g = sum(p.grad.abs().sum() for p in model.parameters())
        assert (loss.item() > 0.1 and g > 0) == fixed, (loss.item(), g)


def test_class_weights_in_counter_order(fmnist):
    counts = {}
    for fixed in (False, True):
        _, (x, y), loss_fn, _, _ = parts("class_weights_in_counter_order", fmnist, fixed)
        counts[fixed] = torch.bincount(y, minlength=10).float()
        w = loss_fn.weight
        rarest, commonest = counts[fixed].argmin(), counts[fixed].argmax()
        assert (w[rarest] > w[commonest]) == fixed, w           # the rarest class must weigh the most
    assert torch.equal(counts[False], counts[True]) and counts[True][0] < counts[True][9] / 4


def test_softmax_for_multilabel(fmnist):
    for fixed in (False, True):
        model, (x, t), _, _, _ = parts("softmax_for_multilabel", fmnist, fixed)
        out = model(x[:64])
        assert (t[:64].sum(1) >= 2).any()
        assert torch.allclose(out.sum(1), torch.ones(64), atol=1e-5) != fixed   # can't hold 2 or 3 trues


def test_partial_mask_loss_mean(fmnist):
    losses = {}
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("partial_mask_loss_mean", fmnist, fixed)
        x, t = batch(train)
        assert 0.03 < (t >= 0).float().mean() < 0.07
        losses[fixed] = loss_fn(model(x), t).item()
    assert 12 < losses[True] / losses[False] < 30, losses       # the bug divides by 20x too many pixels


def test_label_smoothing_as_confidence(fmnist):
    floors = {}
    for fixed in (False, True):
        loss_fn = parts("label_smoothing_as_confidence", fmnist, fixed)[2]
        y = torch.arange(10)
        best = torch.stack([torch.log(torch.full((10,), loss_fn.label_smoothing / 10) +
                                      (1 - loss_fn.label_smoothing) * F.one_hot(k, 10)) for k in y])
        floors[fixed] = loss_fn(best, y).item()               # the loss at its optimum: the targets' entropy
    assert floors[False] > 2.0 and floors[True] < 0.6, floors


# ----------------------------------------------------------------------------- targets

def test_mask_resized_bilinear(fmnist):
    images = fmnist[0]
    full = grey_levels(images)
    share = lambda m: torch.bincount(m.flatten(), minlength=3).float() / m.numel()
    bug, fixed = (parts("mask_resized_bilinear", fmnist, f)[1][1] for f in (False, True))
    assert bug.shape == fixed.shape == (N, 14, 14)
    assert abs(share(fixed)[2] - share(full)[2]) < 0.03           # nearest keeps the class shares
    assert share(bug)[2] < 0.75 * share(full)[2]                  # bilinear + truncation erodes class 2


def test_target_integer_division(fmnist):
    bug, fixed = (parts("target_integer_division", fmnist, f)[1][1] for f in (False, True))
    assert (bug == 0).all() and bug.dtype == torch.float32
    assert fixed.std() > 0.05 and fixed.dtype == torch.float32


# ----------------------------------------------------------------------------- learning rate

def test_lr_compounding_decay(fmnist):
    (_, opt_bug, _, _), (_, opt_fixed, _, _) = both("lr_compounding_decay", fmnist, 100)
    assert opt_fixed.param_groups[0]["lr"] == pytest.approx(0.05 * 0.999 ** 100)
    assert opt_bug.param_groups[0]["lr"] < 0.01 * opt_fixed.param_groups[0]["lr"]


def test_lambda_lr_absolute(fmnist):
    (_, opt_bug, _, _), (_, opt_fixed, _, _) = both("lambda_lr_absolute", fmnist, 2)
    assert opt_fixed.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert opt_bug.param_groups[0]["lr"] == pytest.approx(1e-6)


# ----------------------------------------------------------------------------- what is trained

def test_param_iterator_spent(fmnist):
    for fixed in (False, True):
        model, _, _, make, _ = parts("param_iterator_spent", fmnist, fixed)
        opt = make(model.parameters())
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        missing = [p for p in model.parameters() if id(p) not in in_opt]
        assert (not missing) == fixed and (fixed or all(p.ndim == 1 for p in missing)), len(missing)


def test_dataparallel_checkpoint_strict_false(fmnist):
    torch.manual_seed(0)
    bug = BY_NAME["dataparallel_checkpoint_strict_false"].build(*fmnist, steps=5)[0]
    torch.manual_seed(0)
    fixed = CORRECTED["dataparallel_checkpoint_strict_false"](*fmnist)    # steps=60, the pipeline's own
    torch.manual_seed(0)
    fresh_bug = BY_NAME["dataparallel_checkpoint_strict_false"].build(*fmnist)[0]
    # the fixed backbone differs from the bug's: the bug's is the random init it was built with
    w_bug, w_fixed = fresh_bug.features[0].weight, fixed[0].features[0].weight
    assert not torch.equal(w_bug, w_fixed)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        init = correct_pipelines.Backbone()
    assert torch.equal(w_bug, init.features[0].weight) and torch.equal(bug.features[0].weight, w_bug)


def test_optimizer_state_overrides_lr(fmnist):
    for fixed in (False, True):
        model, _, _, make, _ = parts("optimizer_state_overrides_lr", fmnist, fixed)
        assert make(model.parameters()).param_groups[0]["lr"] == (0.01 if fixed else 0.5)


# ----------------------------------------------------------------------------- gradients and regularization

def test_hook_registered_every_step(fmnist):
    ratios = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("hook_registered_every_step", fmnist, fixed)
        opt = run_steps(model, train, loss_fn, make, step, 5)
        step(model, batch(train, 320), loss_fn, opt)               # the 6th step: look at its gradients
        body, head = model[1].weight.grad.norm(), model[-1].weight.grad.norm()
        ratios[fixed] = (body / head).item()
    assert ratios[False] < 1e-4 * ratios[True], ratios             # 0.1**6 vs 0.1


def test_l2_penalty_without_coefficient(fmnist):
    norms = {}
    for fixed in (False, True):
        model = both("l2_penalty_without_coefficient", fmnist, 40)[fixed][0]
        norms[fixed] = model[1].weight.norm().item()
    assert norms[False] < 0.2 * norms[True], norms                  # the weights are crushed


# ----------------------------------------------------------------------------- data bugs

def test_test_channels_bgr(fmnist):
    (x, _), (xt, _), _ = BY_NAME["test_channels_bgr"].build(*fmnist)
    assert x.shape[1:] == xt.shape[1:] == (3, 32, 32)
    m, mt = x.float().mean((0, 2, 3)), xt.float().mean((0, 2, 3))
    assert m[0] > m[2] and mt[0] < mt[2]                            # red brightest in train, blue in test


def test_test_inverted_polarity(fmnist):
    (x, _), (xt, _), _ = BY_NAME["test_inverted_polarity"].build(*fmnist)
    assert x.float().mean() < 100 < xt.float().mean()
    assert torch.equal(255 - xt, fmnist[0][len(x):])


def test_crowd_label_noise(fmnist):
    (_, y), _, _ = BY_NAME["crowd_label_noise"].build(*fmnist)
    wrong = (y != fmnist[1][:len(y)]).float().mean()
    assert 0.2 < wrong < 0.4, wrong


def test_conflicting_duplicate_annotations(fmnist):
    (x, y), _, _ = BY_NAME["conflicting_duplicate_annotations"].build(*fmnist)
    n = len(fmnist[1]) * 3 // 4
    k = n // 4
    assert torch.equal(x[n:], x[:k]) and (y[n:] != y[:k]).all()


def test_alphabetical_class_order_in_test(fmnist):
    (_, y), (_, yt), _ = BY_NAME["alphabetical_class_order_in_test"].build(*fmnist)
    true = fmnist[1][len(y):]
    alphabetical = sorted(FASHION_NAMES)
    assert sum(alphabetical.index(n) != i for i, n in enumerate(FASHION_NAMES)) == 6
    assert 0.4 < (yt != true).float().mean() < 0.8 and sorted(set(yt.tolist())) == sorted(set(true.tolist()))


def test_class_dependent_position(fmnist):
    (x, y), (xt, yt), _ = BY_NAME["class_dependent_position"].build(*fmnist)
    empty_top_left = lambda t: (t[:, :, :3].flatten(1).amax(1) == 0) & (t[:, :, :, :3].flatten(1).amax(1) == 0)
    sel = (y == 1) | (y == 8)
    assert empty_top_left(x[sel]).all()
    assert empty_top_left(x[~sel]).float().mean() < empty_top_left(x[sel]).float().mean()
    orig = fmnist[0][:len(y)]
    assert torch.equal(x[~sel], orig[~sel]) and not torch.equal(x[sel], orig[sel])
    selt = (yt == 1) | (yt == 8)
    moved = (xt != fmnist[0][len(y):]).flatten(1).any(1)
    assert 0.05 < moved[~selt].float().mean() < 0.4                # in test the shift is unrelated to class


def test_train_sources_in_two_scales(fmnist):
    (x, _), (xt, _), _ = BY_NAME["train_sources_in_two_scales"].build(*fmnist)
    half = len(x) // 2
    assert x[:half].max() > 200 and x[half:].max() <= 1.0 and xt.max() > 200
