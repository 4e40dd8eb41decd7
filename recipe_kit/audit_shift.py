"""Train versus test beyond pixel statistics, and shortcuts: two audit_data checks by mechanism.

train_vs_test (adversarial validation): if a classifier can tell train images from test images, the
test set does not measure what the model will face; it finds shifts that per-split means and variances
miss (geometry, resolution, another source). shortcuts: a feature far simpler than the object (one
pixel, a border, an image statistic) that predicts the label in train much better than in test is a
watermark or a leak the model will learn instead of the object.
"""
import numpy as np
import torch
import torch.nn.functional as F

from .audit_similarity import STAGE1, test_neighbours, train_neighbours

SHIFT_SAMPLES = 2000        # per split, for the train-vs-test classifier
# AUC of telling train from test, 5-fold cross-validated. Clean Fashion-MNIST 2000/500 subsets: ~0.5;
# test transposed: ~0.95; test at half resolution: ~1.0.
SHIFT_ERROR, SHIFT_WARNING = 0.75, 0.62
# Out-of-distribution test samples: the share of test samples whose nearest train neighbour is farther than
# OOD_QUANTILE of train samples' own nearest (leave-one-out) neighbour, as a z-score against OOD_QUANTILE.
# Measured: 14 clean splits of 5 catalogs and full Fashion-MNIST -1.3..+4.1 (tinted 3x32x32, 250 test:
# 3.6%), the data bugs of all catalogs -2.2..+4.0 unless their test is transformed as a whole (rotated
# +16, sorted split +10, BGR +222); 15% upsampled digits in a Fashion-MNIST test set +12.6 (6.6%).
OOD_QUANTILE, OOD_WARNING_Z, OOD_ERROR_Z, OOD_MIN = 0.01, 6.0, 10.0, 5
SHORTCUT_SAMPLES = 4000     # per split, for the one-feature rules
BINS = 16
# the best one-feature rule (fitted on half of train, scored on the other half). Clean Fashion-MNIST:
# train 0.22-0.33, test within 0.05 of it; the label written into a pixel in train only: train 1.0,
# test 0.1. A shortcut is strong (SHORTCUT_STRENGTH of the way from chance to perfect) and does not
# carry over to test (SHORTCUT_GAP).
SHORTCUT_STRENGTH, SHORTCUT_GAP = 0.5, 0.2
# How strongly an image statistic separates the classes: eta^2 of its within-split ranks (the share of the
# rank variance that lies between class means; ranks within each split, so a statistic that shifts as a
# whole between splits - test darker, test downscaled - does not count, only one that separates the
# classes more in train). Measured train minus test: clean Fashion-MNIST (2000/500, 1500/500 of the first
# 2000, 4000/2000 chunks of the full 60k/10k) -0.08..0.08, digits -0.05..0.03; planted shortcuts: blur of
# 4 classes in train only 0.70 (maximum value, high-frequency share), exposure x0.6 of 3 classes 0.63
# (maximum value), a frame around 3 classes 0.54 (high-frequency share); other data bugs <= 0.20.
SEPARATION_GAP = 0.25
# Where the object sits (centre of mass) already separates Fashion-MNIST's classes strongly (0.55-0.57 in
# both splits), so a position shortcut saturates the rank eta^2: 2-3 classes framed 4 pixels off-centre in
# train only gap 0.19-0.29, the same with a random 20% shifted in test 0.33. Clean gaps on 5 Fashion-MNIST
# subsets (1500-4000 train / 500-2000 test): -0.02..0.04, hence a lower gap for the two position statistics.
POSITION_GAP = 0.15
POSITION_STATISTICS = ("vertical position (centre of mass)", "horizontal position (centre of mass)")
MIN_PER_CLASS = 10          # a class counts in the separation only with this many samples in both splits
# The gap must also stand out from sampling noise: NULL_Z standard deviations of the gaps that NULL_SPLITS
# random re-splits of the pooled samples (same sizes) give. 2000/500 Fashion-MNIST: sd 0.01-0.02, so the
# limits above decide; 530/133 (8 classes, ~17 test samples each): sd ~0.05, and a clean gap of 0.16 in
# horizontal position is noise.
NULL_SPLITS, NULL_Z = 40, 4.0


def feature_names(x):
    return [f"feature {k}" for k in range(x.shape[1])]


def describe(x):
    """(N, F) features of images (N, C, H, W): 7x7 thumbnails and image statistics, named."""
    x = x.float()
    x = (x - x.mean()) / (x.std() + 1e-8)
    thumb = F.adaptive_avg_pool2d(x, 7).flatten(1)                          # (N, C*49): layout, content
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))            # sharpness along the width
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))            # and along the height
    flat = x.flatten(1)
    stats = torch.stack([flat.mean(1), flat.std(1), dx, dy, flat.amax(1), flat.amin(1)], 1)
    names = ["brightness", "contrast", "sharpness along the width", "sharpness along the height",
             "maximum value", "minimum value"]
    return thumb, stats, names


def shortcut_statistics(x):
    """(N, F) image statistics a source, a camera or a pipeline can tie to the label, and their names."""
    _, stats, names = describe(x)
    x = (x.float() - x.float().mean()) / (x.float().std() + 1e-8)
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    grad = stats[:, 2] + stats[:, 3]
    high = lap.abs().mean((1, 2, 3)) / (grad + 1e-3)                # high frequencies per edge: blur, resolution
    b = min(2, x.shape[-1] // 4, x.shape[-2] // 4)
    frame = torch.ones(x.shape[-2:], dtype=torch.bool)
    frame[b:x.shape[-2] - b, b:x.shape[-1] - b] = False
    border = x[..., frame].mean((1, 2)) if b else torch.zeros(len(x))   # a frame, a background, a vignette
    return torch.cat([stats, high[:, None], border[:, None], centre_of_mass(x)], 1), names + [
        "high-frequency share (Laplacian over gradient)", "border brightness",
        "vertical position (centre of mass)", "horizontal position (centre of mass)"]


def centre_of_mass(x):
    """(N, 2) where the object sits: the row and column of the brightness centre of mass (brightness above the
    image's darkest value, channels summed), as a share of the height and width. A station or camera that
    frames some classes off-centre ties position to the label (3-pixel shift of 2 classes in train only:
    column separation 0.73 in train, 0.40 in test; clean Fashion-MNIST gaps -0.02..0.04)."""
    w = x.float().sum(1)
    w = w - w.amin((1, 2), keepdim=True)
    total = w.sum((1, 2)).clamp_min(1e-8)
    H, W = w.shape[-2:]
    rows = (w.sum(2) * torch.arange(H, dtype=w.dtype)).sum(1) / total / H
    cols = (w.sum(1) * torch.arange(W, dtype=w.dtype)).sum(1) / total / W
    return torch.stack([rows, cols], 1)


def rank_separation(values, y, classes):
    """eta^2 of the ranks of each column of values (N, F) by label y, over the given classes: (F,)."""
    r = values.argsort(0).argsort(0).double()
    r = r - r.mean(0)
    between = sum((y == c).sum() * r[y == c].mean(0) ** 2 for c in classes)
    return between / r.pow(2).sum(0).clamp_min(1e-12)


def auc(scores, labels):
    """Area under the ROC curve (Mann-Whitney U): the chance a random positive outscores a random negative."""
    scores, labels = torch.as_tensor(scores).double(), torch.as_tensor(labels).bool()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    for v in scores[order].unique_consecutive()[scores[order].unique_consecutive(return_counts=True)[1] > 1]:
        ranks[scores == v] = ranks[scores == v].mean()                          # ties share their rank
    pos, neg = int(labels.sum()), int((~labels).sum())
    return ((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg)).item()


def cross_validated_scores(feats, target, folds=5, l2=1e-2):
    """Out-of-fold scores of an L2-regularized logistic regression (LBFGS), fold by fold."""
    n = len(target)
    fold = torch.arange(n) % folds
    scores = torch.empty(n, dtype=feats.dtype)
    for k in range(folds):
        train = fold != k
        w = torch.zeros(feats.shape[1] + 1, dtype=feats.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")
        X, t = feats[train], target[train]

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(X @ w[:-1] + w[-1], t) + l2 * w[:-1].pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            scores[~train] = feats[~train] @ w[:-1] + w[-1]
    return scores


def check_train_vs_test(d, report):
    """Adversarial validation: a logistic regression trained to tell train from test samples."""
    xtr, xte = d["train"]["x"], d["test"]["x"]
    if xtr.ndim not in (2, 4):
        return "needs images (N, C, H, W) or feature vectors (N, D)"
    far_from_train(d, report)
    n = min(len(xtr), len(xte), SHIFT_SAMPLES)
    if n < 50:
        return f"needs 50 samples per split, got {n}"
    rng = np.random.default_rng(d["seed"] + 2)
    a, b = rng.choice(len(xtr), n, replace=False), rng.choice(len(xte), n, replace=False)
    both = torch.cat([xtr[torch.from_numpy(a)], xte[torch.from_numpy(b)]]).float()
    thumb, stats, names = describe(both) if both.ndim == 4 else (both[:, :0], both, feature_names(both))
    feats = torch.cat([thumb, stats], 1).double()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    if both.ndim == 2:                  # squares too: a linear classifier sees a spread that differs, not only a mean
        feats = torch.cat([feats, feats ** 2 - 1], 1)
    is_test = torch.cat([torch.zeros(n), torch.ones(n)]).double()
    score = auc(cross_validated_scores(feats, is_test), is_test)
    report.details["train_vs_test"] = {"auc": score, "samples_per_split": n}
    severity = "error" if score >= SHIFT_ERROR else "warning" if score >= SHIFT_WARNING else None
    if not severity:
        return None
    single = [(abs(auc(stats[:, k], is_test) - 0.5), k) for k in range(stats.shape[1])]
    if both.ndim == 2:                  # and each column's spread: |z| for a value filled in, clipped, rescaled
        z = (stats - stats.mean(0)) / (stats.std(0) + 1e-8)
        single += [(abs(auc(z[:, k].abs(), is_test) - 0.5), k) for k in range(stats.shape[1])]
    gap, k = max(single)
    if gap >= 0.2:
        ratio = stats[n:, k].mean().item(), stats[:n, k].mean().item()
        spread = stats[n:, k].std().item(), stats[:n, k].std().item()
        cause = (f"{names[k]} alone tells them apart (AUC {gap + 0.5:.2f}; mean {ratio[0]:.3g} in test vs "
                 f"{ratio[1]:.3g} in train" + (f", std {spread[0]:.3g} vs {spread[1]:.3g}" if both.ndim == 2 else "") + (", standardized): another resolution, blur, exposure or encoding"
                                               if both.ndim == 4 else "): a feature computed another way in test "
                                               "(an encoding fitted on train rows, a unit, a default value)"))
    elif both.ndim == 2:
        cause = "no single feature does, their joint distribution does: another source, or features built another way"
    else:
        cause = ("no single statistic does, the image content and layout do (7x7 thumbnails): other geometry "
                 "(rotated, transposed, cropped) or another source")
    report.add("train_vs_test", severity, f"a classifier tells test samples from train samples with AUC {score:.2f} "
               f"(0.5 = indistinguishable, {n} per split, cross-validated); {cause}.",
               f"Test accuracy will not predict accuracy on train-like data. {STAGE1}: "
               + ("plot train and test images side by side" if both.ndim == 4 else
                  "compare each feature's histogram in train and test") + ", and build both splits with one pipeline.")


def far_from_train(d, report):
    """Test samples unlike anything in train: nearer no train sample than almost every train sample is to
    its own nearest neighbour. A shift of the whole test set is the classifier's job; a share of foreign
    samples mixed into test (another source, another class, corrupt files) shows here."""
    if len(d["train"]["y"]) < 10 / OOD_QUANTILE:
        return
    _, train_sims, _ = train_neighbours(d)
    test_sims = test_neighbours(d)[0][:, 0]
    edge = torch.quantile(train_sims[:, 0].double(), OOD_QUANTILE).item()
    far = torch.nonzero(test_sims < edge).flatten()
    share, n = len(far) / len(test_sims), len(test_sims)
    z = (share - OOD_QUANTILE) / np.sqrt(OOD_QUANTILE * (1 - OOD_QUANTILE) / n)
    report.details["train_vs_test_far"] = {"share": share, "z": float(z), "indices": far.tolist()[:100]}
    severity = "error" if z >= OOD_ERROR_Z else "warning" if z >= OOD_WARNING_Z else None
    if severity and len(far) >= OOD_MIN:
        remote = far[test_sims[far].argsort()][:5].tolist()
        report.add("train_vs_test", severity, f"{len(far)} of {n} test samples ({share:.1%}) are farther from every "
                   f"train sample than {1 - OOD_QUANTILE:.0%} of train samples are from their nearest neighbour "
                   f"({OOD_QUANTILE:.0%} expected): test holds samples unlike anything in train - another source, "
                   f"objects of no class, corrupt files. Most remote: {remote}.",
                   f"Look at them; drop them or label them as what they are. {STAGE1}.", where=f"test {remote}")


def check_shortcuts(d, report):
    """One pixel or one image statistic that predicts the label in train far better than in test."""
    tr, te = d["train"], d["test"]
    if tr["x"].ndim not in (2, 4):
        return "needs images (N, C, H, W) or feature vectors (N, D)"
    C = d["num_classes"]
    rng = np.random.default_rng(d["seed"] + 3)
    pick = lambda s: torch.from_numpy(np.sort(rng.choice(len(s["y"]), min(len(s["y"]), SHORTCUT_SAMPLES), replace=False)))
    a, b = pick(tr), pick(te)
    # the halves below by chance, not by file order (a train file sorted by class would split by class)
    a = a[torch.from_numpy(np.random.default_rng(d["seed"] + 4).permutation(len(a)))]
    if len(a) < 40 * C or len(b) < 10 * C:
        return f"needs {40 * C} train and {10 * C} test samples"
    images = torch.cat([tr["x"][a], te["x"][b]])
    if images.ndim == 4:
        _, stats, names = describe(images)
        pixel_names = [f"pixel {tuple(int(i) for i in np.unravel_index(k, tr['x'].shape[1:]))}"
                       for k in range(images[0].numel())]
    else:                                    # feature vectors: the columns are the candidates
        stats, names, pixel_names = images[:, :0].float(), [], feature_names(images)
    y, yt = tr["y"][a], te["y"][b]
    half = len(y) // 2                       # rules fitted on one half of train, judged on the other
    best = None
    for values, labels in ((images.flatten(1).float(), pixel_names), (stats, names))[:2 if names else 1]:
        bins = quantile_bins(values, half)
        rule = one_feature_rules(bins[:half], y[:half], C)                      # (F, BINS)
        acc = lambda rows, target: (rule.gather(1, bins[rows].T) == target).float().mean(1)   # (F,)
        acc_tr, acc_te = acc(slice(half, len(y)), y[half:]), acc(slice(len(y), None), yt)
        k = int(acc_tr.argmax())
        if best is None or acc_tr[k] > best[0]:
            best = (acc_tr[k].item(), acc_te[k].item(), labels[k])
    acc_tr, acc_te, name = best
    chance = torch.bincount(y, minlength=C).max().item() / len(y)
    se = np.sqrt(max(acc_te * (1 - acc_te), 0.01) / len(yt))
    report.details["shortcuts"] = {"feature": name, "train_accuracy": acc_tr, "test_accuracy": acc_te}
    if images.ndim == 4:
        check_statistic_shortcut(images[:len(y)], y, images[len(y):], yt, d["classes"], report, d["seed"])
    strong = acc_tr >= chance + SHORTCUT_STRENGTH * (1 - chance)    # as good as a model of the object
    if strong and acc_tr - acc_te > SHORTCUT_GAP and acc_tr - acc_te > 4 * se:
        report.add("shortcuts", "error", f"{name} alone predicts the train label {acc_tr:.0%} of the time (held-out "
                   f"train samples) but the test label only {acc_te:.0%}: a shortcut (a watermark, a stamp, a "
                   "border, a file-name leak) that a model learns instead of the object, and test data lacks.",
                   f"Look at that feature across classes in train; remove it (crop, blank) or fix how the split was "
                   f"made. {STAGE1}.", where=name)


def check_statistic_shortcut(x, y, xt, yt, class_names, report, seed=0):
    """An image statistic (sharpness, exposure, contrast, border) that separates the classes in train far more
    than in test: the source of the images, not the object, predicts the label in train."""
    classes = [c for c in range(len(class_names)) if (y == c).sum() >= MIN_PER_CLASS and (yt == c).sum() >= MIN_PER_CLASS]
    if len(classes) < 2 or min(x.shape[-2:]) < 3:
        return
    keep, keep_t = torch.isin(y, torch.tensor(classes)), torch.isin(yt, torch.tensor(classes))
    stats, names = shortcut_statistics(torch.cat([x[keep], xt[keep_t]]))
    n = int(keep.sum())
    sep_tr, sep_te = rank_separation(stats[:n], y[keep], classes), rank_separation(stats[n:], yt[keep_t], classes)
    limit = torch.tensor([POSITION_GAP if name in POSITION_STATISTICS else SEPARATION_GAP for name in names],
                         dtype=sep_tr.dtype)
    k = int((sep_tr - sep_te - limit).argmax())       # the statistic furthest beyond its clean limit
    gap = (sep_tr - sep_te)[k].item()
    report.details["shortcuts"] |= {
        "statistic": names[k], "separation_train": sep_tr[k].item(), "separation_test": sep_te[k].item()}
    if gap < limit[k].item():
        return
    noise = resplit_gaps(stats[:, k], torch.cat([y[keep], yt[keep_t]]), n, classes, seed).std().item()
    report.details["shortcuts"]["resplit_sd"] = noise
    if gap < NULL_Z * noise:
        return                                        # within what random splits of these samples give
    pct = lambda v, labels, c: (v.argsort().argsort()[labels == c].double().mean() / max(len(v) - 1, 1)).item()
    shift = [(abs(pct(stats[:n, k], y[keep], c) - pct(stats[n:, k], yt[keep_t], c)), c) for c in classes]
    _, c = max(shift)
    report.add("shortcuts", "error", f"{names[k]} separates the classes far more in train than in test (share of "
               f"its rank variance between classes: {sep_tr[k]:.2f} in train, {sep_te[k]:.2f} in test; clean data "
               f"differs by < 0.1); class {class_names[c]!r} sits at the {pct(stats[:n, k], y[keep], c):.0%} percentile in "
               f"train but the {pct(stats[n:, k], yt[keep_t], c):.0%} in test: the train images' source (resolution, "
               "exposure, framing) tells the label, and a model can learn it instead of the object.",
               f"Compare that statistic per class in train and test; make every source cover every class, or "
               f"normalize it away. {STAGE1}.", where=names[k])


def resplit_gaps(values, labels, n, classes, seed):
    """Train-minus-test rank separation of one statistic over NULL_SPLITS random re-splits of the pooled
    samples into the same sizes: how large a gap sampling alone makes with this many samples per class."""
    g = torch.Generator().manual_seed(seed + 11)
    gaps = []
    for _ in range(NULL_SPLITS):
        order = torch.randperm(len(labels), generator=g)
        a, b = order[:n], order[n:]
        gaps.append((rank_separation(values[a, None], labels[a], classes) -
                     rank_separation(values[b, None], labels[b], classes)).item())
    return torch.tensor(gaps)


def quantile_bins(values, n_fit):
    """(N, F) values -> (N, F) bin indices 0..BINS-1, bin edges from the first n_fit rows' quantiles."""
    edges = torch.quantile(values[:n_fit], torch.linspace(0, 1, BINS + 1)[1:-1], dim=0)   # (BINS-1, F)
    return torch.searchsorted(edges.T.contiguous(), values.T.contiguous(), right=True).T  # (N, F)


def one_feature_rules(bins, y, C):
    """For each feature, the rule bin -> the majority class of the samples in that bin: (F, BINS)."""
    N, Fn = bins.shape
    idx = (torch.arange(Fn) * BINS * C).unsqueeze(0) + bins * C + y.unsqueeze(1)     # (N, F)
    counts = torch.zeros(Fn * BINS * C).index_add_(0, idx.flatten(), torch.ones(idx.numel()))
    return counts.view(Fn, BINS, C).argmax(2)
