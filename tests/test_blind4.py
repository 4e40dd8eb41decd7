"""The fourth blind catalog (recipe_kit/bugs_blind4.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind4.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants. None of these tests runs preflight or
audit_data: the catalog is scored once, by benchmarks/checks_blind4.py, not here.
"""
import pytest
import torch
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit import bugs, bugs_blind, bugs_blind2, bugs_blind3, bugs_heldout, correct_pipelines
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs_blind2 import digits_uint8, grey_levels
from recipe_kit.bugs_blind4 import (BLIND4, BY_NAME, CONFUSED, CORRECT_BLIND4, CORRECTED, NOT_A_CHECK,
                                    clean_splits4, cutmix)

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


def grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b))


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND} | {b.name for b in bugs_blind2.BLIND2}
           | {b.name for b in bugs_blind3.BLIND3})
    assert not old & {b.name for b in BLIND4}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}
                | {p.name for p in bugs_blind2.CORRECT_BLIND2} | {p.name for p in bugs_blind3.CORRECT_BLIND3}
                ) & {p.name for p in CORRECT_BLIND4}
    assert len({b.name for b in BLIND4}) == len(BLIND4) >= 20 and len(CORRECT_BLIND4) >= 8
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    assert not NOT_A_CHECK & known
    assert NOT_A_CHECK <= {c for b in BLIND4 for c in b.checks}       # every undiagnosable cause is used
    for b in BLIND4:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert b.kind == "data" or b.checks <= set(PREFLIGHT_CHECKS) | NOT_A_CHECK, b.name
        assert b.kind == "pipeline" or b.checks <= set(AUDIT_CHECKS), b.name
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    assert sum(b.kind == "data" for b in BLIND4) >= 6 and sum(b.kind == "pipeline" for b in BLIND4) >= 12


@pytest.mark.parametrize("pipeline", CORRECT_BLIND4, ids=[p.name for p in CORRECT_BLIND4])
def test_correct_pipelines_train(pipeline, fmnist):
    """Parameters change, losses stay finite, and the loss on a fixed batch falls over 12 steps."""
    torch.manual_seed(0)
    model, train, loss_fn, make, step = pipeline.build(*fmnist)
    opt = make(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
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


PIPELINE_BUGS = [b.name for b in BLIND4 if b.kind == "pipeline"]


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
    splits = clean_splits4(*fmnist, test.images[:N // 2], test.labels[:N // 2])
    assert len(splits) >= 2
    for name, (x, y), (xt, yt), classes in splits:
        assert len(x) == len(y) and len(xt) == len(yt)
        assert set(yt.tolist()) == set(y.tolist()) == set(range(classes)), name
        assert x.dtype == xt.dtype == torch.uint8 and x.shape[1:] == xt.shape[1:]


# ----------------------------------------------------------------------------- learning rate

def test_warmup_integer_division(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("warmup_integer_division", fmnist, fixed)
        before = [p.detach().clone() for p in model.parameters()]
        opt = make(model.parameters())
        for i in range(3):
            step(model, batch(train, i * 64), loss_fn, opt)
        assert (opt.param_groups[0]["lr"] > 0) == fixed
        assert same(before, model.parameters()) != fixed          # lr 0: the weights never move


# ----------------------------------------------------------------------------- what the model is fed

def test_next_iter_in_step(fmnist):
    for fixed in (False, True):
        after = []
        for i in (1, 3):                                          # two different batches, same start
            model, train, loss_fn, make, step = parts("next_iter_in_step", fmnist, fixed)
            opt = make(model.parameters())
            step(model, batch(train, i * 64), loss_fn, opt)
            after.append([p.detach().clone() for p in model.parameters()])
        assert same(*after) != fixed                              # the bug trains on the same batch


def test_global_pool_over_channels(fmnist):
    h = torch.randn(8, 16, 4, 4)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    for fixed in (False, True):
        model = parts("global_pool_over_channels", fmnist, fixed)[0]
        assert model.pool(h).shape == (8, 16)
        assert torch.allclose(model.pool(h), model.pool(h[:, perm]), atol=1e-6) != fixed   # channels lost


def test_transform_module_in_model(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("transform_module_in_model", fmnist, fixed)
        x = batch(train)[0]
        model.eval()
        with torch.no_grad():
            outs = [model(x) for _ in range(6)]
        assert all(torch.equal(outs[0], o) for o in outs) == fixed   # random at eval with the bug


def test_cutmix_label_weights_swapped(fmnist):
    x, y = batch((bugs.standardize(fmnist[0]), fmnist[1]))
    perm = torch.roll(torch.arange(64), 1)
    for fixed in (False, True):
        xm, ym = cutmix(x, y, perm, (0, 0, 14, 14), fixed)          # the box covers a quarter of the image
        assert torch.equal(xm[:, :, :14, :14], x[perm][:, :, :14, :14]) and torch.equal(xm[:, :, 14:], x[:, :, 14:])
        own = ym[torch.arange(64), y][y != y[perm]]
        assert torch.allclose(own, torch.full_like(own, 0.75 if fixed else 0.25))
        assert torch.allclose(ym.sum(1), torch.ones(64))


def test_mask_transposed_column_major(fmnist):
    for fixed in (False, True):
        _, (x, t), _, _, _ = parts("mask_transposed_column_major", fmnist, fixed)
        agree = (t == grey_levels(fmnist[0])).float().mean()
        assert (agree == 1) == fixed and agree > 0.5, agree


# ----------------------------------------------------------------------------- what the loss computes

def test_bce_arguments_swapped(fmnist):
    for fixed in (False, True):
        _, train, loss_fn, _, _ = parts("bce_arguments_swapped", fmnist, fixed)
        y = batch(train)[1]
        assert 0 < y.mean() < 1
        logits = torch.zeros(64, requires_grad=True)
        loss_fn(logits, y).backward()
        assert (logits.grad[y == 0] != 0).all() == fixed           # negatives get no gradient with the bug
        assert (loss_fn(torch.full((64,), 20.0), y).item() < 0) != fixed   # and the loss has no floor


def test_sigmoid_head_on_standardized_target(fmnist):
    for fixed in (False, True):
        model, (x, t), _, _, _ = parts("sigmoid_head_on_standardized_target", fmnist, fixed)
        with torch.no_grad():
            out = model(x[:64])
        assert (t < 0).float().mean() > 0.3
        assert bool(((out > 0) & (out < 1)).all()) != fixed
    floor = (t - t.clamp(0, 1)).pow(2).mean()                      # the best MSE a (0, 1) output can reach
    assert floor > 0.2, floor


def test_multilabel_unknown_as_minus_one(fmnist):
    for fixed in (False, True):
        _, (x, t), loss_fn, _, _ = parts("multilabel_unknown_as_minus_one", fmnist, fixed)
        assert t.shape == (N, 4) and 0.2 < (t == -1).float().mean() < 0.4
        out = torch.zeros(64, 4, requires_grad=True)
        loss_fn(out, t[:64]).backward()
        unknown = t[:64] == -1
        assert (out.grad[unknown] == 0).all() == fixed                 # unknown entries must not pull
        assert (loss_fn(torch.where(unknown, -30.0, 0.0), t[:64]).item() < 0) != fixed   # no floor


def test_hard_mining_keeps_one_sample(fmnist):
    for fixed in (False, True):
        _, train, loss_fn, _, _ = parts("hard_mining_keeps_one_sample", fmnist, fixed)
        y = batch(train)[1]
        out = torch.randn(64, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
        loss_fn(out, y).backward()
        assert (out.grad.abs().sum(1) > 0).sum() == (16 if fixed else 1)


def test_loss_on_last_microbatch_only(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("loss_on_last_microbatch_only", fmnist, fixed)
        x, y = batch(train)
        step(model, (x, y), loss_fn, torch.optim.SGD(model.parameters(), lr=0.0))   # keeps the gradients
        got = grads(model)
        model.zero_grad()
        loss_fn(model(x), y).backward()
        full = grads(model)
        model.zero_grad()
        (loss_fn(model(x[48:]), y[48:]) / 4).backward()
        last = grads(model)
        close = lambda a, b: all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a, b))
        assert close(got, full) == fixed and close(got, last) != fixed


def test_loss_clamped_for_stability(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("loss_clamped_for_stability", fmnist, fixed)
        x, y = batch(train)
        loss = loss_fn(model(x), y)
        loss.backward()
        assert F.cross_entropy(model(x), y).item() > 2.0
        assert any(g.abs().sum() > 0 for g in grads(model)) == fixed      # no gradient at all with the bug


# ----------------------------------------------------------------------------- gradients and initialization

def test_custom_backward_drops_grad_output(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("custom_backward_drops_grad_output", fmnist, fixed)
        x, y = batch(train)
        body = []
        for labels in (y, (y + 1) % 10):                          # same images, other labels
            model.zero_grad()
            loss_fn(model(x), labels).backward()
            body.append(model.body[1].weight.grad.clone())
        assert torch.allclose(*body) != fixed                      # the body's gradient ignores the loss


def test_init_std_as_variance(fmnist):
    scale, first = {}, {}
    for fixed in (False, True):
        model, (x, y), loss_fn, _, _ = parts("init_std_as_variance", fmnist, fixed)
        out = model(x[:128])
        loss_fn(out, y[:128]).backward()
        scale[fixed], first[fixed] = out.std().item(), model[1].weight.grad.norm().item()
    assert scale[False] < 1e-3 * scale[True] and first[False] < 1e-2 * first[True], (scale, first)


# ----------------------------------------------------------------------------- data bugs

def data(name, fmnist):
    return BY_NAME[name].build(*fmnist)


def test_class_conditional_label_flips(fmnist):
    (x, y), (xt, yt), _ = data("class_conditional_label_flips", fmnist)
    true = fmnist[1][:len(y)]
    for src, dst in CONFUSED.items():
        flipped = (y[true == src] == dst).float().mean()
        assert 0.2 < flipped < 0.6, (src, flipped)
    others = ~sum(true == k for k in CONFUSED).bool()
    assert torch.equal(y[others], true[others]) and torch.equal(x, fmnist[0][:len(y)])


def test_test_label_prior_shift(fmnist):
    (_, y), (_, yt), _ = data("test_label_prior_shift", fmnist)
    tops = lambda labels: (labels < 5).float().mean()
    assert tops(y) > 0.35 and tops(yt) < 0.2 and set(range(5, 10)) <= set(yt.tolist()) and (yt < 5).any()


def test_test_objects_smaller(fmnist):
    (x, y), (xt, yt), _ = data("test_objects_smaller", fmnist)
    border = lambda t: torch.cat([t[:, :, :4].flatten(1), t[:, :, -4:].flatten(1)], 1).amax(1)
    assert (border(xt) == 0).all() and (border(x) > 0).float().mean() > 0.5
    assert torch.equal(yt, fmnist[1][len(y):]) and xt.dtype == torch.uint8


def test_class_dependent_sensor_noise(fmnist):
    (x, y), (xt, yt), _ = data("class_dependent_sensor_noise", fmnist)
    changed = (x != fmnist[0][:len(y)]).flatten(1).any(1)
    sel = (y == 0) | (y == 3)
    assert changed[sel].all() and not changed[~sel].any()
    moved = (xt != fmnist[0][len(y):]).flatten(1).any(1)
    assert 0.05 < moved.float().mean() < 0.4 and moved[(yt != 0) & (yt != 3)].any()


def test_blank_placeholder_images(fmnist):
    (x, y), _, _ = data("blank_placeholder_images", fmnist)
    blank = (x == 128).flatten(1).all(1)
    assert 0.02 < blank.float().mean() < 0.12 and len(set(y[blank].tolist())) >= 3
    assert torch.equal(y, fmnist[1][:len(y)]) and torch.equal(x[~blank], fmnist[0][:len(y)][~blank])


def test_filter_on_images_only(fmnist):
    (x, y), (xt, yt), _ = data("filter_on_images_only", fmnist)
    images, labels = digits_uint8()
    n = len(labels) * 3 // 4
    assert len(x) == len(y) < n and torch.equal(xt, images[n:]) and torch.equal(yt, labels[n:])
    rows = {tuple(r.tolist()): i for i, r in enumerate(images[:n].flatten(1))}
    true = labels[torch.tensor([rows[tuple(r.tolist())] for r in x.flatten(1)])]
    assert (true == y).float().mean() < 0.4                        # most labels slid onto other images


def test_test_strokes_dilated(fmnist):
    (x, y), (xt, yt), _ = data("test_strokes_dilated", fmnist)
    orig = fmnist[0][len(y):]
    assert (xt >= orig).all() and xt.float().mean() > 1.15 * orig.float().mean()
    assert torch.equal(x, fmnist[0][:len(y)])
