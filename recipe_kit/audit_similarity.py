"""Which samples look alike: cheap features, chunked nearest neighbours, and a shift-aware pixel check.

audit_data (stage 1) needs neighbours for three jobs: near-duplicates, train/test leakage and
"do the labels agree with what the images look like" (k-NN). One search serves all three.

Why Fourier magnitudes as features? A copy shifted by one pixel is far from its source in pixel
space (Fashion-MNIST has thousands of look-alike items nearer than that), but the magnitude of the
2-D Fourier transform ignores (circular) shifts, and its low frequencies still tell classes apart:
on Fashion-MNIST, 10-NN on these 91 numbers gets ~85% accuracy (pixels: ~86%) and finds the source
of a one-pixel-shifted copy among its 3 nearest neighbours ~97% of the time (pixel PCA: ~35%).
Candidates are then confirmed on the pixels themselves, trying every shift of up to one pixel.
"""
import hashlib

import numpy as np
import torch
import torch.nn.functional as F


def standardize_each(x):
    """Each sample minus its own mean, divided by its own norm: brightness and scale stop mattering.

    So a test set stored 0..255 still matches its 0..1 train copies. x: (N, ...) float.
    """
    flat = x.reshape(len(x), -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return (flat / (flat.norm(dim=1, keepdim=True) + 1e-8)).reshape(x.shape)


def fourier_features(x, radius=None):
    """(N, C, H, W) float images -> (N, F) unit vectors of low-frequency Fourier magnitudes.

    radius: how many frequencies to keep along each axis (6 for one channel, 4 for colour images).
    """
    N, C, H, W = x.shape
    if radius is None:
        radius = 6 if C == 1 else 4
    radius = max(1, min(radius, H // 2, W // 2))
    x = standardize_each(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    mag = torch.fft.rfft2(x).abs()                                   # (N, C, H, W//2+1)
    low = torch.cat([mag[:, :, :radius + 1, :radius + 1],            # low positive row frequencies
                     mag[:, :, H - radius:, :radius + 1]], dim=2)    # and low negative ones
    f = low.reshape(N, -1).sqrt()                                    # sqrt: flatter, better k-NN
    return f / (f.norm(dim=1, keepdim=True) + 1e-8)


def vector_features(x, mean, std, dims=64, seed=0):
    """(N, D) float rows -> (N, <=dims) unit vectors: z-scored with train stats, randomly projected if wide."""
    z = torch.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
    if z.shape[1] > dims:
        gen = torch.Generator().manual_seed(seed)
        z = z @ torch.randn(z.shape[1], dims, generator=gen)         # (N, dims), keeps angles roughly
    return z / (z.norm(dim=1, keepdim=True) + 1e-8)


def nearest(queries, base, k, same_set=False, chunk=512):
    """Top-k cosine neighbours of each query row in base: (similarities (Q, k), indices (Q, k)).

    Chunked so that memory stays at chunk x len(base) doubles. same_set=True excludes each row itself
    (queries is base), for leave-one-out. In float64: 60k cosines near 1 lie ~1e-6 apart, and float32
    rounding (which BLAS may do differently run to run) reorders the k-th neighbour of a few percent.
    """
    k = min(k, len(base) - int(same_set))
    base_t = base.T.double().contiguous()                            # (F, B)
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        s = queries[start:start + chunk].double() @ base_t           # (chunk, B)
        if same_set:
            rows = torch.arange(s.shape[0])
            s[rows, rows + start] = -2.0                             # below any cosine
        v, i = s.topk(k, dim=1)
        sims.append(v.float())
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _blur(x):
    """3x3 box blur, (P, C, H, W) -> same shape: averages away pixel noise and JPEG-like rounding."""
    P, C, H, W = x.shape
    return F.avg_pool2d(x.reshape(P * C, 1, H, W), 3, 1, 1, count_include_pad=False).reshape(P, C, H, W)


def _correlation(a, b):
    """Pearson correlation of each pair of rows, (P, ...) x (P, ...) -> (P,)."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def pair_similarity(a, b, max_shift=1):
    """Pixel correlation of pairs a[p] ~ b[p], best over shifts of up to max_shift pixels.

    a, b: (P, C, H, W) or (P, D) float. Returns (correlation (P,), shift (P, 2) as (dy, dx) of a
    relative to b). Images are blurred 3x3, then compared on the overlap of the shifted pair (less a
    1-pixel margin, where the blur mixes in what the shift cut off), so a
    copy shifted by one pixel, re-encoded or lightly noised still correlates above NEAR_COPY.
    """
    if a.ndim == 2:
        return _correlation(a, b), torch.zeros(len(a), 2, dtype=torch.long)
    a, b = _blur(a), _blur(b)
    H, W = a.shape[2:]
    shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
    best = torch.full((len(a),), -2.0)
    best_shift = torch.zeros(len(a), dtype=torch.long)
    m = 1                                                            # margin the 3x3 blur smears across
    for s, (dy, dx) in enumerate(shifts):
        c = _correlation(a[:, :, m + max(dy, 0):H - m + min(dy, 0), m + max(dx, 0):W - m + min(dx, 0)],
                         b[:, :, m + max(-dy, 0):H - m + min(-dy, 0), m + max(-dx, 0):W - m + min(-dx, 0)])
        best_shift = torch.where(c > best, s, best_shift)
        best = torch.maximum(best, c)
    return best, torch.tensor(shifts)[best_shift]


def confirmed_pairs(x_query, x_base, candidates, threshold, same_set=False, chunk=4096):
    """Check candidate pairs on the pixels; keep those correlating above threshold.

    candidates: (Q, k) indices into x_base for each query row. Returns a list of
    (query index, base index, correlation, (dy, dx)), best first; with same_set each pair once (i < j).
    """
    Q, k = candidates.shape
    q_idx = torch.arange(Q).repeat_interleave(k)                    # (Q*k,)
    b_idx = candidates.reshape(-1)
    if same_set:
        keep = q_idx != b_idx
        q_idx, b_idx = q_idx[keep], b_idx[keep]
    corr, shift = [], []
    for start in range(0, len(q_idx), chunk):                       # chunks: 4096 pairs of images at a time
        qi, bi = q_idx[start:start + chunk], b_idx[start:start + chunk]
        c, s = pair_similarity(x_query[qi].float(), x_base[bi].float())
        corr.append(c)
        shift.append(s)
    corr, shift = torch.cat(corr), torch.cat(shift)
    found = corr >= threshold
    pairs = {}
    for q, b, c, s in zip(q_idx[found].tolist(), b_idx[found].tolist(), corr[found].tolist(), shift[found].tolist()):
        key = (min(q, b), max(q, b)) if same_set else (q, b)
        pairs[key] = (key[0], key[1], round(c, 5), tuple(s))
    return sorted(pairs.values(), key=lambda p: -p[2])


# ----------------------------------------------------------------------------- exact copies and labels

def row_hashes(x):
    """One digest per sample of its raw bytes (dtype included): equal digests = identical samples."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1).numpy())
    tag = str(flat.dtype).encode()
    return [hashlib.blake2b(row.tobytes() + tag, digest_size=16).digest() for row in flat]


def knn_probabilities(neighbour_labels, num_classes, prior_weight=1.0):
    """(Q, k) labels of each query's neighbours -> (Q, C) class probabilities, smoothed by a flat prior.

    The smoothing keeps every probability above zero, which cleanlab's thresholds need.
    """
    Q, k = neighbour_labels.shape
    votes = torch.zeros(Q, num_classes).scatter_add_(1, neighbour_labels, torch.ones(Q, k))
    return (votes + prior_weight / num_classes) / (k + prior_weight)


def best_permutation(confusion):
    """The label map test->train that explains the most test samples: (C,) array, by Hungarian matching.

    confusion[t, p] = test samples labeled t that a train-fitted classifier calls p.
    """
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(-np.asarray(confusion, dtype=float))
    perm = np.arange(len(confusion))
    perm[rows] = cols
    return perm


# ----------------------------------------------------------------------------- shared, cached searches
# d is audit_data's plain dict: d["train"] / d["test"] hold "x" (N, ...) and "y" (N,); results are
# cached in it, so one 60k x 60k search serves near_duplicates, label_signal and label_issues.

NEIGHBOURS = 10          # k of every k-NN in the audit
FAST_QUERIES = 3000      # train samples queried when the full train x train search does not run


def features(d, split):
    """Unit feature vectors of one split: Fourier magnitudes for images, z-scored rows otherwise."""
    s = d[split]
    if "features" not in s:
        if s["x"].ndim == 4:
            s["features"] = fourier_features(s["x"].float())
        else:
            tr = d["train"]["x"].float()
            s["features"] = vector_features(s["x"].float(), tr.mean(dim=0), tr.std(dim=0) + 1e-8, seed=d["seed"])
    return s["features"]


def train_neighbours(d):
    """Leave-one-out train neighbours: (query indices (Q,), sims (Q, k), indices (Q, k)).

    All train samples when d["full_search"] (~20 s for 60k x 60k on 2 cores), else a seeded random
    subsample of FAST_QUERIES queries.
    """
    f = features(d, "train")
    if d["full_search"]:
        if "train_nn" not in d:
            sims, idx = nearest(f, f, NEIGHBOURS, same_set=True)
            d["train_nn"] = (torch.arange(len(f)), sims, idx)
        return d["train_nn"]
    if "train_nn_sample" not in d:
        rng = np.random.default_rng(d["seed"])
        q = torch.from_numpy(np.sort(rng.choice(len(f), min(len(f), FAST_QUERIES), replace=False)))
        sims, idx = nearest(f[q], f, NEIGHBOURS + 1)
        not_self = torch.argsort((idx == q[:, None]).to(torch.int8), dim=1, stable=True)[:, :NEIGHBOURS]
        d["train_nn_sample"] = (q, sims.gather(1, not_self), idx.gather(1, not_self))
    return d["train_nn_sample"]


def test_neighbours(d):
    """Train neighbours of every test sample: (sims (T, k), indices (T, k)); ~4 s for 10k x 60k."""
    if "test_nn" not in d:
        d["test_nn"] = nearest(features(d, "test"), features(d, "train"), NEIGHBOURS)
    return d["test_nn"]


def hashes(d, split):
    if "hashes" not in d[split]:
        d[split]["hashes"] = row_hashes(d[split]["x"])
    return d[split]["hashes"]


# ----------------------------------------------------------------------------- checks on copies

STAGE1 = "Return to stage 1 (become one with the data)"
CANDIDATES = 3           # nearest neighbours of each sample confirmed on the pixels
NEAR_COPY = 0.999        # pixel correlation (blurred, best 1-pixel shift) above which two samples are copies
# Rates (copies / samples) on the real, clean Fashion-MNIST at NEAR_COPY; errors need far more:
CLEAN_NEAR_DUP_RATE = 0.00077   # 46 of 60k train images (52 pairs, none with different labels)
CLEAN_NEAR_LEAK_RATE = 0.0014    # 14 of 10k test images have a near-copy in train (0 exact; 1 of them mirrored)


# Copies at most this multiple of the clean rate are reported as a note, not a problem: full clean
# Fashion-MNIST sits at 1.0x (46 of 60k, 13 of 10k); 1.25 leaves room for sampling (sqrt(46) is 15% of
# 46). Planted duplication is 5-500x the clean rate (split_twice_without_seed: 73% of test).
CLEAN_SLACK = 1.25


def copy_severity(count, total, clean_rate, floor):
    """'error' when copies are far above what clean data shows (and not a handful), None (a note) when
    they are no more than clean data shows, else 'warning'."""
    if count <= CLEAN_SLACK * clean_rate * total:
        return None
    return "error" if count >= max(floor, 5 * clean_rate * total + 3) else "warning"


def pairs_table(pairs, y_a, y_b):
    """[(i, j, corr, shift)] -> dict of lists for notebooks, with both labels."""
    return {"i": [p[0] for p in pairs], "j": [p[1] for p in pairs], "similarity": [p[2] for p in pairs],
            "shift": [p[3] for p in pairs], "label_i": [int(y_a[p[0]]) for p in pairs],
            "label_j": [int(y_b[p[1]]) for p in pairs]}


def check_duplicates(d, report):
    """Byte-identical samples within each split, and the ones among them with different labels."""
    out = {}
    for split in [s for s in ("train", "test") if d[s] is not None]:
        y, first, pairs = d[split]["y"], {}, []
        for i, h in enumerate(hashes(d, split)):
            if h in first:
                pairs.append((first[h], i, 1.0, (0, 0)))
            else:
                first[h] = i
        out[split] = table = pairs_table(pairs, y, y)
        conflicts = sum(a != b for a, b in zip(table["label_i"], table["label_j"]))
        n = len(y)
        if pairs:
            # clean Fashion-MNIST: 0 exact duplicates in train and in test.
            severity = "error" if len(pairs) >= max(3, 0.01 * n) or conflicts >= max(2, 0.001 * n) else "warning"
            report.add("duplicates", severity, f"{split}: {len(pairs)} samples ({pct(len(pairs), n)}) are exact "
                       f"copies of another; {conflicts} of these pairs have different labels.",
                       "The same file twice (concatenated sources, oversampling before the split); copies with "
                       f"different labels are label noise. {STAGE1}: deduplicate before splitting.",
                       where=f"{split} pairs {[(a, b) for a, b, _, _ in pairs[:5]]}")
    report.details["duplicates"] = out


def check_near_duplicates(d, report):
    """Train samples that are near-copies of another (shifted, re-encoded, noised), via the shared search."""
    x, y = d["train"]["x"], d["train"]["y"]
    if x.ndim != 4:
        return "needs images (N, C, H, W)"
    _, _, idx = train_neighbours(d)                                   # all of train: full budget only
    pairs = confirmed_pairs(x, x, idx[:, :CANDIDATES], NEAR_COPY, same_set=True)
    table = pairs_table(pairs, y, y)
    conflicts = [k for k, (a, b) in enumerate(zip(table["label_i"], table["label_j"])) if a != b]
    copies = len({p[1] for p in pairs})                              # samples that could be dropped
    n = len(y)
    report.details["near_duplicates"] = dict(table, copies=copies, conflicting=conflicts, threshold=NEAR_COPY)
    if not pairs:
        return None
    severity = copy_severity(copies, n, CLEAN_NEAR_DUP_RATE, floor=max(5, 0.01 * n))
    if len(conflicts) >= max(5, 0.01 * n):
        severity = "error"
    elif conflicts and severity is None:
        severity = "warning"                                         # clean data has no conflicting pair
    said = (f"train: {copies} samples ({pct(copies, n)}) are near-copies of another (pixel correlation >= "
            f"{NEAR_COPY} up to a 1-pixel shift); {len(conflicts)} of {len(pairs)} pairs have different labels")
    if severity is None:
        report.notes.append(("near_duplicates", f"{said}, as in clean data (clean Fashion-MNIST: "
                             f"{pct(CLEAN_NEAR_DUP_RATE * n, n)}, none with different labels): the same item "
                             "photographed twice; pairs in report.details['near_duplicates']."))
        return None
    report.add("near_duplicates", severity, f"{said} (clean Fashion-MNIST: {pct(CLEAN_NEAR_DUP_RATE * n, n)}).",
               "Augmented copies saved into the dataset, the same item photographed twice, or oversampling; "
               f"copies with different labels are label noise. {STAGE1}: look at the pairs, deduplicate.",
               where=f"train pairs {[(a, b) for a, b, _, _ in pairs[:5]]}")


def check_leakage(d, report):
    """Test samples byte-identical to a train sample: the model is tested on what it memorized."""
    first = {h: i for i, h in reversed(list(enumerate(hashes(d, "train"))))}
    pairs = [(t, first[h], 1.0, (0, 0)) for t, h in enumerate(hashes(d, "test")) if h in first]
    report.details["leakage"] = pairs_table(pairs, d["test"]["y"], d["train"]["y"])
    if pairs:
        n = len(d["test"]["y"])
        # clean Fashion-MNIST: 0 of 10k test images are byte-identical to a train image.
        severity = "error" if len(pairs) >= max(2, 0.005 * n) else "warning"
        report.add("leakage", severity, f"{len(pairs)} of {n} test samples ({pct(len(pairs), n)}) are exact "
                   "copies of train samples.",
                   "The split was made after deduplication failed, or test was built from train. Test accuracy "
                   f"overstates real accuracy. {STAGE1}: remove them from test (or from train).",
                   where=f"(test, train) {[(a, b) for a, b, _, _ in pairs[:5]]}")


def check_near_leakage(d, report):
    """Test samples that are near-copies of train samples (shifted by a pixel, re-encoded, noised) or of
    their mirror images: a horizontal flip is the most common augmentation, and augmented copies that
    reach the test split are leakage too."""
    x_te, x_tr = d["test"]["x"], d["train"]["x"]
    if x_te.ndim != 4:
        return "needs images (N, C, H, W)"
    _, idx = test_neighbours(d)
    pairs = confirmed_pairs(x_te, x_tr, idx[:, :CANDIDATES], NEAR_COPY)
    mirrored = x_te.flip(-1)
    _, idx = nearest(fourier_features(mirrored.float()), features(d, "train"), CANDIDATES)
    pairs += confirmed_pairs(mirrored, x_tr, idx, NEAR_COPY)
    best = {}
    for p in sorted(pairs, key=lambda p: -p[2]):                     # one train source per test sample
        best.setdefault(p[0], p)
    pairs = sorted(best.values(), key=lambda p: -p[2])
    n = len(x_te)
    report.details["near_leakage"] = dict(pairs_table(pairs, d["test"]["y"], d["train"]["y"]), threshold=NEAR_COPY)
    severity = copy_severity(len(pairs), n, CLEAN_NEAR_LEAK_RATE, floor=max(3, 0.01 * n))
    if pairs and severity is None:
        report.notes.append(("near_leakage", f"{len(pairs)} of {n} test samples ({pct(len(pairs), n)}) are "
                             f"near-copies of train samples, as in clean data (clean Fashion-MNIST: "
                             f"{pct(CLEAN_NEAR_LEAK_RATE * n, n)}): the same item in both splits; pairs in "
                             "report.details['near_leakage']."))
    elif pairs:
        report.add("near_leakage", severity, f"{len(pairs)} of {n} test samples ({pct(len(pairs), n)}) are "
                   f"near-copies of train samples or of their mirror images (pixel correlation >= {NEAR_COPY} up "
                   f"to a 1-pixel shift; "
                   f"clean Fashion-MNIST: {pct(CLEAN_NEAR_LEAK_RATE * n, n)}).",
                   "Test built from augmented (flipped, shifted) or re-encoded train images, or the same item in both splits. Test "
                   f"accuracy overstates real accuracy. {STAGE1}: split by item, then deduplicate across splits.",
                   where=f"(test, train) {[(a, b) for a, b, _, _ in pairs[:5]]}")


def pct(count, total):
    return f"{100 * count / max(total, 1):.2g}%"
