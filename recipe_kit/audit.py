"""Stage 1 of the recipe, "become one with the data", as a checklist: audit_data(train, test).

    report = audit_data(train, test)      # Images, (X, y) tensors/arrays, or a Dataset of (x, y)
    report                                # a checklist in Jupyter; print(report) in a terminal
    report.details["label_issues"]        # ranked suspects to look at, for the notebooks

Why: a duplicated train set, test images leaked from train, labels shuffled by a bad join or a test
set normalized differently all train "fine" and cap accuracy silently. Each check below measures one
such bug and says it in numbers. Thresholds were calibrated on the real Fashion-MNIST (train 60k,
test 10k), which must pass with no errors; the clean rates measured there are quoted next to them.
"""
import math
import warnings

import numpy as np
import torch

from .audit_similarity import (FAST_QUERIES, STAGE1, best_permutation, check_duplicates, check_leakage,
                               check_near_duplicates, check_near_leakage, features, knn_probabilities,
                               nearest, pct, test_neighbours, train_neighbours)
from .audit_shift import check_shortcuts, check_train_vs_test
from .checks import run_check
from .data import Images
from .report import Report
from .rng import preserved_rng

# check name -> what it looks for. Order = order of the report.
CHECKS = {
    "corrupted": "NaN/inf values and constant (blank) samples",
    "value_range": "min/max/mean/std per split, and a preprocessing mismatch between splits",
    "class_balance": "missing or rare classes, and a train/test class-distribution mismatch",
    "duplicates": "byte-identical samples within a split, especially with different labels",
    "near_duplicates": "near-identical train samples (shifted, re-encoded, noised copies)",
    "leakage": "test samples byte-identical to train samples",
    "near_leakage": "test samples that are shifted/re-encoded/noised copies of train samples",
    "label_signal": "whether labels agree with the images at all (k-NN accuracy vs chance)",
    "label_issues": "likely mislabeled samples, ranked (cleanlab on out-of-sample k-NN probabilities)",
    "label_map": "whether test labels mean the same classes as train labels",
    "train_vs_test": "a classifier that tells test from train samples (adversarial validation): other geometry, "
                     "resolution or source",
    "shortcuts": "one pixel or image statistic predicting the label in train far better than in test",
}
EXPENSIVE = ("near_duplicates", "near_leakage", "label_issues")   # skipped by budget="fast"
NEEDS_TEST = ("leakage", "near_leakage", "label_map", "train_vs_test", "shortcuts")
# label_issues severity. cleanlab's flagged share grows as the k-NN model gets weaker (clean
# Fashion-MNIST: 5.8% of 60k train, 6.3% of 10k test, 10-12% of a 2000 subset, ~20% of 200 samples;
# clean 8x8 digits 1.3-1.6%), so it fires on every real dataset and judges nothing: the flagged samples
# are a note to look at. Warnings and errors use the "consensus disagreement": among samples whose nearest
# neighbours agree on one class, the share whose own label differs, by its lower confidence bound (2
# standard errors). Natural ambiguity lives where classes meet, so neighbourhoods that are split 8 to 2
# disagree with clean labels often on confusable classes (4 upper-body Fashion-MNIST classes: 17%), while
# random label noise does not care how pure a neighbourhood is. So the rate is read at the strongest
# consensus that MIN_CONSENSUS samples reach: all 10 neighbours agreeing where possible, else 9, else 8.
# Measured (docs/checks_heldout.md, section 15), rate (lower bound): clean Fashion-MNIST 2000/500 subsets
# 0.011-0.021 (<= 0.010), full 60k/10k 0.011/0.014, digits 0.003-0.005, 4 upper-body classes 0.127 of 55 at
# 9 votes (0.037), tabular 4x4 means 0.046 (0.012); labels flipped at random: 5% 0.057-0.069 (0.034-0.045),
# 10% 0.105-0.141 (0.064-0.099), 20% 0.174-0.239 (0.093-0.150); crowd_label_noise 0.33 of 48 at 9 (0.197).
CONSENSUS_VOTES = 8           # the weakest consensus judged
DISAGREEMENT_WARNING = 0.04   # lower bound above this: warning
DISAGREEMENT_ERROR = 0.08     # lower bound above this: error
MIN_CONSENSUS = 30            # fewer agreed samples than this: too few to judge, a note at most
# The test split's labels are judged against train's own disagreement too, when train is not flagged: its
# leave-one-out rate on the same neighbour pool is the clean base rate of this data, which is higher on small
# or hard sets (clean tinted 3x32x32, 1000 train: 0.076 of 556; its 250 test images: 0.132 of 129, lower bound
# 0.072, only 1.8 standard errors of the difference above train). A test warning or error also needs its rate
# to exceed train's by TEST_EXCESS_SE standard errors of the difference (5% of test labels flipped, full
# Fashion-MNIST: 0.097 vs 0.046 over 10k/60k, 14 standard errors).
TEST_EXCESS_SE = 2.0


def audit_data(train, test=None, classes=None, *, skip=(), budget="full", seed=0):
    """Run the stage-1 data checks and return a Report (title "audit_data").

    train, test: Images, a tuple (X, y) of tensors/arrays, or a Dataset yielding (x, y); X is
        (N, C, H, W), (N, H, W) or (N, D), uint8 or float. The data is never modified.
    classes: class names (or their number); default: from Images, else max label + 1.
    skip: names of checks to leave out (see CHECKS). budget: "full", or "fast" to leave out EXPENSIVE.
    seed: seeds the subsampling, through local generators only.
    """
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    unknown = [name for name in skip if name not in CHECKS]
    if unknown:
        raise ValueError(f"skip={skip!r}: unknown check(s) {unknown}. Valid names: {', '.join(CHECKS)}.")
    if budget not in ("full", "fast"):
        raise ValueError(f"budget={budget!r}: use 'full' (all checks) or 'fast' (skips {', '.join(EXPENSIVE)}).")
    with preserved_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = prepare(train, test, classes, seed)
        d["full_search"] = budget == "full" and not {"near_duplicates", "label_issues"} <= set(skip)
        report = Report("audit_data")
        for name in CHECKS:
            if name in skip:
                report.skipped.append((name, "left out by skip="))
            elif budget == "fast" and name in EXPENSIVE:
                report.skipped.append((name, "expensive: left out by budget='fast' (use budget='full')"))
            elif name in NEEDS_TEST and d["test"] is None:
                report.skipped.append((name, "no test split given"))
            else:
                run_check(name, RUN[name], d, report)
    return report


def prepare(train, test, classes, seed):
    """Validated inputs as one plain dict that the checks read (and cache neighbours in)."""
    tr = as_split(train, "train")
    te = as_split(test, "test") if test is not None else None
    if te is not None and tuple(te["x"].shape[1:]) != tuple(tr["x"].shape[1:]):
        raise ValueError(f"test samples have shape {tuple(te['x'].shape[1:])} but train samples "
                         f"{tuple(tr['x'].shape[1:])}: pass both splits in the same layout and size.")
    names, names_note = resolve_classes(classes, tr, te)
    return {"train": tr, "test": te, "classes": names, "num_classes": len(names),
            "class_names_note": names_note, "seed": seed}


def floats(d, split):
    """(N, ...) float32 copy of a split's samples (cached); the caller's tensor stays untouched."""
    if "xf" not in d[split]:
        d[split]["xf"] = d[split]["x"].float()
    return d[split]["xf"]


# ----------------------------------------------------------------------------- inputs

def as_split(data, arg):
    """Images, (X, y) or a Dataset -> {"x": (N, C, H, W) or (N, D) tensor, "y": (N,) int64, "classes"}."""
    classes = None
    if isinstance(data, Images):
        x, y, classes = data
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{arg}: a tuple must be (X, y), got {len(data)} items; "
                             f"pass {arg}=(images, labels) or a Dataset yielding (x, y).")
        x, y = data
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        x, y = stack_dataset(data, arg)
    else:
        raise ValueError(f"{arg}: expected Images, a tuple (X, y) or a Dataset yielding (x, y), "
                         f"got {type(data).__name__}.")
    x, y = as_tensor(x, f"{arg} images"), as_tensor(y, f"{arg} labels")
    if x.ndim == 3:
        x = x[:, None]                                               # (N, H, W) -> (N, 1, H, W)
    if x.ndim not in (2, 4):
        raise ValueError(f"{arg} images have shape {tuple(x.shape)}: expected (N, C, H, W), (N, H, W) "
                         "or (N, D); reshape them to one of these.")
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise ValueError(f"{arg} images have shape {tuple(x.shape)}, which looks channels-last: "
                         "pass x.permute(0, 3, 1, 2) (N, C, H, W).")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{arg} images have dtype {x.dtype}: pass uint8 or float pixel values.")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{arg} labels have dtype {y.dtype}: labels must be integer class indices "
                         f"(e.g. y.long()), not {y.dtype}.")
    if y.ndim != 1:
        raise ValueError(f"{arg} labels have shape {tuple(y.shape)}: expected (N,) class indices "
                         "(one-hot labels? pass y.argmax(1)).")
    if len(x) != len(y):
        raise ValueError(f"{arg}: {len(x)} images but {len(y)} labels; pass the images and labels "
                         "of the same split.")
    if len(y) == 0:
        raise ValueError(f"{arg} is empty (0 samples): check the split you loaded or filtered.")
    if len(y) == 1:
        raise ValueError(f"{arg} has 1 sample: audit_data compares samples with each other and needs at least 2; "
                         f"pass the whole split as {arg}=(images, labels).")
    if int(y.min()) < 0:
        raise ValueError(f"{arg} labels contain {int(y.min())}: labels must be 0..C-1 "
                         "(was -1 used for 'unknown'? drop those samples).")
    return {"x": x, "y": y.long(), "classes": classes}


def as_tensor(value, what):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except Exception as e:
        raise ValueError(f"{what}: cannot read as an array ({type(e).__name__}: {e}).") from e
    if array.dtype == object or array.dtype.kind in "USV":
        raise ValueError(f"{what} have dtype {array.dtype}: pass numbers (integer class indices for labels).")
    if array.dtype == np.uint16 or array.dtype == np.uint32 or array.dtype == np.uint64:
        array = array.astype(np.int64)
    return torch.from_numpy(array.copy())                             # a copy: never a view of the caller's data


def stack_dataset(dataset, arg):
    """Read every (x, y) of a map-style Dataset into two tensors (N, ...) and (N,)."""
    xs, ys = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"{arg}[{i}] is a {type(item).__name__}: the Dataset must yield (x, y) pairs.")
        xs.append(as_tensor(item[0], f"{arg}[{i}] image"))
        ys.append(as_tensor(item[1], f"{arg}[{i}] label").reshape(-1))
    if not xs:
        raise ValueError(f"{arg} is empty (0 samples): check the split you loaded or filtered.")
    if len({tuple(x.shape) for x in xs}) > 1:
        raise ValueError(f"{arg}: the Dataset yields images of different shapes; resize them to one shape.")
    if any(len(y) != 1 for y in ys):
        raise ValueError(f"{arg}: each label must be one class index, got shape {tuple(ys[0].shape)}.")
    return torch.stack(xs), torch.cat(ys)


def resolve_classes(classes, tr, te):
    """Class names, checked against the labels; a note when train and test name classes differently."""
    splits = [s for s in (tr, te) if s is not None]
    if classes is None:
        classes = tr["classes"] or (te["classes"] if te is not None else None)
    if classes is None:
        classes = max(int(s["y"].max()) for s in splits) + 1
    if isinstance(classes, int):
        classes = tuple(str(c) for c in range(classes))
    classes = tuple(classes)
    if len(classes) == 0:
        raise ValueError("classes is empty: pass the class names, or their number.")
    for s, arg in zip(splits, ("train", "test")):
        top = int(s["y"].max())
        if top >= len(classes):
            raise ValueError(f"{arg} labels go up to {top} but classes has {len(classes)} entries: pass "
                             f"classes= listing every class, or fix the labels to 0..{len(classes) - 1}.")
    note = ""
    if te is not None and tr["classes"] and te["classes"] and tuple(tr["classes"]) != tuple(te["classes"]):
        note = f"train classes {tuple(tr['classes'])} differ from test classes {tuple(te['classes'])}"
    return classes, note


def splits(d):
    return [s for s in ("train", "test") if d[s] is not None]

# ----------------------------------------------------------------------------- checks on values

def check_corrupted(d, report):
    """NaN/inf anywhere in a sample, and samples that are one constant value (blank, failed decode)."""
    found = {}
    for split in splits(d):
        x = floats(d, split).reshape(len(d[split]["y"]), -1)        # (N, P)
        n = len(x)
        nonfinite = torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten()
        constant = torch.tensor([], dtype=torch.long)
        if x.shape[1] >= 16:                                         # a 2-feature row may well be constant
            constant = torch.nonzero(torch.isfinite(x).all(dim=1) & (x.amax(dim=1) == x.amin(dim=1))).flatten()
        found[split] = {"nonfinite": nonfinite.tolist(), "constant": constant.tolist()}
        if len(nonfinite):
            report.add("corrupted", "error", f"{split}: {len(nonfinite)} of {n} samples ({pct(len(nonfinite), n)}) "
                       "contain NaN or inf.",
                       "A failed decode, a division by a zero std in normalization, or a corrupted file; one "
                       f"NaN makes the loss NaN. {STAGE1}: fix the loading/normalization code or drop them.",
                       where=f"{split} {nonfinite[:10].tolist()}", indices=nonfinite.tolist())
        # clean Fashion-MNIST, MNIST, CIFAR-10: 0 constant images. One can be a real blank; more is a bug.
        if len(constant):
            severity = "error" if len(constant) >= max(2, math.ceil(0.0005 * n)) else "warning"
            value = x[constant[0], 0].item()
            report.add("corrupted", severity, f"{split}: {len(constant)} of {n} samples ({pct(len(constant), n)}) "
                       f"are one constant value (e.g. all {value:g}).",
                       "Blank placeholders, failed decodes or a crop outside the image. "
                       f"{STAGE1}: look at them, fix the loader or drop them.",
                       where=f"{split} {constant[:10].tolist()}", indices=constant.tolist())
    report.details["corrupted"] = found


def split_stats(x, images):
    """min/max/mean/std over the finite values of (N, ...) floats; per channel too for images."""
    finite = torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    x = x[finite]
    if len(x) == 0:
        return {"count": 0}
    stats = {"count": len(x), "min": x.min().item(), "max": x.max().item(),
             "mean": x.mean().item(), "std": x.std().item() if x.numel() > 1 else 0.0}
    if images:
        stats["channel_mean"] = x.mean(dim=(0, 2, 3)).tolist()
        stats["channel_std"] = x.std(dim=(0, 2, 3)).tolist() if x.numel() > x.shape[1] else [0.0] * x.shape[1]
    return stats


def check_value_range(d, report):
    """Per-split statistics, mixed scales inside a split, and a normalization mismatch between splits."""
    images = d["train"]["x"].ndim == 4
    out = {}
    for split in splits(d):
        x = floats(d, split)
        out[split] = stats = split_stats(x, images)
        stats["dtype"] = str(d[split]["x"].dtype).replace("torch.", "")
        if stats["count"] == 0:
            continue
        # floats whose maximum is that of 8-bit pixels; a dataset's own units (digits' 0..16) are not pixels
        if d[split]["x"].is_floating_point() and stats["min"] >= 0 and 128 < stats["max"] <= 255:
            report.add("value_range", "warning", f"{split}: float values span {stats['min']:g}..{stats['max']:g}, "
                       "like raw 0..255 pixels.",
                       "Forgot to divide by 255 or to normalize? Most models expect 0..1 or standardized "
                       "inputs. Return to stage 2 (skeleton): check the input pipeline.")
        if images and len(x) >= 20:
            # per-sample scale: clean Fashion-MNIST images all have max 254..255; a 20x outlier means
            # some samples went through another scaling (0..1 vs 0..255) than the rest.
            flat = x.reshape(len(x), -1)
            ok = torch.isfinite(flat).all(dim=1) & (flat.amax(dim=1) > flat.amin(dim=1))
            scale = flat[ok].abs().amax(dim=1)
            if len(scale):
                median = scale.median()
                odd = torch.nonzero(ok).flatten()[(scale > 20 * median) | (scale < median / 20)]
                if len(odd):
                    severity = "error" if len(odd) >= max(2, 0.001 * len(x)) else "warning"
                    report.add("value_range", severity, f"{split}: {len(odd)} samples ({pct(len(odd), len(x))}) "
                               f"have a scale 20x off the median sample's (max |value| {median.item():.3g}).",
                               "Samples from two sources scaled differently (0..1 and 0..255?). "
                               f"{STAGE1}: apply one preprocessing to every sample.",
                               where=f"{split} {odd[:10].tolist()}", indices=odd.tolist())
    if d["test"] is not None and out["train"]["count"] and out["test"]["count"]:
        tr, te = out["train"], out["test"]
        std = max(tr["std"], 1e-8)
        shift = abs(te["mean"] - tr["mean"]) / std                   # in units of the train std
        ratio = te["std"] / std
        if images:                                                   # the worst channel decides
            shifts = [abs(a - b) / max(s, 1e-8) for a, b, s in zip(te["channel_mean"], tr["channel_mean"], tr["channel_std"])]
            ratios = [b / max(s, 1e-8) for b, s in zip(te["channel_std"], tr["channel_std"])]
            shift, ratio = max(shifts + [shift]), max(ratios + [ratio], key=lambda r: abs(math.log(max(r, 1e-12))))
        out["test_vs_train"] = {"mean_shift_in_train_std": shift, "std_ratio": ratio}
        # clean Fashion-MNIST test vs train: mean shift 0.005 train std, std ratio 1.00.
        log_ratio = abs(math.log(max(ratio, 1e-12)))
        severity = ("error" if shift > 0.5 or log_ratio > math.log(2) else
                    "warning" if shift > 0.2 or log_ratio > math.log(1.25) else None)
        if severity:
            report.add("value_range", severity,
                       f"test is scaled differently from train: test mean {te['mean']:.4g} vs train {tr['mean']:.4g} "
                       f"({shift:.2f} train std apart), test std {te['std']:.4g} vs train {tr['std']:.4g} "
                       f"(ratio {ratio:.3g}); ranges {te['min']:.3g}..{te['max']:.3g} vs {tr['min']:.3g}..{tr['max']:.3g}.",
                       "The splits went through different preprocessing (0..1 vs 0..255, normalized vs not, "
                       "other mean/std): a model trained on one sees garbage on the other. Return to stage 2 "
                       "(skeleton): one transform, with train statistics, for every split.")
    report.details["value_range"] = out


def check_class_balance(d, report):
    """Classes missing in a split, badly rare classes, and train vs test class proportions."""
    from scipy.stats import chisquare
    C, names = d["num_classes"], d["classes"]
    counts = {s: torch.bincount(d[s]["y"], minlength=C).numpy() for s in splits(d)}
    report.details["class_balance"] = {f"{s}_counts": c.tolist() for s, c in counts.items()}
    report.details["class_balance"]["classes"] = list(names)
    for split, c in counts.items():
        if (c > 0).sum() == 1:
            only = names[int(np.flatnonzero(c)[0])]
            report.add("class_balance", "warning", f"{split}: all {int(c.sum())} samples are class '{only}': a "
                       "classifier learns nothing from one class (it can always answer it).",
                       f"A filter or a bad split kept one class, or the labels were overwritten. {STAGE1}.", where=split)
    if C < 2:
        return "one class only: nothing to balance"
    shift = proportion_shift(counts["train"], counts["test"]) if "test" in counts else None
    shared = shift is not None and (shift[0] < 0.05 or shift[1] >= 1e-3)   # within sampling noise: quiet below
    for split, c in counts.items():
        n = int(c.sum())
        missing = [names[i] for i in np.flatnonzero(c == 0)]
        if missing:
            # with n/C >= 10 expected per class, a uniform draw leaves a class empty with p < 5e-5
            severity = "error" if n / C >= 10 else "warning"
            report.add("class_balance", severity, f"{split}: {len(missing)} of {C} classes have no samples: "
                       f"{missing[:10]} ({n} samples in all).",
                       "A filter or a bad split dropped them, or classes= lists classes this data lacks. "
                       f"{STAGE1}: check how the split was built.", where=split)
        present = c[c > 0]
        if len(present) >= 2:
            ratio = present.max() / present.min()
            p = chisquare(c).pvalue                                  # vs equal counts
            severity = ("error" if ratio >= 5 and p < 1e-6 else "warning" if ratio >= 2 and p < 1e-3 else None)
            if severity == "error" and shared:     # both splits drawn alike: the data's own long tail, not a filter
                severity = "warning"
            if severity:
                rare = names[int(np.argmin(np.where(c > 0, c, c.max() + 1)))]
                alike = " Train and test share these proportions." if shared else ""
                report.add("class_balance", severity, f"{split}: the largest class has {ratio:.1f}x the samples of "
                           f"the smallest ({present.max()} vs {present.min()}, '{rare}').{alike}",
                           "A filter that dropped most of a class, or real imbalance: then weight the loss or "
                           "resample, and track per-class accuracy. "
                           f"{STAGE1}.", where=split)
    if "test" in counts:
        tr, te = counts["train"], counts["test"]
        unseen = [names[i] for i in np.flatnonzero((tr == 0) & (te > 0))]
        if unseen:
            severity = "error" if tr.sum() / C >= 10 else "warning"      # tiny train sets miss classes by chance
            report.add("class_balance", severity, f"test has classes never seen in train: {unseen[:10]}.",
                       f"The model can never predict them. {STAGE1}: rebuild the split.")
        tv, p = shift
        report.details["class_balance"]["total_variation"] = tv
        severity = "error" if tv >= 0.1 and p < 1e-4 else "warning" if tv >= 0.05 and p < 1e-3 else None
        if severity:
            report.add("class_balance", severity, f"train and test class proportions differ: total variation "
                       f"{tv:.2f} (0 = same, 1 = disjoint), chi-square p = {p:.2g}.",
                       "Not a random split (sorted by class? split by source?), so test accuracy will not "
                       f"predict real accuracy. {STAGE1}: split with a seeded shuffle, stratified by class.")


# ----------------------------------------------------------------------------- checks on labels

def proportion_shift(tr, te):
    """Total variation between two splits' class proportions (0 = same, 1 = disjoint) and the chi-square
    p-value of their difference. Clean Fashion-MNIST: both uniform, tv = 0; random 2000/500 subsets: tv
    ~0.05, p ~0.5."""
    from scipy.stats import chi2_contingency
    both = (tr + te) > 0
    tv = 0.5 * np.abs(tr / tr.sum() - te / te.sum()).sum()
    p = chi2_contingency(np.stack([tr[both], te[both]]))[1] if both.sum() >= 2 else 1.0
    return float(tv), float(p)


def knn_accuracy(y_query, probs, y_all):
    """k-NN accuracy, the majority-class rate (what guessing gets) and the standard error at chance."""
    acc = (probs.argmax(dim=1) == y_query).float().mean().item()
    chance = (torch.bincount(y_all).max() / len(y_all)).item()
    se = math.sqrt(chance * (1 - chance) / len(y_query))
    return acc, chance, se


def check_label_signal(d, report):
    """Labels that carry no information: leave-one-out k-NN accuracy on train near the majority rate."""
    C, y = d["num_classes"], d["train"]["y"]
    if C < 2 or len(torch.unique(y)) < 2:
        return "one class only"
    if len(y) < max(30, 3 * C):
        return f"too few samples ({len(y)}) to judge; needs {max(30, 3 * C)}"
    q, _, idx = train_neighbours(d)
    acc, chance, se = knn_accuracy(y[q], knn_probabilities(y[idx], C), y)
    signal = (acc - chance) / (1 - chance)                           # 0 = guessing, 1 = perfect
    report.details["label_signal"] = {"knn_accuracy": acc, "chance": chance, "signal": signal,
                                      "queries": len(q), "k": idx.shape[1]}
    # clean Fashion-MNIST: 10-NN accuracy 0.85 (signal 0.83); 2000-sample subset: ~0.75.
    # With shuffled labels accuracy is chance +- se; the 2 se margin keeps tiny sets from false errors.
    for severity, level in (("error", 0.1), ("warning", 0.25)):
        if acc + 2 * se < chance + level * (1 - chance):
            report.add("label_signal", severity, f"train labels are barely predictable from the images: "
                       f"{idx.shape[1]}-NN accuracy {acc:.3f} vs {chance:.3f} by always guessing the largest class "
                       f"({len(q)} samples).",
                       "Labels shuffled or misaligned with the images (sorted one list but not the other, a bad "
                       f"join, an off-by-one index), or features too crude for this data. {STAGE1}: look at a grid "
                       "of images with their labels.")
            break


def check_label_issues(d, report):
    """Likely mislabeled samples, ranked, by cleanlab on out-of-sample k-NN probabilities."""
    from cleanlab.filter import find_label_issues
    C = d["num_classes"]
    y_train = d["train"]["y"]
    out = {}
    _, _, idx = train_neighbours(d)                                   # leave-one-out: out of sample
    jobs = [("train", y_train, idx)]
    if d["test"] is not None:                                        # train neighbours: out of sample too
        jobs.append(("test", d["test"]["y"], test_neighbours(d)[1]))
    for split, y, neighbours in jobs:
        probs = knn_probabilities(y_train[neighbours], C)
        counts = torch.bincount(y, minlength=C)
        present = torch.nonzero(counts >= 5).flatten()               # cleanlab needs a few per class
        keep = torch.isin(y, present)
        if len(present) < 2 or keep.sum() < 10 * len(present):
            continue
        remap = torch.full((C,), -1, dtype=torch.long)
        remap[present] = torch.arange(len(present))
        p = probs[keep][:, present]
        p = (p / p.sum(dim=1, keepdim=True)).numpy()
        found = find_label_issues(remap[y[keep]].numpy(), p, return_indices_ranked_by="self_confidence", n_jobs=1)
        rows = torch.nonzero(keep).flatten()[torch.from_numpy(np.asarray(found, dtype=np.int64))]
        suggested = present[torch.from_numpy(p[found].argmax(axis=1))]
        out[split] = {"indices": rows.tolist(), "given": y[rows].tolist(), "suggested": suggested.tolist(),
                      "confidence": p[found].max(axis=1).round(3).tolist(),
                      "given_label_probability": p[found, remap[y[rows]].numpy()].round(3).tolist(),
                      "rate": len(found) / int(keep.sum()), "checked": int(keep.sum())}
        k = neighbours.shape[1]
        votes = knn_probabilities(y_train[neighbours], C, prior_weight=0)
        top, consensus = (votes * k).round().max(dim=1)
        by_votes = {v: ((consensus[top >= v] != y[top >= v]).float().mean().item(), int((top >= v).sum()))
                    for v in range(CONSENSUS_VOTES, k + 1) if (top >= v).any()}
        level = next((v for v in range(k, CONSENSUS_VOTES, -1) if by_votes.get(v, (0, 0))[1] >= MIN_CONSENSUS),
                     CONSENSUS_VOTES)                 # the strongest consensus with enough samples
        disagreement, agreed = by_votes.get(level, (0.0, 0))
        se = math.sqrt(max(disagreement * (1 - disagreement), 0.01) / max(agreed, 1))
        lower = disagreement - 2 * se if agreed >= MIN_CONSENSUS else 0.0
        out[split].update(by_votes=by_votes, consensus_disagreement=disagreement, consensus_samples=agreed,
                          disagreement_lower_bound=lower, consensus_votes=level, neighbours=k)
        severity = "error" if lower > DISAGREEMENT_ERROR else "warning" if lower > DISAGREEMENT_WARNING else None
        base = out.get("train")
        if severity and split == "test" and base and base["disagreement_lower_bound"] <= DISAGREEMENT_WARNING \
                and base["by_votes"].get(level, (0, 0))[1] >= MIN_CONSENSUS:   # within noise of train's clean rate?
            b, nb = base["by_votes"][level]                                  # train's rate at the same consensus
            se_diff = math.sqrt(se ** 2 + max(b * (1 - b), 0.01) / nb)
            if disagreement - b <= TEST_EXCESS_SE * se_diff:
                severity = None
        if severity or len(found):
            label_verdict(d, report, split, out[split], severity)
    report.details["label_issues"] = out
    if not out:
        return "too few samples per class for cleanlab (needs 5 per class and 10 per class overall)"


def label_verdict(d, report, split, found, severity):
    """A warning or error when labels disagree with their neighbours more than clean data ever does;
    otherwise the ranked suspects as a note: real datasets hold a few % of ambiguous labels."""
    names = d["classes"]
    n, checked, agreed = len(found["indices"]), found["checked"], found["consensus_samples"]
    examples = ", ".join(f"#{i} '{names[g]}'->'{names[s]}'" for i, g, s in
                         zip(found["indices"][:3], found["given"][:3], found["suggested"][:3]))
    votes, k = found["consensus_votes"], found["neighbours"]
    which = f"all {k}" if votes == k else f"at least {votes} of the {k}"
    seen = (f"{split}: cleanlab flags {n} of {checked} labels ({pct(n, checked)}); where {which} nearest train "
            f"neighbours agree, {found['consensus_disagreement']:.1%} of {agreed} labels disagree with them")
    if severity is None:
        report.notes.append(("label_issues", f"{seen}, as in clean data (clean Fashion-MNIST: about 1%; 10% "
                             f"flipped labels: 10%): ambiguous or mislabeled samples worth a look, most "
                             f"suspicious {examples}; ranked in report.details['label_issues']."))
        return
    report.add("label_issues", severity, f"{seen} (clean Fashion-MNIST: about 1%, 20% flipped labels: 17%). Most "
               f"suspicious: {examples}.",
               "Annotation noise, labels partly shuffled, or an index misalignment in part of the data "
               "(a few % of ambiguous labels is normal). "
               f"{STAGE1}: look at the ranked samples in report.details['label_issues'], fix or drop them.",
               where=f"{split} {found['indices'][:10]}")


def check_label_map(d, report):
    """Test labels that mean other classes than train labels (shifted, permuted, shuffled)."""
    C, names = d["num_classes"], d["classes"]
    y_tr, y_te = d["train"]["y"], d["test"]["y"]
    if d["class_names_note"]:
        report.add("label_map", "error", d["class_names_note"] + ".",
                   f"The splits come from different label maps. {STAGE1}: use one list of class names.")
    if C < 2 or len(y_te) < max(20, 2 * C) or len(y_tr) < max(30, 3 * C):
        return f"too few samples to judge (train {len(y_tr)}, test {len(y_te)})"
    if d["full_search"] or len(y_te) <= FAST_QUERIES:
        q, idx = torch.arange(len(y_te)), test_neighbours(d)[1]
    else:
        rng = np.random.default_rng(d["seed"] + 1)
        q = torch.from_numpy(np.sort(rng.choice(len(y_te), FAST_QUERIES, replace=False)))
        idx = nearest(features(d, "test")[q], features(d, "train"), 10)[1]
    predicted = knn_probabilities(y_tr[idx], C).argmax(dim=1)        # (Q,) train's name for each test sample
    given = y_te[q]
    confusion = torch.bincount(given * C + predicted, minlength=C * C).reshape(C, C).numpy()  # [test label, train label]
    perm = best_permutation(confusion)
    rows = confusion.sum(axis=1)
    # a test label is remapped when a train-fitted k-NN calls most of it another single class. Clean
    # Fashion-MNIST: the most confused class ('Shirt') is called 'Shirt' 2x more often than anything else.
    moved = [t for t in range(C) if perm[t] != t and confusion[t, perm[t]] >= max(5, 0.3 * rows[t], 2 * confusion[t, t])]
    # in a real relabeling the target class moved too; a class rare in train only pulls its test samples
    remapped = [t for t in moved if perm[t] in moved]
    test_acc, chance_te, se_te = knn_accuracy(given, knn_probabilities(y_tr[idx], C), y_te)
    q_tr, _, idx_tr = train_neighbours(d)
    train_acc, chance_tr, _ = knn_accuracy(y_tr[q_tr], knn_probabilities(y_tr[idx_tr], C), y_tr)
    report.details["label_map"] = {"confusion": confusion.tolist(), "best_map": perm.tolist(),
                                   "remapped": remapped, "test_accuracy": test_acc, "train_accuracy": train_acc}
    if remapped:
        found = "; ".join(f"test label {t} ('{names[t]}') looks like train label {perm[t]} ('{names[perm[t]]}') "
                          f"in {confusion[t, perm[t]]}/{rows[t]}" for t in remapped[:5])
        report.add("label_map", "error", f"{len(remapped)} test labels match other train labels: {found}.",
                   "The splits number classes differently (sorted names vs. original order, an off-by-one "
                   f"shift, another version of the dataset). {STAGE1}: map test labels through the train "
                   "class list.", where=f"test labels {remapped}")
        return None
    # clean Fashion-MNIST: test 10-NN accuracy 0.85 vs train leave-one-out 0.85.
    train_signal = (train_acc - chance_tr) / (1 - chance_tr)
    test_signal = (test_acc - chance_te) / (1 - chance_te)
    significant = (train_acc - test_acc) > 4 * max(se_te, 1e-3)
    if train_signal >= 0.2 and significant and test_signal < 0.8 * train_signal:
        severity = "error" if test_signal < 0.5 * train_signal else "warning"
        report.add("label_map", severity, f"a k-NN fitted on train gets {test_acc:.3f} on test but {train_acc:.3f} "
                   f"on held-out train samples (chance {chance_te:.3f}).",
                   "Test labels shuffled or misaligned with test images, or test comes from another distribution "
                   f"(other dataset, other preprocessing). {STAGE1}: look at test images with their labels.")


RUN = {"corrupted": check_corrupted, "value_range": check_value_range, "class_balance": check_class_balance,
       "duplicates": check_duplicates, "near_duplicates": check_near_duplicates, "leakage": check_leakage,
       "near_leakage": check_near_leakage, "label_signal": check_label_signal,
       "label_issues": check_label_issues, "label_map": check_label_map, "train_vs_test": check_train_vs_test,
       "shortcuts": check_shortcuts}
