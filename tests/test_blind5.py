"""The fifth blind catalog (recipe_kit/bugs_blind5.py) has the bugs it says it has.

Each pipeline bug is compared with its corrected twin (bugs_blind5.CORRECTED) on the property the bug
breaks; each data bug is checked for the defect it plants; each correct pipeline trains. None of these tests
runs preflight or audit_data: the catalog is scored once, by benchmarks/checks_blind5.py, not here.
"""
import pytest
import torch
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit import bugs, bugs_blind, bugs_blind2, bugs_blind3, bugs_blind4, bugs_heldout, correct_pipelines
from recipe_kit.audit import CHECKS as AUDIT_CHECKS
from recipe_kit.preflight import CHECKS as PREFLIGHT_CHECKS
from recipe_kit.bugs_blind2 import digits_uint8
from recipe_kit.bugs_blind5 import (BLIND5, BY_NAME, CORRECT_BLIND5, CORRECTED, NOT_A_CHECK, clean_splits5,
                                    pooled_features)

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


def inputs_seen(model, module, step, train, loss_fn, i=0):
    """The tensor `module` receives during one train step."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    step(model, batch(train, i), loss_fn, frozen(model))
    handle.remove()
    return seen[0]


# ----------------------------------------------------------------------------- the catalog's shape

def test_catalog_is_new_cited_and_declares_its_checks():
    old = ({b.name for b in bugs.CATALOG} | {b.name for b in bugs_heldout.HELD_OUT}
           | {b.name for b in bugs_blind.BLIND} | {b.name for b in bugs_blind2.BLIND2}
           | {b.name for b in bugs_blind3.BLIND3} | {b.name for b in bugs_blind4.BLIND4})
    assert not old & {b.name for b in BLIND5}
    assert not ({p.name for p in correct_pipelines.CORRECT} | {p.name for p in bugs_blind.CORRECT_BLIND}
                | {p.name for p in bugs_blind2.CORRECT_BLIND2} | {p.name for p in bugs_blind3.CORRECT_BLIND3}
                | {p.name for p in bugs_blind4.CORRECT_BLIND4}) & {p.name for p in CORRECT_BLIND5}
    assert len({b.name for b in BLIND5}) == len(BLIND5) >= 20 and len(CORRECT_BLIND5) >= 9
    known = set(PREFLIGHT_CHECKS) | set(AUDIT_CHECKS)
    assert not NOT_A_CHECK & known
    assert NOT_A_CHECK <= {c for b in BLIND5 for c in b.checks}       # every undiagnosable cause is used
    for b in BLIND5:
        assert b.source and b.description and b.checks, b.name
        assert b.kind in ("pipeline", "data")
        assert b.checks <= known | NOT_A_CHECK, (b.name, b.checks - known - NOT_A_CHECK)
        assert b.kind == "data" or b.checks <= set(PREFLIGHT_CHECKS) | NOT_A_CHECK, b.name
        assert b.kind == "pipeline" or b.checks <= set(AUDIT_CHECKS), b.name
        assert (b.kind == "pipeline") == (b.name in CORRECTED)
    assert sum(b.kind == "data" for b in BLIND5) >= 7 and sum(b.kind == "pipeline" for b in BLIND5) >= 13


@pytest.mark.parametrize("pipeline", CORRECT_BLIND5, ids=[p.name for p in CORRECT_BLIND5])
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


PIPELINE_BUGS = [b.name for b in BLIND5 if b.kind == "pipeline"]


def loader_or_tensors(train, i):
    return next(iter(train)) if isinstance(train, torch.utils.data.DataLoader) else batch(train, i * 64)


@pytest.mark.parametrize("name", PIPELINE_BUGS)
def test_bug_and_fix_both_run(name, fmnist):
    """Silent: the planted bug and its fix both train without an exception and with finite losses."""
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts(name, fmnist, fixed)
        opt = make(model.parameters())
        for i in range(3):
            model.train()
            loss = step(model, loader_or_tensors(train, i), loss_fn, opt)
            assert torch.isfinite(torch.tensor(loss)), (name, fixed)


def test_clean_splits(fmnist):
    test = rk.load_dataset("fashion-mnist", "test")
    splits = clean_splits5(*fmnist, test.images[:N // 2], test.labels[:N // 2])
    assert len(splits) >= 3
    for name, (x, y), (xt, yt), classes in splits:
        assert len(x) == len(y) and len(xt) == len(yt)
        assert set(yt.tolist()) == set(y.tolist()) == set(range(classes)), name
        assert x.dtype == xt.dtype and x.shape[1:] == xt.shape[1:], name
    assert any(x.ndim == 2 for _, (x, _), _, _ in splits)                  # a tabular (N, D) split


# ----------------------------------------------------------------------------- what the model sees

def test_vit_causal_mask_from_gpt(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("vit_causal_mask_from_gpt", fmnist, fixed)
        model.eval()
        with torch.no_grad():
            a, b = model(batch(train, 0)[0]), model(batch(train, 64)[0])
        assert torch.allclose(a, b, atol=1e-5) != fixed               # the class token never sees a patch


def test_gru_hidden_state_carried_over(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("gru_hidden_state_carried_over", fmnist, fixed)
        x = batch(train)[0]
        model.eval()
        with torch.no_grad():
            first, second = model(x), model(x)
        assert torch.allclose(first, second, atol=1e-6) == fixed       # the same images, another answer


def test_color_jitter_after_normalize(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("color_jitter_after_normalize", fmnist, fixed)
        x = inputs_seen(model, model[0], step, train, loss_fn)
        assert (x.min() >= 0 and x.max() <= 1) != fixed                # clamped to [0, 1] with the bug
        if fixed:
            assert x.min() < -0.5 and x.max() > 1.5                    # still standardized


def test_random_resized_crop_imagenet_scale(fmnist):
    """Images whose pixels hold their own row number: after the step's crop, the rows a crop spans tell its
    height (bilinear resizing keeps a linear ramp linear). Scale 0.08 allows crops a quarter of the height."""
    rows = torch.arange(28.0).view(1, 1, 28, 1).expand(64, 1, 28, 28).contiguous()
    shortest = {}
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("random_resized_crop_imagenet_scale", fmnist, fixed)
        spans = []
        for i in range(4):
            x = inputs_seen(model, model[0], step, (rows, batch(train, i * 64)[1]), loss_fn)
            spans.append((x.amax((1, 2, 3)) - x.amin((1, 2, 3))) / 27)
        shortest[fixed] = torch.cat(spans).min().item()
    assert shortest[False] < 0.5 < 0.65 < shortest[True], shortest


def test_mask_flipped_on_other_axis(fmnist):
    """Whenever the step flips, the mask it trains on is the mask of the flipped image only with the fix."""
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("mask_flipped_on_other_axis", fmnist, fixed)
        seen = []
        loss_fn = (lambda f: lambda out, m: (seen.append(m), f(out, m))[1])(loss_fn)
        xs = []
        handle = model.register_forward_pre_hook(lambda mod, args: xs.append(args[0]))
        for i in range(8):
            step(model, batch(train, i * 64), loss_fn, frozen(model))
        handle.remove()
        flipped = [not torch.equal(x, batch(train, i * 64)[0]) for i, x in enumerate(xs)]
        assert 0 < sum(flipped) < 8
        fits = [torch.equal(m, bugs_blind2.grey_levels((x * bugs.STD + bugs.MEAN).mul(255).round().clamp(0, 255)
                                                          .to(torch.uint8))) for x, m in zip(xs, seen)]
        assert all(fits) == fixed and all(f for f, flip in zip(fits, flipped) if not flip)


def test_batches_shuffled_not_samples(fmnist):
    for fixed in (False, True):
        _, loader, _, _, _ = parts("batches_shuffled_not_samples", fmnist, fixed)
        classes = [len(set(y.tolist())) for _, y in loader]
        assert len(classes) == N // 64
        if fixed:
            assert min(classes) >= 6
        else:                                                            # one class per batch, two at a seam
            assert max(classes) <= 3 and sum(classes) / len(classes) <= 2.5, classes


# ----------------------------------------------------------------------------- what is trained

def test_vit_pos_embed_never_added(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, _, _ = parts("vit_pos_embed_never_added", fmnist, fixed)
        loss_fn(model(batch(train)[0]), batch(train)[1]).backward()
        assert (model.pos.grad is not None and model.pos.grad.abs().sum() > 0) == fixed


def test_head_built_on_first_call(fmnist):
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("head_built_on_first_call", fmnist, fixed)
        opt = make(model.parameters())                                   # as a training script does: first
        for i in range(3):
            step(model, batch(train, i * 64), loss_fn, opt)
        optimized = {id(p) for g in opt.param_groups for p in g["params"]}
        assert all(id(p) in optimized for p in model.head.parameters()) == fixed


def test_ema_written_into_model(fmnist):
    """After the step that creates the average, each step keeps 0.1% of its update with the bug."""
    moved = {}
    for fixed in (False, True):
        model, train, loss_fn, make, step = parts("ema_written_into_model", fmnist, fixed)
        opt = make(model.parameters())
        step(model, batch(train), loss_fn, opt)
        before = snapshot(model)
        for i in range(1, 6):
            step(model, batch(train, i * 64), loss_fn, opt)
        moved[fixed] = sum((p - q).norm() for p, q in zip(model.parameters(), before)).item()
    assert 0 < moved[False] < 0.01 * moved[True], moved


def test_shallow_copied_blocks(fmnist):
    for fixed in (False, True):
        model = parts("shallow_copied_blocks", fmnist, fixed)[0]
        fcs = [block.fc for block in model.blocks]
        assert (fcs[0] is fcs[3]) != fixed
        n = sum(p.numel() for p in model.parameters())
        assert n == 784 * 64 + 64 + 64 * 10 + 10 + (1 if not fixed else 4) * (64 * 64 + 64)


def test_activation_result_discarded(fmnist):
    for fixed in (False, True):
        model, train, _, _, _ = parts("activation_result_discarded", fmnist, fixed)
        x1, x2 = batch(train, 0)[0], batch(train, 64)[0]
        with torch.no_grad():
            mixed, parts_ = model(0.3 * x1 + 0.7 * x2), 0.3 * model(x1) + 0.7 * model(x2)
        assert torch.allclose(mixed, parts_, atol=1e-4) != fixed        # one affine map with the bug


# ----------------------------------------------------------------------------- normalization and initialization

def test_bn_per_sample_microbatches(fmnist):
    """In the bug's step, BatchNorm sees one image at a time: each image's channels come out with mean 0."""
    for fixed in (False, True):
        model, train, loss_fn, _, step = parts("bn_per_sample_microbatches", fmnist, fixed)
        out = []
        handle = model[1].register_forward_hook(lambda m, args, o: out.append(o.detach()))
        step(model, batch(train, 0, 16), loss_fn, frozen(model))
        handle.remove()
        means = torch.cat(out).mean((2, 3))                              # (16 images, 16 channels)
        assert (means.abs().max() < 1e-4) != fixed, means.abs().max()


def test_adam_l2_tuned_for_adamw(fmnist):
    """With no gradient from the data, AdamW shrinks weights by lr * wd; Adam's L2 term moves each by ~lr."""
    change = {}
    for fixed in (False, True):
        model, train, _, make, step = parts("adam_l2_tuned_for_adamw", fmnist, fixed)
        before, opt = snapshot(model), make(model.parameters())
        step(model, batch(train), lambda out, y: 0 * out.sum(), opt)
        w, w0 = model[1].weight, before[0]
        change[fixed] = ((w - w0).abs().mean() / w0.abs().mean()).item()
    assert change[False] > 10 * change[True], change


# ----------------------------------------------------------------------------- what the loss counts

def test_cosine_classifier_without_scale(fmnist):
    for fixed in (False, True):
        model, (x, y), loss_fn, _, _ = parts("cosine_classifier_without_scale", fmnist, fixed)
        with torch.no_grad():
            out = model(x[:256])
        assert (out.abs().max() <= 1 + 1e-6) != fixed
    floor = F.cross_entropy(torch.where(F.one_hot(y[:256], 10).bool(), 1.0, -1.0), y[:256])
    assert floor > 0.75                                                  # the best loss logits in [-1, 1] reach


def test_prior_bias_init_wrong_sign(fmnist):
    for fixed in (False, True):
        model, (x, t), _, _, _ = parts("prior_bias_init_wrong_sign", fmnist, fixed)
        with torch.no_grad():
            p = torch.sigmoid(model(x)).mean()
        assert 0.05 < t.mean() < 0.2
        assert (p > 0.7) != fixed and (p < 0.3) == fixed, p


def test_balanced_sampler_and_pos_weight(fmnist):
    for fixed in (False, True):
        _, loader, loss_fn, _, _ = parts("balanced_sampler_and_pos_weight", fmnist, fixed)
        t = torch.cat([y for _, y in loader])
        assert 0.35 < t.mean() < 0.65                                    # the sampler balances the batches
        logits = torch.zeros(len(t), requires_grad=True)
        loss_fn(logits, t).backward()
        push = -logits.grad.sum() / logits.grad.abs().sum()              # toward "positive", at p = 0.5
        assert abs(push) < 0.3 if fixed else push > 0.5, push           # pos_weight 9 on balanced batches


# ----------------------------------------------------------------------------- learning rate

def test_warmup_without_cap(fmnist):
    for fixed in (False, True):
        model, _, _, make, _ = parts("warmup_without_cap", fmnist, fixed)
        opt = make(model.parameters())
        for _ in range(199):
            opt.step()
            opt.scheduler.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05 if fixed else 0.2)


# ----------------------------------------------------------------------------- data bugs

def data(name, fmnist):
    return BY_NAME[name].build(*fmnist)


def test_smote_before_split(fmnist):
    """Test 3s are blends of train 3s: much closer to a train image than test digits of other classes are."""
    (x, y), (xt, yt), _ = data("smote_before_split", fmnist)
    assert 0.05 < (y == 3).float().mean() < 0.15 and (yt == 3).sum() >= 20
    nearest = torch.cdist(xt.flatten(1).float(), x.flatten(1).float()).min(1).values
    assert nearest[yt == 3].median() < 0.5 * nearest[yt != 3].median()


def test_faint_images_labelled_bag(fmnist):
    (x, y), (xt, yt), _ = data("faint_images_labelled_bag", fmnist)
    true = fmnist[1][:len(y)]
    changed = y != true
    assert (y[changed] == 8).all() and 0.1 < changed.float().mean() < 0.25
    ink_sum = x.flatten(1).float().sum(1)
    assert ink_sum[changed].max() <= ink_sum.quantile(0.2)               # only faint images are relabelled
    assert torch.equal(x, fmnist[0][:len(y)]) and torch.equal(yt, fmnist[1][len(y):])


def test_svhn_zero_as_ten(fmnist):
    (x, y), (xt, yt), classes = data("svhn_zero_as_ten", fmnist)
    assert classes is None
    assert 10 in y.tolist() and 0 not in y.tolist() and 0 in yt.tolist() and 10 not in yt.tolist()
    assert len(y) + len(yt) == len(digits_uint8()[1])


def test_ood_images_in_test(fmnist):
    (x, y), (xt, yt), _ = data("ood_images_in_test", fmnist)
    orig = fmnist[0][len(y):]
    replaced = (xt != orig).flatten(1).any(1)
    assert 0.08 < replaced.float().mean() < 0.25
    assert torch.equal(x, fmnist[0][:len(y)]) and torch.equal(yt, fmnist[1][len(y):])


def test_truncated_downloads(fmnist):
    (x, y), (xt, yt), _ = data("truncated_downloads", fmnist)
    orig = fmnist[0][:len(y)]
    cut = (x != orig).flatten(1).any(1)
    assert 0.03 < cut.float().mean() < 0.15
    assert (x[cut][:, :, -12:] == 0).all() and torch.equal(x[cut][:, :, :-12], orig[cut][:, :, :-12])
    assert torch.equal(xt, fmnist[0][len(y):])


def test_sneakers_mirrored_in_train(fmnist):
    (x, y), (xt, yt), _ = data("sneakers_mirrored_in_train", fmnist)
    cols = torch.arange(28).float()
    centre = lambda t: (t.float().sum((1, 2)) * cols).sum(1) / t.float().sum((1, 2, 3))   # ink's mean column
    shoe_ids = (5, 7, 9)
    sneaker, other = centre(x[y == 7]).mean(), centre(x[(y == 5) | (y == 9)]).mean()
    original = centre(fmnist[0][:len(y)][y == 7]).mean()
    assert (sneaker - 13.5) * (original - 13.5) < 0                      # mirrored: the heavy side swapped
    assert (sneaker - 13.5) * (other - 13.5) < 0                         # orientation tells sneakers apart
    shoes = sum(yt == k for k in shoe_ids).bool()
    flipped = (xt != fmnist[0][len(y):]).flatten(1).any(1)
    assert not flipped[~shoes].any() and 0.3 < flipped[shoes].float().mean() < 0.7


def test_target_encoding_in_sample(fmnist):
    (x, y), (xt, yt), _ = data("target_encoding_in_sample", fmnist)
    assert x.shape == (len(y), 26) and xt.shape == (len(yt), 26) and x.dtype == torch.float32
    assert torch.equal(x[:, :16], pooled_features(fmnist[0][:len(y)]))
    own = lambda t, labels: t[:, 16:].gather(1, labels[:, None]).mean()   # the encoded share of the true class
    assert own(x, y) > 0.3 and own(xt, yt) < 0.15                         # it gives the label away in train only
    assert (x[:, 16:].argmax(1) == y).float().mean() > 0.4
    assert (xt[:, 16:] == xt[0, 16:]).all()                               # in test: one prior for all
