"""The seventh blind catalog (recipe_kit/bugs_blind7.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind7.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants; each correct pipeline trains. None of these tests
runs preflight or audit_data: the catalog is scored once, by benchmarks/checks_blind7.py, not here.
"""
import math

import pytest
import torch

import recipe_kit as rk
from recipe_kit import (bugs, bugs_blind, bugs_blind2, bugs_blind3, bugs_blind4, bugs_blind5, bugs_blind6,
                        bugs_heldout, correct_pipelines)
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs import standardize
from recipe_kit.bugs_blind5 import pooled_features
from recipe_kit.bugs_blind6 import CONFUSED
from recipe_kit.bugs_blind7 import (BLIND7, BY_NAME, CORRECT_BLIND7, CORRECTED, NOT_A_CHECK, bright_mask,
                                    clean_splits7, object_height, soft_dice, teacher_for)

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


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b))


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND} | {b.name for b in bugs_blind2.BLIND2}
           | {b.name for b in bugs_blind3.BLIND3} | {b.name for b in bugs_blind4.BLIND4}
           | {b.name for b in bugs_blind5.BLIND5} | {b.name for b in bugs_blind6.BLIND6})
    assert not old & {b.name for b in BLIND7}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}
                | {p.name for p in bugs_blind2.CORRECT_BLIND2} | {p.name for p in bugs_blind3.CORRECT_BLIND3}
                | {p.name for p in bugs_blind4.CORRECT_BLIND4} | {p.name for p in bugs_blind5.CORRECT_BLIND5}
                | {p.name for p in bugs_blind6.CORRECT_BLIND6}) & {p.name for p in CORRECT_BLIND7}
    assert len({b.name for b in BLIND7}) == len(BLIND7) >= 20 and len(CORRECT_BLIND7) >= 9
    assert all(not p.warnings for p in CORRECT_BLIND7)                    # no warning allowed on any of them
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    assert not NOT_A_CHECK & known
    assert NOT_A_CHECK <= {c for b in BLIND7 for c in b.checks}       # every undiagnosable cause is used
    for b in BLIND7:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert b.kind == "data" or b.checks <= set(PREFLIGHT_CHECKS) | NOT_A_CHECK, b.name
        assert b.kind == "pipeline" or b.checks <= set(AUDIT_CHECKS), b.name
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    assert sum(b.kind == "data" for b in BLIND7) >= 7 and sum(b.kind == "pipeline" for b in BLIND7) >= 13


@pytest.mark.parametrize("pipeline", CORRECT_BLIND7, ids=[p.name for p in CORRECT_BLIND7])
def test_correct_pipelines_train(pipeline, fmnist):
    """Parameters change, losses stay finite, and the loss on a fixed batch falls over 12 steps."""
    torch.manual_seed(0)
    model, train, loss_fn, make, step = pipeline.build(*fmnist)
    opt = make(model.parameters())
    before = snapshot(model)
    probe = batch(train, 0)

    def probe_loss():
        model.eval()
        with torch.no_grad():
            return loss_fn(model(probe[0]), probe[1]).item()
    start, losses = probe_loss(), []
    for i in range(12):
        model.train()
        losses.append(step(model, batch(train, (i % 4) * 64), loss_fn, opt))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not same(before, model.parameters())
    assert probe_loss() < start, pipeline.name


PIPELINE_BUGS = [b.name for b in BLIND7 if b.kind == "pipeline"]


@pytest.mark.parametrize("name", PIPELINE_BUGS)
def test_bug_and_fix_both_run(name, fmnist):
    """Silent: the planted bug and its fix both train without an exception and with finite losses."""
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts(name, fmnist, fixed)
        opt = make(model.parameters())
        for i in range(2):
            model.train()
            loss = step(model, batch(train, i * 64), loss_fn, opt)
            assert math.isfinite(loss), (name, fixed)


def test_clean_splits(fmnist):
    test = rk.load_dataset("fashion-mnist", "test")
    splits = clean_splits7(*fmnist, test.images[:N // 2], test.labels[:N // 2])
    assert len(splits) >= 3
    for name, (x, y), (xt, yt), classes in splits:
        assert len(x) == len(y) and len(xt) == len(yt)
        assert set(yt.tolist()) == set(y.tolist()) == set(range(classes)), name
        assert x.dtype == xt.dtype and x.shape[1:] == xt.shape[1:], name
        assert torch.isfinite(x.float()).all() and torch.isfinite(xt.float()).all(), name
    assert any(x.ndim == 2 for _, (x, _), _, _ in splits)                  # a tabular (N, D) split
    assert any(x.shape[1:] == (3, 32, 32) for _, (x, _), _, _ in splits)   # colour


# ----------------------------------------------------------------------------- what the model sees

def test_bigru_final_state_viewed(fmnist):
    """A change to the last sample changes another sample's output only with the bug."""
    for fixed in (False, True):
        model, train, _, _, _ = parts("bigru_final_state_viewed", fmnist, fixed)
        x = batch(train)[0]
        other = x.clone()
        other[-1] = torch.randn_like(other[-1])
        model.eval()
        with torch.no_grad():
            a, b = model(x)[:-1], model(other)[:-1]
        assert torch.allclose(a, b, atol=1e-6) == fixed


def test_vib_sampling_in_eval(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("vib_sampling_in_eval", fmnist, fixed)
        x = batch(train)[0]
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), model(x)) == fixed
        model.train()
        with torch.no_grad():
            assert not torch.equal(model(x), model(x))                    # sampled in training, both ways


# ----------------------------------------------------------------------------- what is trained

def test_gru_state_detached_every_row(fmnist):
    """The loss reaches the first row's pixels only with the fix."""
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("gru_state_detached_every_row", fmnist, fixed)
        x, y = batch(train, 0, 16)
        x = x.clone().requires_grad_(True)
        loss_fn(model(x), y).backward()
        assert (x.grad[:, 0, 0].abs().sum() > 0) == fixed
        assert x.grad[:, 0, -1].abs().sum() > 0                           # the last row always


def test_unfreeze_by_module_attribute(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("unfreeze_by_module_attribute", fmnist, fixed)
        assert all(p.requires_grad == fixed for p in model.body.parameters())
        body = snapshot(model.body)
        step(model, batch(train), loss_fn, make(model.parameters()))
        assert same(body, model.body.parameters()) != fixed
        if not fixed:
            assert model.body.requires_grad is True                       # the attribute the bug set


def test_manual_sgd_rebinds_name(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("manual_sgd_rebinds_name", fmnist, fixed)
        before = snapshot(model)
        opt = make(model.parameters())
        for i in range(2):
            step(model, batch(train, i * 64), loss_fn, opt)
        assert same(before, model.parameters()) != fixed
        assert all(s["momentum"].abs().sum() > 0 for s in opt.state.values())   # gradients were there


def test_sgd_dampening_as_beta(fmnist):
    """Under a constant gradient, once the velocity has built up (100 steps), a step is 10x shorter with the bug."""
    last = {}
    for fixed in (False, True):
        model, _, _, make, _ = parts("sgd_dampening_as_beta", fmnist, fixed)
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = make([w])
        for _ in range(100):
            before = w.detach().clone()
            opt.zero_grad()
            w.sum().backward()
            opt.step()
        last[fixed] = (before - w).abs().max().item()
    assert last[True] == pytest.approx(0.5, rel=1e-3) and last[False] == pytest.approx(0.05, rel=1e-3), last


def test_amp_clip_before_unscale(fmnist):
    """One step moves the first layer about 65536x less with the bug."""
    moved = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("amp_clip_before_unscale", fmnist, fixed)
        before = snapshot(model)
        step(model, batch(train), loss_fn, make(model.parameters()))
        moved[fixed] = (model[1].weight - before[0]).norm().item()
    assert moved[True] > 1e-3 and moved[False] < 1e-3 * moved[True], moved


# ----------------------------------------------------------------------------- what the loss counts

def test_log_sigmoid_into_nll(fmnist):
    """Every output large: the bug's loss is about 0 whatever the label, the fix's is ln 10."""
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("log_sigmoid_into_nll", fmnist, fixed)
        y = batch(train)[1]
        loss = loss_fn(model[-1](torch.full((64, 10), 10.0)), y).item()
        assert (abs(loss - math.log(10)) < 1e-4) == fixed and (loss < 1e-3) != fixed


def test_distillation_teacher_logits_as_targets(fmnist):
    """The teacher is trained (it beats chance); the bug's loss goes negative from the first step."""
    x, y = standardize(fmnist[0]), fmnist[1]
    assert (teacher_for(x, y)(x).argmax(1) == y).float().mean() > 0.5
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("distillation_teacher_logits_as_targets", fmnist, fixed)
        loss = step(model, batch(train), loss_fn, make(model.parameters()))
        assert (loss > 0) == fixed, loss


def test_bce_weight_given_pos_weight(fmnist):
    """At zero logits the positives of the rarest attribute pull harder than its negatives only with the fix."""
    for fixed in (False, True):
        _, (x, t), loss_fn, _, _ = parts("bce_weight_given_pos_weight", fmnist, fixed)
        assert x.shape[1:] == (3, 32, 32) and t.shape == (N, 4)
        logits = torch.zeros(N, 4, requires_grad=True)
        loss_fn(logits, t).backward()
        rare = t.mean(0).argmin()
        pos, neg = t[:, rare] == 1, t[:, rare] == 0
        pull = logits.grad[pos, rare].abs().sum() / logits.grad[neg, rare].abs().sum()
        assert 0.2 < t[:, rare].mean() < 0.4
        assert (abs(pull - 1) < 1e-4) == fixed, pull                     # balanced: positives pull as hard in sum
        assert (pull < 0.5) != fixed


def test_dice_on_logits(fmnist):
    """Outputs that are 1 on the mask and negative on the background, summing to 0: the bug's loss goes below 0
    (no minimum at the target), the fix's stays in [0, 1]."""
    images = fmnist[0][:64]
    t = bright_mask(images)
    a = t.sum() / (1 - t).sum()
    out = t - a * (1 - t)
    assert abs(out.sum()) < 1e-2
    assert soft_dice(False)(out, t) < 0
    assert 0 <= soft_dice(True)(out, t) <= 1
    assert soft_dice(True)(20 * (2 * t - 1), t) < 0.01                    # the fix's minimum is the mask


# ----------------------------------------------------------------------------- learning rate

def lr_after(name, fmnist, fixed, steps):
    model, _, _, make, _ = parts(name, fmnist, fixed)
    opt = make(model.parameters())
    for _ in range(steps):
        opt.step()
        opt.scheduler.step()
    return opt.param_groups[0]["lr"]


def test_linear_warmup_factors_swapped(fmnist):
    assert lr_after("linear_warmup_factors_swapped", fmnist, False, 150) == pytest.approx(2e-5)
    assert lr_after("linear_warmup_factors_swapped", fmnist, True, 150) == pytest.approx(2e-3)


def test_multistep_gamma_inverted(fmnist):
    assert lr_after("multistep_gamma_inverted", fmnist, False, 200) == pytest.approx(5.0)
    assert lr_after("multistep_gamma_inverted", fmnist, True, 200) == pytest.approx(5e-4)


# ----------------------------------------------------------------------------- data bugs

def data(name, fmnist):
    return BY_NAME[name].build(*fmnist)


def test_label_parsed_from_index(fmnist):
    (x, y), (xt, yt), _ = data("label_parsed_from_index", fmnist)
    truth = fmnist[1][:len(y)]
    assert torch.equal(y, torch.arange(len(y)) % 10)
    assert (y == truth).float().mean() < 0.25
    assert torch.equal(x, fmnist[0][:len(y)]) and torch.equal(yt, fmnist[1][len(y):])


def test_train_gamma_encoded(fmnist):
    (x, y), (xt, yt), _ = data("train_gamma_encoded", fmnist)
    orig = fmnist[0][:len(y)]
    assert torch.equal(x == 0, orig == 0) and (x[orig == 255] == 255).all()
    mid = (orig > 30) & (orig < 200)
    assert (x[mid] > orig[mid]).all()
    assert x.float().mean() > 1.2 * orig.float().mean()
    assert torch.equal(xt, fmnist[0][len(y):])


def test_letterboxed_bags_in_train(fmnist):
    (x, y), (xt, yt), _ = data("letterboxed_bags_in_train", fmnist)
    orig, orig_t = fmnist[0][:len(y)], fmnist[0][len(y):]
    changed = (x != orig).flatten(1).any(1)
    assert (y == 8).sum() > 10 and torch.equal(changed, y == 8)
    bags = x[y == 8]
    assert (bags[..., :5] == 0).all() and (bags[..., 23:] == 0).all()     # black bars
    changed_t = (xt != orig_t).flatten(1).any(1)
    assert 0.1 < changed_t.float().mean() < 0.3
    assert len(set(yt[changed_t].tolist())) >= 5                          # of any class


def test_test_column_units_changed(fmnist):
    (x, y), (xt, yt), _ = data("test_column_units_changed", fmnist)
    assert x.shape[1] == xt.shape[1] == 17
    assert torch.equal(x[:, 16], object_height(fmnist[0][:len(y)])) and x[:, 16].max() <= 28
    assert 7 < xt[:, 16].mean() / x[:, 16].mean() < 13
    assert torch.equal(xt[:, :16], pooled_features(fmnist[0][len(y):]))


def test_pseudo_labeled_test_added_to_train(fmnist):
    (x, y), (xt, yt), _ = data("pseudo_labeled_test_added_to_train", fmnist)
    copies = (xt.flatten(1)[:, None] == x.flatten(1)[None]).all(2)        # (test, train): byte-identical
    assert copies.any(1).all()                                            # every test image is in train
    pseudo = y[-len(yt):]
    wrong = pseudo != yt
    assert 0.05 < wrong.float().mean() < 0.3 and torch.equal(pseudo[wrong], CONFUSED[yt[wrong]])
    assert torch.equal(yt, fmnist[1][N * 3 // 4:])


def shifted_distance(a, b, reach=2):
    """Per pair of rows of a and b: the smallest L2 distance over shifts of a by up to `reach` pixels."""
    a, b = a.float(), b.float()
    shifts = [(i, j) for i in range(-reach, reach + 1) for j in range(-reach, reach + 1)]
    return torch.stack([(a.roll(s, (2, 3)) - b).flatten(1).norm(dim=1) for s in shifts]).amin(0)


def test_video_frame_bursts_in_train(fmnist):
    """The frames of one garment are near copies (up to a shift and noise), far closer than other garments."""
    (x, y), (xt, yt), _ = data("video_frame_bursts_in_train", fmnist)
    items = len(y) // 4
    assert len(x) == len(y) == 4 * items and (y.view(4, -1) == y[:items]).all()
    first, second = x[:items], x[items:2 * items]
    same_item = shifted_distance(first, second)
    other_item = shifted_distance(first, second.roll(1, 0))
    assert (same_item < 0.3 * other_item).float().mean() > 0.9, (same_item.median(), other_item.median())
    assert not torch.equal(first, second)                                 # near, not byte-identical


def test_tabular_missingness_shortcut(fmnist):
    (x, y), (xt, yt), _ = data("tabular_missingness_shortcut", fmnist)
    assert x.shape[1] == xt.shape[1] == 17
    assert torch.equal(x[:, 16] == -1, y == 5) and (y == 5).sum() > 10
    missing_t = xt[:, 16] == -1
    assert 0.05 < missing_t.float().mean() < 0.3 and len(set(yt[missing_t].tolist())) >= 5
    assert ((x[:, 16][y != 5] >= 0) & (x[:, 16][y != 5] <= 1)).all()


def test_test_dithered_binary(fmnist):
    (x, y), (xt, yt), _ = data("test_dithered_binary", fmnist)
    orig = fmnist[0][len(y):]
    assert set(xt.unique().tolist()) == {0, 255}
    pooled = lambda t: torch.nn.functional.avg_pool2d(t.float(), 4)
    assert (pooled(xt) - pooled(orig)).abs().mean() < 12                  # the same garments on average
    assert torch.equal(x, fmnist[0][:len(y)])
