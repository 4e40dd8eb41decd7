"""The sixth blind catalog (recipe_kit/bugs_blind6.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind6.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants; each correct pipeline trains. None of these tests
runs preflight or audit_data: the catalog is scored once, by benchmarks/checks_blind6.py, not here.
"""
import pytest
import torch
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit import (bugs, bugs_blind, bugs_blind2, bugs_blind3, bugs_blind4, bugs_blind5, bugs_blind6, bugs_heldout,
                        correct_pipelines)
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs_blind2 import digits_uint8
from recipe_kit.bugs_blind5 import pooled_features
from recipe_kit.bugs_blind6 import (BACKGROUND, BLIND6, BY_NAME, CONFUSED, CORRECT_BLIND6, CORRECTED, NOT_A_CHECK,
                                    QUANTILES, clean_splits6, decay_lr, inked_cells)

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


def frozen(model):
    """An optimizer that keeps the weights where they are (lr 0), to look at what a step feeds the model."""
    return torch.optim.SGD(model.parameters(), lr=0.0)


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND} | {b.name for b in bugs_blind2.BLIND2}
           | {b.name for b in bugs_blind3.BLIND3} | {b.name for b in bugs_blind4.BLIND4}
           | {b.name for b in bugs_blind5.BLIND5})
    assert not old & {b.name for b in BLIND6}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}
                | {p.name for p in bugs_blind2.CORRECT_BLIND2} | {p.name for p in bugs_blind3.CORRECT_BLIND3}
                | {p.name for p in bugs_blind4.CORRECT_BLIND4} | {p.name for p in bugs_blind5.CORRECT_BLIND5}
                ) & {p.name for p in CORRECT_BLIND6}
    assert len({b.name for b in BLIND6}) == len(BLIND6) >= 20 and len(CORRECT_BLIND6) >= 9
    assert all(not p.warnings for p in CORRECT_BLIND6)                    # no warning allowed on any of them
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    assert not NOT_A_CHECK & known
    assert NOT_A_CHECK <= {c for b in BLIND6 for c in b.checks}       # every undiagnosable cause is used
    for b in BLIND6:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert b.kind == "data" or b.checks <= set(PREFLIGHT_CHECKS) | NOT_A_CHECK, b.name
        assert b.kind == "pipeline" or b.checks <= set(AUDIT_CHECKS), b.name
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    assert sum(b.kind == "data" for b in BLIND6) >= 7 and sum(b.kind == "pipeline" for b in BLIND6) >= 13


@pytest.mark.parametrize("pipeline", CORRECT_BLIND6, ids=[p.name for p in CORRECT_BLIND6])
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


PIPELINE_BUGS = [b.name for b in BLIND6 if b.kind == "pipeline"]


@pytest.mark.parametrize("name", PIPELINE_BUGS)
def test_bug_and_fix_both_run(name, fmnist):
    """Silent: the planted bug and its fix both train without an exception and with finite losses."""
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts(name, fmnist, fixed)
        opt = make(model.parameters())
        batches = iter(train) if isinstance(train, torch.utils.data.DataLoader) else None
        for i in range(3):
            model.train()
            loss = step(model, next(batches) if batches else batch(train, i * 64), loss_fn, opt)
            assert torch.isfinite(torch.tensor(loss)), (name, fixed)


def test_clean_splits(fmnist):
    test = rk.load_dataset("fashion-mnist", "test")
    splits = clean_splits6(*fmnist, test.images[:N // 2], test.labels[:N // 2])
    assert len(splits) >= 3
    for name, (x, y), (xt, yt), classes in splits:
        assert len(x) == len(y) and len(xt) == len(yt)
        assert set(yt.tolist()) == set(y.tolist()) == set(range(classes)), name
        assert x.dtype == xt.dtype and x.shape[1:] == xt.shape[1:], name
        assert torch.isfinite(x).all() and torch.isfinite(xt).all(), name
    assert any(x.ndim == 2 for _, (x, _), _, _ in splits)                  # a tabular (N, D) split
    assert any(x.dtype == torch.float32 for _, (x, _), _, _ in splits)


# ----------------------------------------------------------------------------- what the model sees

def test_padding_mask_polarity_inverted(fmnist):
    """New content in the real rows (padding kept) changes the output only with the fix."""
    for fixed in (False, True):
        model, train, _, _, _ = parts("padding_mask_polarity_inverted", fmnist, fixed)
        x = batch(train)[0]
        pad = x.amax(-1) <= BACKGROUND + 1e-4
        assert pad[:, -4:].all() and (~pad).any(1).all()                   # every sequence has real rows and padding
        other = torch.where(pad[:, :, None], x, torch.randn_like(x))
        model.eval()
        with torch.no_grad():
            assert torch.allclose(model(x), model(other), atol=1e-5) != fixed


def test_lstm_reads_first_step(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("lstm_reads_first_step", fmnist, fixed)
        model.eval()
        with torch.no_grad():
            a, b = model(batch(train, 0)[0]), model(batch(train, 64)[0])
        assert torch.allclose(a, b, atol=1e-5) != fixed                    # the first row is padding: one answer


def test_dropout_in_plain_dict(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("dropout_in_plain_dict", fmnist, fixed)
        model.eval()
        x = batch(train)[0]
        with torch.no_grad():
            assert torch.equal(model(x), model(x)) == fixed
        assert any(isinstance(m, torch.nn.Dropout) for m in model.modules()) == fixed


def test_tabular_column_left_unscaled(fmnist):
    for fixed in (False, True):
        _, (x, _), _, _, _ = parts("tabular_column_left_unscaled", fmnist, fixed)
        assert x.shape == (N, 17)
        std = x.std(0)
        assert torch.allclose(std[:16], torch.ones(16), atol=1e-4)
        assert (std[16] > 20) != fixed and (abs(std[16] - 1) < 1e-4) == fixed


def test_weighted_sampler_without_replacement(fmnist):
    for fixed in (False, True):
        _, loader, _, _, _ = parts("weighted_sampler_without_replacement", fmnist, fixed)
        shares = [y.mean().item() for _, y in loader]
        assert len(shares) == N // 64
        if fixed:
            assert all(0.25 < s < 0.75 for s in shares), shares         # balanced batches
        else:
            assert shares[0] > 0.3 and max(shares[len(shares) // 2:]) == 0, shares   # bags early, then none
            assert abs(sum(shares) / len(shares) - bugs_blind5.bag_or_not(fmnist[1]).mean()) < 0.01


# ----------------------------------------------------------------------------- what is trained

def test_activation_rounded_in_forward(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("activation_rounded_in_forward", fmnist, fixed)
        assert train[0].shape[1:] == (1, 8, 8)
        loss_fn(model(batch(train)[0]), batch(train)[1]).backward()
        assert (model.fc1.weight.grad.abs().sum() > 0) == fixed
        assert model.fc2.weight.grad.abs().sum() > 0


def test_pure_bf16_weights(fmnist):
    """After 3 Adam steps at lr 2e-4, most first-layer weights are unchanged with the bug, all moved with the fix."""
    moved = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("pure_bf16_weights", fmnist, fixed)
        assert train[0].shape[1:] == (3, 32, 32)
        opt, before = make(model.parameters()), snapshot(model)
        for i in range(3):
            step(model, batch(train, i * 64), loss_fn, opt)
        moved[fixed] = (next(model.parameters()) != before[0]).float().mean().item()
    assert moved[False] < 0.5 and moved[True] > 0.99, moved


def test_init_in_train_step(fmnist):
    """One step moves the first convolution by a fraction of a percent, or redraws it with the bug."""
    change = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("init_in_train_step", fmnist, fixed)
        opt, before = make(model.parameters()), snapshot(model)
        step(model, batch(train), loss_fn, opt)
        w, w0 = model[0].weight, before[0]
        change[fixed] = ((w - w0).norm() / w0.norm()).item()
    assert change[False] > 0.5 and change[True] < 0.1, change


def test_seed_reset_in_step(fmnist):
    """Two steps on the same batch (weights held) draw the same dropout mask with the bug, others with the fix."""
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("seed_reset_in_step", fmnist, fixed)
        masks = []
        handle = model[3].register_forward_hook(lambda m, args, out: masks.append(out == 0))
        torch.manual_seed(1)
        for _ in range(2):
            model.train()
            step(model, batch(train), loss_fn, frozen(model))
        handle.remove()
        assert torch.equal(masks[0], masks[1]) != fixed


# ----------------------------------------------------------------------------- what the loss counts

def test_poisson_rate_into_log_input_loss(fmnist):
    """Trained briefly, the fix's exp(output) matches the mean count; the bug's 'rate' sits near log(count)."""
    out = {}
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("poisson_rate_into_log_input_loss", fmnist, fixed)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for i in range(60):
            step(model, batch(train, (i % 4) * 64), loss_fn, opt)
        with torch.no_grad():
            out[fixed] = model(train[0][:256])
    counts = inked_cells(fmnist[0][:256])
    assert counts.mean() > 8 and torch.equal(counts, counts.round())
    assert out[False].min() >= 0 and out[False].mean() < 0.4 * counts.mean()   # the "rate" learned log(count)
    assert abs(out[True].exp().mean() / counts.mean() - 1) < 0.3


def test_quantile_loss_sign_flipped(fmnist):
    """Constant predictions at the empirical 10/50/90% quantiles: the fix prefers them in order, the bug reversed."""
    for fixed in (False, True):
        _, (_, t), loss_fn, _, _ = parts("quantile_loss_sign_flipped", fmnist, fixed)
        qs = torch.quantile(t, QUANTILES)
        ordered, reversed_ = qs.expand(len(t), 3), qs.flip(0).expand(len(t), 3)
        assert (loss_fn(ordered, t) < loss_fn(reversed_, t)) == fixed


def test_multilabel_margin_loss_on_multi_hot(fmnist):
    """At zero logits the loss pushes attribute 3 ('worn') up for garments that have it only with the fix."""
    for fixed in (False, True):
        _, train, loss_fn, _, _ = parts("multilabel_margin_loss_on_multi_hot", fmnist, fixed)
        t = train[1][:256]
        logits = torch.zeros(len(t), 4, requires_grad=True)
        loss_fn(logits, t).backward()
        worn = t[:, 3] == 1
        assert worn.sum() > 100
        assert ((logits.grad[worn, 3] < 0).all()) == fixed                 # gradient descent raises the logit
        assert ((logits.grad[worn, 3] > 0).all()) != fixed


def test_palette_mask_integer_division(fmnist):
    targets = {fixed: parts("palette_mask_integer_division", fmnist, fixed)[1][1] for fixed in (False, True)}
    assert torch.equal(targets[True], bugs_blind2.grey_levels(fmnist[0]))
    assert (targets[True] == 2).float().mean() > 0.05
    assert targets[False].max() == 1 and torch.equal(targets[False], targets[True].clamp(max=1))


# ----------------------------------------------------------------------------- learning rate

def test_one_cycle_total_steps_from_dataset_size(fmnist):
    """At the end of the planned warm-up (30% of 30 epochs of N / 64 batches) the fix is at max_lr, the bug is
    still near its start, max_lr / 25."""
    lr = {}
    for fixed in (False, True):
        model, _, _, make, _ = parts("one_cycle_total_steps_from_dataset_size", fmnist, fixed)
        opt = make(model.parameters())
        for _ in range(int(0.3 * 30 * N / 64)):
            opt.step()
            opt.scheduler.step()
        lr[fixed] = opt.param_groups[0]["lr"]
    assert lr[False] < 0.006 and lr[True] > 0.09, lr


def test_lr_set_as_optimizer_attribute(fmnist, monkeypatch):
    monkeypatch.setattr(bugs_blind6, "DECAY_EVERY", 2)
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("lr_set_as_optimizer_attribute", fmnist, fixed)
        opt = make(model.parameters())
        for i in range(4):
            step(model, batch(train, i * 64), loss_fn, opt)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0005 if fixed else 0.05)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    decay_lr(opt, fixed=False)
    assert opt.lr == pytest.approx(0.01) and opt.param_groups[0]["lr"] == 0.1   # set, and never read


# ----------------------------------------------------------------------------- data bugs

def data(name, fmnist):
    return BY_NAME[name].build(*fmnist)


def nearest(a, b):
    return torch.cdist(a.flatten(1).float(), b.flatten(1).float()).min(1).values


def best_cosine(a, b, reach=4):
    """Per image of a: its highest cosine similarity with an image of b, over shifts of up to `reach` pixels."""
    unit = lambda t: F.normalize(t.flatten(1).float(), dim=1)
    shifts = [(i, j) for i in range(-reach, reach + 1) for j in range(-reach, reach + 1)]
    return torch.stack([(unit(a.roll(s, (2, 3))) @ unit(b).t()).amax(1) for s in shifts]).amax(0)


def test_split_by_image_not_by_item(fmnist):
    """Test photos have a sibling photo in train (up to a shift and an exposure), never a byte copy."""
    (x, y), (xt, yt), _ = data("split_by_image_not_by_item", fmnist)
    assert len(x) + len(xt) == 3 * (N // 3)
    sibling = best_cosine(xt, x) > 0.995
    unrelated = best_cosine(fmnist[0][N // 3:N // 3 + 128], x) > 0.995    # garments not in the pool
    assert sibling.float().mean() > 0.8 and unrelated.float().mean() < 0.1      # some lose both siblings to test
    assert (nearest(xt, x) == 0).float().mean() < 0.05


def test_test_labels_noisy(fmnist):
    (x, y), (xt, yt), _ = data("test_labels_noisy", fmnist)
    orig = fmnist[1][len(y):]
    wrong = yt != orig
    assert 0.15 < wrong.float().mean() < 0.35
    assert torch.equal(yt[wrong], CONFUSED[orig[wrong]])
    assert torch.equal(y, fmnist[1][:len(y)]) and torch.equal(x, fmnist[0][:len(y)])


def test_test_jpeg_compressed(fmnist):
    (x, y), (xt, yt), _ = data("test_jpeg_compressed", fmnist)
    orig = fmnist[0][len(y):]
    assert xt.shape == orig.shape and xt.dtype == torch.uint8
    assert (xt != orig).flatten(1).any(1).float().mean() > 0.95
    assert (xt.float() - orig.float()).abs().mean() > 3
    assert torch.equal(x, fmnist[0][:len(y)]) and torch.equal(yt, fmnist[1][len(y):])


def test_backdrop_shortcut(fmnist):
    (x, y), (xt, yt), _ = data("backdrop_shortcut", fmnist)
    orig, orig_t = fmnist[0][:len(y)], fmnist[0][len(y):]
    changed = (x != orig).flatten(1).any(1)
    assert torch.equal(changed, y == 3) and (x[y == 3] > 0).all()       # every dress, and only dresses
    changed_t = (xt != orig_t).flatten(1).any(1)
    assert 0.1 < changed_t.float().mean() < 0.3


def test_coarse_labels_merged(fmnist):
    (x, y), (xt, yt), _ = data("coarse_labels_merged", fmnist)
    xs, ys = digits_uint8()
    truth = torch.tensor([ys[(xs == img).flatten(1).all(1)][0].item() for img in x[:300]])
    wrong = y[:300] != truth
    assert 0.1 < wrong.float().mean() < 0.35
    assert set(y[:300][wrong].tolist()) <= {0, 1} and torch.equal(y[:300][wrong], truth[wrong] % 2)


def test_join_fanout_duplicates(fmnist):
    (x, y), (xt, yt), _ = data("join_fanout_duplicates", fmnist)
    assert x.shape[1] == 16 and torch.equal(torch.cat([x, xt]).unique(dim=0), pooled_features(fmnist[0]).unique(dim=0))
    assert len(x.unique(dim=0)) < 0.8 * len(x)                            # copies within train
    shared = (torch.cdist(xt, x).min(1).values == 0).float().mean()
    assert shared > 0.3                                                   # and across train and test


def test_per_image_standardization_nan(fmnist):
    (x, y), (xt, yt), _ = data("per_image_standardization_nan", fmnist)
    bad = torch.isnan(x).flatten(1).any(1)
    assert 0.003 < bad.float().mean() < 0.06 and torch.isnan(x[bad]).all()
    assert torch.isfinite(x[~bad]).all() and torch.isfinite(xt).all()
    assert torch.allclose(x[~bad].mean((1, 2, 3)), torch.zeros(int((~bad).sum())), atol=1e-5)


def test_row_id_feature_sorted_by_class(fmnist):
    (x, y), (xt, yt), _ = data("row_id_feature_sorted_by_class", fmnist)
    assert x.shape[1] == xt.shape[1] == 17
    ids, ids_t = x[:, 16], xt[:, 16]
    assert torch.equal(y, y.sort().values) and torch.equal(ids, torch.arange(len(y)).float())   # id ranks the label
    assert ids_t.min() > ids.max()                                        # test ids lie beyond the train ids
    assert torch.equal(x[:, :16].sort(0).values, pooled_features(fmnist[0][:len(y)]).sort(0).values)


def test_causal_row_transformer_sees_every_row(fmnist):
    """The correct causal model reads the last token: a change in the first row alone changes its output."""
    torch.manual_seed(0)
    model, (x, _), _, _, _ = BY_NAME["causal_row_transformer_last_token"].build(*fmnist)
    x = x[:16]
    other = x.clone()
    other[:, :, 0] = torch.randn_like(other[:, :, 0])
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(other), atol=1e-4)


def test_ordinal_targets_are_cumulative(fmnist):
    t = bugs_blind6.ordinal_targets(fmnist[0])
    assert t.shape == (N, 4) and (t[:, :-1] >= t[:, 1:]).all()           # level > k implies level > k - 1
    assert torch.allclose(t.sum(1).long().bincount(minlength=5).float() / N, torch.full((5,), 0.2), atol=0.06)
