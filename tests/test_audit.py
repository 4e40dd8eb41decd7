"""audit_data: each check flags the bug planted for it, clean data passes, inputs stay untouched."""
import hashlib
import random

import numpy as np
import pytest
import torch

import recipe_kit as rk
from recipe_kit.audit import CHECKS, DISAGREEMENT_ERROR, DISAGREEMENT_WARNING, EXPENSIVE, audit_data


@pytest.fixture(scope="module")
def fmnist():
    """A clean, random 2000-train / 500-test subset of the real Fashion-MNIST."""
    try:
        tr, te = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    except rk.DataError as e:
        pytest.fail(f"Fashion-MNIST is needed for these tests: {e}")
    rng = np.random.default_rng(0)
    a, b = rng.choice(len(tr), 2000, replace=False), rng.choice(len(te), 500, replace=False)
    return (tr.images[a].clone(), tr.labels[a].clone()), (te.images[b].clone(), te.labels[b].clone()), tr.classes


@pytest.fixture(scope="module")
def clean_report(fmnist):
    train, test, classes = fmnist
    return audit_data(train, test, classes)


def errors_of(report, check):
    return [p for p in report.problems if p.check == check and p.severity == "error"]


def test_clean_subset_has_no_errors(clean_report):
    assert clean_report.ok, str(clean_report)
    assert set(clean_report.checks_run) | {n for n, _ in clean_report.skipped} == set(CHECKS)
    assert {"corrupted", "value_range", "class_balance", "leakage", "label_signal", "label_map"} <= set(
        clean_report.passed)


def test_details_hold_data_for_notebooks(clean_report):
    d = clean_report.details
    assert len(d["class_balance"]["train_counts"]) == 10 and sum(d["class_balance"]["test_counts"]) == 500
    assert 0.6 < d["label_signal"]["knn_accuracy"] < 0.95       # 10-NN on 2000 Fashion-MNIST images: ~0.75
    issues = d["label_issues"]["train"]
    assert len(issues["indices"]) == len(issues["given"]) == len(issues["suggested"]) == len(issues["confidence"])
    assert all(g != s for g, s in zip(issues["given"], issues["suggested"]))
    probs = issues["given_label_probability"]
    assert probs == sorted(probs)                                # ranked: most suspicious first
    assert abs(d["value_range"]["train"]["max"] - 255) < 1e-6 and d["value_range"]["train"]["dtype"] == "uint8"


def test_exact_duplicates_with_conflicting_labels(fmnist):
    (x, y), test, classes = fmnist
    x, y = x.clone(), y.clone()
    x[1000:1100], y[1000:1100] = x[:100], y[:100]                # 5% copies, half relabeled
    y[1000:1050] = (y[:50] + 1) % 10
    report = audit_data((x, y), test, classes, skip=("near_duplicates", "label_issues"))
    (problem,) = errors_of(report, "duplicates")
    assert "100 samples" in problem.message and "50 of these pairs have different labels" in problem.message
    assert (0, 1000) in list(zip(report.details["duplicates"]["train"]["i"], report.details["duplicates"]["train"]["j"]))


def shift(x, dy, dx):
    """Move images (N, C, H, W) by (dy, dx) pixels, filling with zeros (not a wrap-around roll)."""
    out = torch.zeros_like(x)
    H, W = x.shape[2:]
    out[:, :, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[:, :, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def test_near_duplicates_shifted_and_noised(fmnist):
    (x, y), test, classes = fmnist
    x = x.clone()
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x[:100].shape, generator=gen) * 4        # ~1.5% of the 0..255 range
    x[1000:1100] = shift(x[:100].float() + noise, 1, 0).clamp(0, 255).round().to(torch.uint8)
    report = audit_data((x, y), test, classes, skip=("label_issues",))
    (problem,) = errors_of(report, "near_duplicates")
    pairs = set(zip(report.details["near_duplicates"]["i"], report.details["near_duplicates"]["j"]))
    found = sum((i, 1000 + i) in pairs for i in range(100))
    assert found >= 90, f"only {found} of 100 planted near-copies found"
    assert not errors_of(report, "duplicates")                   # they are not byte-identical


def jpeg_like(x, step=12):
    """Re-encoding noise: round pixels to a coarser grid (what JPEG's quantization does, roughly)."""
    return ((x.float() / step).round() * step).clamp(0, 255).to(torch.uint8)


def test_leakage_exact_and_near(fmnist):
    train, (xt, yt), classes = fmnist
    x, y = train
    xt, yt = xt.clone(), yt.clone()
    xt[:10], yt[:10] = x[:10], y[:10]                             # exact copies
    xt[10:40], yt[10:40] = shift(x[10:40], 0, -1), y[10:40]       # shifted by one pixel
    xt[40:70], yt[40:70] = jpeg_like(x[40:70]), y[40:70]          # re-encoded
    report = audit_data(train, (xt, yt), classes, skip=("near_duplicates", "label_issues"))
    assert errors_of(report, "leakage") and "10 of 500" in errors_of(report, "leakage")[0].message
    assert errors_of(report, "near_leakage")
    leaks = dict(zip(report.details["near_leakage"]["i"], report.details["near_leakage"]["j"]))
    assert sum(leaks.get(t) == t for t in range(70)) >= 65


def test_class_missing_and_imbalanced(fmnist):
    (x, y), (xt, yt), classes = fmnist
    keep = (y != 3) & ((y != 5) | (torch.arange(len(y)) % 10 == 0))  # no 'Dress', 10% of 'Sandal'
    report = audit_data((x[keep], y[keep]), (xt, yt), classes, skip=EXPENSIVE)
    messages = " ".join(p.message for p in errors_of(report, "class_balance"))
    assert "have no samples: ['Dress']" in messages
    assert "test has classes never seen in train: ['Dress']" in messages
    assert "x the samples of the smallest" in messages


def test_class_distribution_mismatch(fmnist):
    train, (xt, yt), classes = fmnist
    keep = (yt < 5) | (torch.arange(len(yt)) % 4 == 0)          # test: classes 5..9 cut to a quarter
    report = audit_data(train, (xt[keep], yt[keep]), classes, skip=EXPENSIVE)
    assert any("class proportions differ" in p.message for p in errors_of(report, "class_balance"))


def test_nan_and_constant_images(fmnist):
    (x, y), test, classes = fmnist
    x = x.float() / 255
    x[3, 0, 5, 5] = float("nan")
    x[7, 0, 0, 0] = float("inf")
    x[10:14] = 0.0
    report = audit_data((x, y), test, classes, skip=EXPENSIVE)
    nonfinite, constant = errors_of(report, "corrupted")
    assert "2 of 2000" in nonfinite.message and "NaN" in nonfinite.message
    assert "4 of 2000" in constant.message
    assert report.details["corrupted"]["train"]["nonfinite"] == [3, 7]


@pytest.mark.parametrize("scale_test", ["0..255 test vs 0..1 train", "normalized test vs 0..1 train"])
def test_preprocessing_mismatch_between_splits(fmnist, scale_test):
    (x, y), (xt, yt), classes = fmnist
    x = x.float() / 255
    xt = xt.float() if scale_test.startswith("0..255") else (xt.float() / 255 - 0.286) / 0.353
    report = audit_data((x, y), (xt, yt), classes, skip=EXPENSIVE)
    (problem,) = errors_of(report, "value_range")
    assert "test is scaled differently from train" in problem.message
    assert not errors_of(report, "near_leakage") and not errors_of(report, "label_map")


def test_mixed_scales_within_a_split(fmnist):
    (x, y), test, classes = fmnist
    x = x.float() / 255
    x[:50] *= 255                                                # 2.5% of samples never divided by 255
    report = audit_data((x, y), None, classes, skip=EXPENSIVE)
    (problem,) = errors_of(report, "value_range")
    assert "50 samples" in problem.message


def test_shuffled_labels_carry_no_signal(fmnist):
    (x, y), test, classes = fmnist
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    report = audit_data((x, y), test, classes, skip=EXPENSIVE)
    assert errors_of(report, "label_signal")
    assert report.details["label_signal"]["knn_accuracy"] < 0.2


def test_flipped_labels_are_ranked_first(fmnist):
    (x, y), test, classes = fmnist
    rng = np.random.default_rng(0)
    flipped = torch.from_numpy(rng.choice(len(y), 400, replace=False))  # 20% of train labels
    y = y.clone()
    y[flipped] = (y[flipped] + torch.from_numpy(rng.integers(1, 10, 400))) % 10
    report = audit_data((x, y), test, classes, skip=("near_duplicates", "near_leakage"))
    (problem,) = errors_of(report, "label_issues")
    assert problem.message.startswith("train:")
    top = report.details["label_issues"]["train"]["indices"][:100]
    precision = np.isin(top, flipped.numpy()).mean()
    # measured: 0.81-0.88 over 4 flip seeds on Intel AVX-512/AMX, the same with ATEN_CPU_CAPABILITY=avx2
    # ONEDNN_MAX_CPU_ISA=AVX2, 0.77 on an AMD AVX2-only CPU; a ranking that ignores the labels gets the
    # flipped share, 0.20, and a reversed one ~0. 0.6 holds on all of them and still fails a broken ranking.
    assert precision > 0.6, f"only {precision:.0%} of the 100 top-ranked suspects were flipped (random: 20%)"
    assert not errors_of(report, "label_signal")                # 80% of labels still carry signal


def test_clean_labels_are_a_note_not_a_warning(clean_report):
    """cleanlab flags ~11% of any 2000-image Fashion-MNIST subset: real ambiguity, shown as a note."""
    assert not [p for p in clean_report.problems if p.check == "label_issues"], str(clean_report)
    assert "label_issues" in clean_report.passed
    notes = [text for name, text in clean_report.notes if name == "label_issues"]
    assert len(notes) == 2 and notes[0].startswith("train: cleanlab flags") and "i label_issues: " in str(clean_report)
    assert clean_report.details["label_issues"]["train"]["disagreement_lower_bound"] < DISAGREEMENT_WARNING


def test_ten_percent_flipped_labels_warn(fmnist):
    (x, y), test, classes = fmnist
    rng = np.random.default_rng(1)
    flipped = torch.from_numpy(rng.choice(len(y), 200, replace=False))  # 10% of train labels
    y = y.clone()
    y[flipped] = (y[flipped] + torch.from_numpy(rng.integers(1, 10, 200))) % 10
    report = audit_data((x, y), test, classes, skip=("near_duplicates", "near_leakage"))
    flagged = [p for p in report.problems if p.check == "label_issues"]
    # measured on random 2000-image subsets at 10 votes: lower bound 0.064-0.099 over 2 flip seeds (clean <= 0.010)
    assert [p.message.split(":")[0] for p in flagged] == ["train"], str(report)
    assert report.details["label_issues"]["train"]["disagreement_lower_bound"] > DISAGREEMENT_WARNING


def test_test_labels_shifted_by_one(fmnist):
    train, (xt, yt), classes = fmnist
    report = audit_data(train, (xt, (yt + 1) % 10), classes, skip=EXPENSIVE)
    (problem,) = errors_of(report, "label_map")
    assert "test label 1 ('Trouser') looks like train label 0 ('T-shirt/top')" in problem.message
    assert report.details["label_map"]["best_map"] == [9, 0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_test_labels_shuffled(fmnist):
    train, (xt, yt), classes = fmnist
    yt = yt[torch.randperm(len(yt), generator=torch.Generator().manual_seed(0))]
    report = audit_data(train, (xt, yt), classes, skip=EXPENSIVE)
    assert errors_of(report, "label_map")


def test_fast_budget_skips_expensive_checks_with_reason(fmnist):
    train, test, classes = fmnist
    report = audit_data(train, test, classes, budget="fast")
    skipped = dict(report.skipped)
    assert set(EXPENSIVE) <= set(skipped) and all("budget='fast'" in skipped[n] for n in EXPENSIVE)
    assert report.ok


def fingerprint(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


def test_data_and_global_random_states_unchanged(fmnist):
    (x, y), (xt, yt), classes = fmnist
    x_np, y_np = x[:600].numpy().copy(), y[:600].numpy().copy()  # numpy input too
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (fingerprint(x, y, xt, yt, x_np, y_np), random.getstate(), fingerprint(np.random.get_state()[1]),
              fingerprint(torch.get_rng_state()))
    audit_data((x, y), (xt, yt), classes)
    audit_data((x_np, y_np), None, classes, budget="fast")
    after = (fingerprint(x, y, xt, yt, x_np, y_np), random.getstate(), fingerprint(np.random.get_state()[1]),
             fingerprint(torch.get_rng_state()))
    assert before == after


def test_accepts_dataset_images_and_flat_vectors(fmnist):
    (x, y), _, classes = fmnist

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 300

        def __getitem__(self, i):
            return x[i, 0].float() / 255, int(y[i])             # (H, W) float images, int labels

    report = audit_data(Pairs(), None, classes)
    assert report.ok, str(report)
    assert report.details["value_range"]["train"]["max"] <= 1.0
    flat = audit_data((x[:500].reshape(500, -1).float(), y[:500]), classes=classes)
    assert flat.ok and "label_signal" in flat.passed
    images = rk.Images(x[:300], y[:300], classes)
    assert audit_data(images, budget="fast").details["class_balance"]["classes"] == list(classes)


@pytest.mark.parametrize("shape,channels", [((1, 28, 28), "MNIST-like"), ((3, 32, 32), "CIFAR-like")])
@pytest.mark.parametrize("n", [60, 200])
def test_small_structured_data_gives_no_false_errors(shape, channels, n):
    """Class prototypes plus noise: nothing planted, so no errors, whatever the size."""
    gen = torch.Generator().manual_seed(n)
    prototypes = torch.rand((10,) + shape, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = ((0.6 * prototypes[y] + 0.4 * torch.rand((n,) + shape, generator=gen)) * 255).to(torch.uint8)
    yt = torch.randint(0, 10, (n // 2,), generator=gen)
    xt = ((0.6 * prototypes[yt] + 0.4 * torch.rand((n // 2,) + shape, generator=gen)) * 255).to(torch.uint8)
    report = audit_data((x, y), (xt, yt), 10)
    assert report.ok, f"{channels} n={n}:\n{report}"


@pytest.mark.parametrize("train,test,classes,match", [
    ((torch.zeros(10, 1, 8, 8), torch.zeros(9, dtype=torch.long)), None, None, "10 images but 9 labels"),
    ((torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), None, None, "train is empty"),
    ((torch.zeros(10, 1, 8, 8), torch.full((10,), 5)), None, 3, "labels go up to 5 but classes has 3"),
    ((torch.zeros(10, 1, 8, 8), torch.zeros(10)), None, None, "labels must be integer class indices"),
    ((torch.zeros(10, 2, 1, 8, 8), torch.zeros(10, dtype=torch.long)), None, None, "train images have shape"),
    ((torch.zeros(10, 8, 8, 3), torch.zeros(10, dtype=torch.long)), None, None, "channels-last"),
    ((torch.zeros(10, 1, 8, 8), torch.zeros(10, dtype=torch.long)),
     (torch.zeros(10, 1, 9, 9), torch.zeros(10, dtype=torch.long)), None, "test samples have shape"),
    ((torch.zeros(10, 1, 8, 8), torch.zeros(10, dtype=torch.long)),
     (torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, -1, 0])), None, "test labels contain -1"),
])
def test_bad_input_gets_a_clear_error(train, test, classes, match):
    with pytest.raises(ValueError, match=match):
        audit_data(train, test, classes)


def test_bad_options_name_the_valid_ones(fmnist):
    train, _, _ = fmnist
    with pytest.raises(ValueError, match="unknown check.*'dupes'.*Valid names: corrupted"):
        audit_data(train, skip=("dupes",))
    with pytest.raises(ValueError, match="budget='quick'"):
        audit_data(train, budget="quick")


def test_report_renders_as_text_and_html(fmnist):
    train, (xt, yt), classes = fmnist
    report = audit_data(train, (xt, (yt + 1) % 10), classes, skip=EXPENSIVE)
    text, page = str(report), report._repr_html_()
    assert text.startswith("audit_data: ") and "✗ label_map" in text and "hint: " in text
    assert "label_map" in page and "<li" in page and "skipped" in page


@pytest.mark.slow
def test_full_fashion_mnist_has_no_errors():
    tr, te = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    report = audit_data(tr, te)
    assert report.ok, str(report)
    assert not report.skipped
    assert report.details["near_leakage"]["i"], "the real near-copies across splits should be listed"


def test_mirrored_train_images_in_test_are_leakage(fmnist):
    """A horizontal flip is the most common augmentation: flipped train images in test are near-copies."""
    (x, y), (xt, yt), classes = fmnist
    xt, yt = xt.clone(), yt.clone()
    xt[:40], yt[:40] = x[100:140].flip(-1), y[100:140]
    report = audit_data((x, y), (xt, yt), classes, skip=("near_duplicates", "label_issues"))
    (error,) = errors_of(report, "near_leakage")
    assert "40 of 500" in error.message and "mirror images" in error.message
    leaks = dict(zip(report.details["near_leakage"]["i"], report.details["near_leakage"]["j"]))
    assert sum(leaks.get(t) == 100 + t for t in range(40)) >= 38


def test_copies_at_the_clean_rate_are_a_note_and_above_it_a_problem():
    from recipe_kit.audit_similarity import CLEAN_NEAR_DUP_RATE, CLEAN_NEAR_LEAK_RATE, copy_severity
    # full clean Fashion-MNIST: 46 of 60k train samples, 14 of 10k test samples (the measured clean rates)
    assert copy_severity(46, 60000, CLEAN_NEAR_DUP_RATE, floor=600) is None
    assert copy_severity(14, 10000, CLEAN_NEAR_LEAK_RATE, floor=100) is None
    assert copy_severity(30, 10000, CLEAN_NEAR_LEAK_RATE, floor=100) == "warning"     # 2.3x clean
    assert copy_severity(330, 450, CLEAN_NEAR_LEAK_RATE, floor=5) == "error"          # split_twice_without_seed


def test_one_near_copy_across_small_splits_is_still_reported(fmnist):
    train, (xt, yt), classes = fmnist
    x, y = train
    xt, yt = xt.clone(), yt.clone()
    xt[:5], yt[:5] = shift(x[:5], 0, -1), y[:5]                  # 5 of a small test split: far above clean
    report = audit_data(train, (xt, yt), classes, skip=("near_duplicates", "label_issues"))
    assert {p.check for p in report.problems} >= {"near_leakage"}, str(report)
    assert not [n for n, _ in report.notes if n == "near_leakage"]


def test_small_test_split_labels_are_judged_against_trains_own_rate():
    """250 padded 3x32x32 test images against 1000 train images. With 10% of the test labels flipped, too
    few test samples have a unanimous neighbourhood to tell that from train's own rate (no warning); 20%
    flipped is an error. The test rate is compared with train's at the same consensus."""
    tr, te = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    big = lambda x: torch.nn.functional.pad(x.float().reshape(len(x), 1, 28, 28), (2, 2, 2, 2)).repeat(1, 3, 1, 1).to(torch.uint8)
    x, y, xt, yt = tr.images[6000:7000], tr.labels[6000:7000], te.images[1500:1750], te.labels[1500:1750]
    only = ("near_duplicates", "near_leakage", "train_vs_test", "shortcuts", "duplicates", "leakage", "label_map")
    for flip, expected in ((25, []), (50, ["error"])):
        rng, noisy = np.random.default_rng(1), yt.clone()
        i = torch.from_numpy(rng.choice(len(yt), flip, replace=False))
        noisy[i] = (noisy[i] + torch.from_numpy(rng.integers(1, 10, flip))) % 10
        report = audit_data((big(x), y), (big(xt), noisy), 10, skip=only)
        assert [p.severity for p in report.problems if p.check == "label_issues"] == expected, str(report)
        found = report.details["label_issues"]
        assert found["test"]["consensus_votes"] in found["train"]["by_votes"]
    assert found["test"]["disagreement_lower_bound"] > DISAGREEMENT_ERROR
