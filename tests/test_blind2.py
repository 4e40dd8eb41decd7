"""The second blind catalog (recipe_kit/bugs_blind2.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind2.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants. None of these tests runs preflight or
audit_data: the catalog is scored once, by benchmarks/checks_blind2.py, not here. About 13 CPU
seconds (8 s wall on an idle core).
"""
import pytest
import torch
import torch.nn as nn

import recipe_kit as rk
from recipe_kit import bugs, bugs_blind, bugs_heldout, correct_pipelines
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.bugs import MEAN, STD
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs_blind2 import BLIND2, BY_NAME, CORRECT_BLIND2, CORRECTED, DropPathMLP, clean_splits2

N = 512
# Declared causes that are no check: no check's description covers them (the bug can't be diagnosed).
NOT_A_CHECK = {"dropout_rate", "target_scale", "input_geometry", "augmentation", "train_eval_consistency",
               "grad_clipping"}


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


def run_steps(model, train, loss_fn, make, step, n):
    opt = make(model.parameters())
    for i in range(n):
        model.train()
        step(model, batch(train, (i * 64) % (len(train[0]) - 64)), loss_fn, opt)
    return opt


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND})
    assert not old & {b.name for b in BLIND2}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}) \
        & {p.name for p in CORRECT_BLIND2}
    assert len({b.name for b in BLIND2}) == len(BLIND2) >= 20 and len(CORRECT_BLIND2) >= 10
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    for b in BLIND2:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    # the catalog spans the families of issue 18
    assert sum(b.kind == "data" for b in BLIND2) >= 5 and sum(b.kind == "pipeline" for b in BLIND2) >= 12


@pytest.mark.parametrize("pipeline", CORRECT_BLIND2, ids=[p.name for p in CORRECT_BLIND2])
def test_correct_pipelines_train(pipeline, fmnist):
    torch.manual_seed(0)
    model, train, loss_fn, make, step = pipeline.build(*fmnist)
    opt = make(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for i in range(8):                       # 8: the accumulating pipeline steps every 4 calls
        model.train()
        losses.append(step(model, batch(train, i * 64), loss_fn, opt))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_clean_splits_are_disjoint(fmnist):
    test = rk.load_dataset("fashion-mnist", "test")
    for name, (x, y), (xt, yt), classes in clean_splits2(*fmnist, test.images[:N // 4], test.labels[:N // 4]):
        assert len(x) == len(y) and len(xt) == len(yt) and classes == 10
        assert set(yt.tolist()) == set(y.tolist()) == set(range(10)), name


# ----------------------------------------------------------------------------- what is trained

def test_layer_created_in_forward(fmnist):
    bug, fixed = parts("layer_created_in_forward", fmnist)[0].eval(), \
        parts("layer_created_in_forward", fmnist, True)[0].eval()
    x = batch(parts("layer_created_in_forward", fmnist)[1])[0]
    assert not torch.equal(bug(x), bug(x))                  # a new random head at each call
    assert torch.equal(fixed(x), fixed(x))
    assert len(list(bug.parameters())) == len(list(fixed.parameters())) - 2


def test_dropout_keep_prob_as_p(fmnist):
    for fixed, low, high in ((False, 0.85, 0.95), (True, 0.05, 0.15)):
        model = parts("dropout_keep_prob_as_p", fmnist, fixed)[0].train()
        drop = next(m for m in model.modules() if isinstance(m, nn.Dropout))
        zeros = (drop(torch.ones(10000)) == 0).float().mean().item()
        assert low < zeros < high, (fixed, zeros)


def test_multi_head_loss_typo(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("multi_head_loss_typo", fmnist, fixed)
        loss_fn(model(batch(train)[0]), batch(train)[1]).backward()
        g = model.attributes.weight.grad
        assert (g is not None and g.abs().sum() > 0) == fixed


# ----------------------------------------------------------------------------- what the loss counts

def test_kl_div_on_probabilities(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("kl_div_on_probabilities", fmnist, fixed)
        loss = loss_fn(model(batch(train)[0]), batch(train)[1]).item()
        assert (loss >= 0) == fixed, loss                    # a KL divergence is never negative


def test_log_softmax_over_width(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("log_softmax_over_width", fmnist, fixed)
        out = model(batch(train)[0])
        assert out.shape[1] == 3
        sums_to_one = torch.allclose(out.exp().sum(1), torch.ones(()), atol=1e-4)
        assert sums_to_one == fixed


def test_unscaled_regression_target(fmnist):
    assert parts("unscaled_regression_target", fmnist)[1][1].std() > 50
    assert abs(parts("unscaled_regression_target", fmnist, True)[1][1].std() - 1) < 0.01


# ----------------------------------------------------------------------------- what the model sees

def test_center_crop_sees_only_the_middle(fmnist):
    images, labels = fmnist
    framed = images.clone()
    framed[:, :, :10] = 255                                  # change everything above the middle 8x8
    for fixed in (False, True):
        a = CORRECTED["center_crop_instead_of_resize"](images, labels)[1][0] if fixed else \
            BY_NAME["center_crop_instead_of_resize"].build(images, labels)[1][0]
        b = CORRECTED["center_crop_instead_of_resize"](framed, labels)[1][0] if fixed else \
            BY_NAME["center_crop_instead_of_resize"].build(framed, labels)[1][0]
        assert a.shape[-2:] == (8, 8)
        assert torch.allclose(a, b) != fixed                 # the crop ignores a third of the image


def test_mask_flipped_independently(fmnist):
    threshold = (127 / 255 - MEAN) / STD
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("mask_flipped_independently", fmnist, fixed)
        seen = []
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        mismatched = []
        record = lambda out, m: (mismatched.append(not torch.equal(seen[-1] > threshold, m > 0.5)),
                                 loss_fn(out, m))[1]
        torch.manual_seed(1)
        run_steps(model, train, record, make, step, 30)
        assert any(mismatched) != fixed, mismatched


def test_mixup_labels_not_mixed(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("mixup_labels_not_mixed", fmnist, fixed)
        targets = []
        run_steps(model, train, lambda out, t: (targets.append(t), loss_fn(out, t))[1], make, step, 3)
        assert all(t.is_floating_point() == fixed for t in targets)   # soft targets only when fixed


# ----------------------------------------------------------------------------- eval / train mode

def test_drop_path_unscaled():
    assert not BY_NAME["drop_path_unscaled"].build(torch.zeros(2, 1, 28, 28, dtype=torch.uint8),
                                                   torch.zeros(2, dtype=torch.long))[0].scaled
    x = torch.randn(4, 1, 28, 28)
    for scaled in (False, True):
        torch.manual_seed(0)
        model = DropPathMLP(survival=0.5, scaled=scaled, blocks=1)
        with torch.no_grad():
            train_mean = torch.stack([model.train()(x) for _ in range(4000)]).mean(0)
            gap = (train_mean - model.eval()(x)).abs().max().item()
        assert (gap < 0.05) == scaled, gap                    # eval must be the training expectation


def test_train_override_ignores_mode(fmnist):
    for fixed in (False, True):
        model = parts("train_override_ignores_mode", fmnist, fixed)[0].eval()
        assert any(m.training for m in model.modules()) != fixed


# ----------------------------------------------------------------------------- optimizer and schedule

def test_plateau_on_accuracy(fmnist):
    lrs = {}
    for fixed in (False, True):
        opt = run_steps(*parts("plateau_on_accuracy", fmnist, fixed), 40)
        lrs[fixed] = opt.param_groups[0]["lr"]
    assert lrs[False] <= 2.5e-4 and lrs[True] >= 5e-4, lrs


def test_clip_before_backward(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("clip_before_backward", fmnist, fixed)
        norms = []
        opt = make(model.parameters())
        opt.register_step_pre_hook(lambda o, a, k: norms.append(torch.norm(torch.stack(
            [p.grad.norm() for p in model.parameters() if p.grad is not None])).item()))
        for i in range(5):
            step(model, batch(train, i * 64), loss_fn, opt)
        assert (max(norms) <= 1.0 + 1e-4) == fixed, norms


def test_scheduler_on_stale_optimizer(fmnist):
    for fixed in (False, True):
        opt = run_steps(*parts("scheduler_on_stale_optimizer", fmnist, fixed), 1)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.4 if not fixed else 0.4 * 2 / 100)


def test_adam_eps_one(fmnist):
    moved = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("adam_eps_one", fmnist, fixed)
        before = [p.detach().clone() for p in model.parameters()]
        run_steps(model, train, loss_fn, make, step, 1)
        moved[fixed] = torch.cat([(a - p).abs().flatten() for a, p in zip(before, model.parameters())]).median()
    assert moved[False] < 0.1 * moved[True], moved        # the typical weight moves 10x less (or far less)


def test_collate_sorts_inputs_only(fmnist):
    for fixed in (False, True):
        loader = parts("collate_sorts_inputs_only", fmnist, fixed)[1]
        x_all, y_all = loader.dataset.tensors
        x, y = next(iter(loader))
        idx = torch.cdist(x.flatten(1), x_all.flatten(1)).argmin(1)
        wrong = (y_all[idx] != y).float().mean().item()
        assert (wrong == 0) == fixed and (fixed or wrong > 0.5), wrong


# ----------------------------------------------------------------------------- data bugs

def test_uint8_brightness_wraparound(fmnist):
    (x, _), _, _ = BY_NAME["uint8_brightness_wraparound"].build(*fmnist)
    original = fmnist[0][:len(x)]
    wrapped = (original > 195) & (x < original)              # bright pixels that became darker
    assert wrapped.any() and not (x.int() - original.int() > 60).any()


def test_split_twice_without_seed(fmnist):
    (x, _), (xt, _), _ = BY_NAME["split_twice_without_seed"].build(*fmnist)
    train = {bytes(r.numpy()) for r in x.flatten(1)}
    shared = sum(bytes(r.numpy()) in train for r in xt.flatten(1))
    assert shared > len(xt) // 2, shared


def test_unshuffled_split_of_sorted_data(fmnist):
    (_, y), (_, yt), _ = BY_NAME["unshuffled_split_of_sorted_data"].build(*fmnist)
    assert set(yt.tolist()) <= {7, 8, 9} and len(set(y.tolist())) >= 7


def test_missing_class_folder_in_test(fmnist):
    images, labels = fmnist
    (_, y), (xt, yt), _ = BY_NAME["missing_class_folder_in_test"].build(images, labels)
    true = labels[len(y):][labels[len(y):] != 3]
    assert 9 not in yt.tolist() and 9 in y.tolist()
    assert torch.equal(yt[true > 3], true[true > 3] - 1)


def test_zoomed_copies_in_test(fmnist):
    (x, y), (xt, yt), _ = BY_NAME["zoomed_copies_in_test"].build(*fmnist)
    half = len(yt) // 2
    assert torch.equal(yt[:half], y[:half])
    corr = torch.nn.functional.cosine_similarity(xt[:half].flatten(1).float(), x[:half].flatten(1).float())
    assert corr.median() > 0.8                               # the same item...
    assert not (xt[:half].flatten(1)[:, None] == x.flatten(1)[None]).all(-1).any()   # ...but no byte copy


def blocky(x):
    """True where every 2x2 block is constant (a half-resolution image)."""
    x = x.float()
    return (x == torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 2), scale_factor=2)) \
        .flatten(1).all(1)


def test_class_dependent_blur(fmnist):
    (x, y), (xt, yt), _ = BY_NAME["class_dependent_blur"].build(*fmnist)
    tops = lambda t: (t == 0) | (t == 2) | (t == 4) | (t == 6)
    assert torch.equal(blocky(x), tops(y))                   # in train, resolution IS the class
    b = blocky(xt)
    assert 0.2 < b[tops(yt)].float().mean() < 0.6 and 0.2 < b[~tops(yt)].float().mean() < 0.6


def test_class_dependent_exposure(fmnist):
    (x, y), (xt, yt), _ = BY_NAME["class_dependent_exposure"].build(*fmnist)
    shoes = lambda t: (t == 5) | (t == 7) | (t == 9)
    dark = lambda imgs: imgs.flatten(1).max(1).values <= 153
    assert dark(x[shoes(y)]).all() and dark(x[~shoes(y)]).float().mean() < 0.05
    assert 0.15 < dark(xt[shoes(yt)]).float().mean() < 0.5 and 0.15 < dark(xt[~shoes(yt)]).float().mean() < 0.5
