"""Plots for the recipe's "look at your data / look at your curves" steps. Plain data in, a figure out.

Each function takes tensors, arrays or a fit() history and returns the matplotlib Axes (one panel)
or Figure (several panels); none calls plt.show(), so they work headless (Agg) and in notebooks.
In a notebook, end the line with `;` to avoid showing a returned Figure twice.
"""
import math

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import seaborn as sns
import torch


def as_display_image(image, rescale=True):
    """One image (C, H, W) as a numpy array for imshow: (H, W) for gray, (H, W, 3) for color, in 0..1.

    uint8 is divided by 255; float images (e.g. normalized) are rescaled to their own min..max
    unless rescale=False (then they must already be on the 0..1 scale).
    """
    x = torch.as_tensor(image).detach().cpu()
    if x.ndim == 2:
        x = x[None]                                   # (1, H, W)
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif not rescale:
        x = x.float().clamp(0, 1)
    else:
        x = x.float()
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    x = x.permute(1, 2, 0).numpy()                    # (H, W, C)
    return x[:, :, 0] if x.shape[2] == 1 else x


def _class_name(classes, label):
    return classes[label] if classes is not None else str(label)


def class_balance(labels_by_split, classes, normalize=False):
    """Grouped bars: images per class for each split (train, val, test...). normalize=True: fractions."""
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(classes)), 3.5))
    width = 0.8 / len(labels_by_split)
    for i, (name, labels) in enumerate(labels_by_split.items()):
        counts = np.bincount(np.asarray(torch.as_tensor(labels).cpu()), minlength=len(classes))[:len(classes)]
        heights = counts / max(1, counts.sum()) if normalize else counts
        ax.bar(np.arange(len(classes)) + (i - (len(labels_by_split) - 1) / 2) * width, heights, width,
               label=f"{name} ({counts.sum()})")
    ax.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    ax.set_ylabel("fraction of split" if normalize else "images")
    ax.set_title("class balance")
    ax.legend()
    fig.tight_layout()
    return ax


def _pixel_histogram(images):
    """(bin centers, density) of pixel values: exact 256 bins for uint8, 64 bins otherwise."""
    x = torch.as_tensor(images).detach().cpu()
    if x.dtype == torch.uint8:
        counts = torch.bincount(x.flatten(), minlength=256).double()
        return np.arange(256), (counts / counts.sum()).numpy()
    x = x.float().flatten()
    counts = torch.histc(x, bins=64, min=x.min().item(), max=x.max().item()).double()
    edges = np.linspace(x.min().item(), x.max().item(), 65)
    return (edges[:-1] + edges[1:]) / 2, (counts / counts.sum()).numpy()


def pixel_stats(images_by_split):
    """Histogram of pixel values per split, with mean and std in the legend. Why: a split scaled
    differently (0..1 vs 0..255, inverted, normalized twice) shows up here before it costs accuracy."""
    if torch.is_tensor(images_by_split) or isinstance(images_by_split, np.ndarray):
        images_by_split = {"images": images_by_split}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, images in images_by_split.items():
        centers, density = _pixel_histogram(images)
        x = torch.as_tensor(images).float()
        ax.plot(centers, density, label=f"{name}: mean {x.mean():.3g}, std {x.std():.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("fraction of pixels")
    ax.set_title("pixel statistics")
    ax.legend()
    fig.tight_layout()
    return ax


def mean_images_per_class(images, labels, classes):
    """Top row: the mean image of each class; bottom row: the per-pixel std. A class whose mean looks
    unlike the rest (shifted, blank, another class's shape) points at a data bug."""
    images, labels = torch.as_tensor(images).cpu(), torch.as_tensor(labels).cpu()
    scale = 255.0 if images.dtype == torch.uint8 else None  # uint8: show on the absolute 0..1 scale
    fig, axes = plt.subplots(2, len(classes), figsize=(1.2 * len(classes), 2.8), squeeze=False)
    for c, name in enumerate(classes):
        members = images[labels == c].float()          # (n_c, C, H, W)
        for row, stat in enumerate(("mean", "std")):
            ax = axes[row, c]
            ax.axis("off")
            if len(members) == 0:
                ax.set_title(f"{name}\n(none)", fontsize=8)
                continue
            image = members.mean(0) if stat == "mean" else members.std(0, unbiased=False)  # (C, H, W)
            if scale:
                image = image / scale
            ax.imshow(as_display_image(image, rescale=scale is None), cmap="gray", vmin=0, vmax=1)
            if row == 0:
                ax.set_title(f"{name}\n(n={len(members)})", fontsize=8)
    axes[0, 0].text(-0.3, 0.5, "mean", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.3, 0.5, "std", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    return fig


def smooth(values, weight=0.9):
    """Exponential moving average (TensorBoard's smoothing); nan/inf values are skipped."""
    out, avg, seen = [], 0.0, 0
    for v in values:
        if math.isfinite(v):
            avg, seen = weight * avg + (1 - weight) * v, seen + 1
        out.append(avg / (1 - weight ** seen) if seen else math.nan)  # debiased like Adam's moments
    return out


def learning_curves(history):
    """Loss (per step and per epoch) and accuracy (per epoch) from a fit() history, side by side."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(history["step"], history["loss"], color="0.75", lw=0.8, label="loss per step")
    ax_loss.plot(history["step"], smooth(history["loss"]), color="C0", label="smoothed")
    ends = history["epoch_step"]
    if any(math.isfinite(v) for v in history["train_loss"]):
        ax_loss.plot(ends, history["train_loss"], "s", color="C0", label="train loss (epoch mean)")
    if any(math.isfinite(v) for v in history["val_loss"]):
        ax_loss.plot(ends, history["val_loss"], "o-", color="C1", label="val loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, color in (("train_acc", "C0"), ("val_acc", "C1")):
        if any(math.isfinite(v) for v in history[key]):
            ax_acc.plot(history["epoch"], history[key], "o-", color=color, label=key.replace("_", " "))
    ax_acc.set_xlabel("epoch")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_ylabel("accuracy")
    if ax_acc.lines:
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "no accuracy recorded", ha="center", va="center", transform=ax_acc.transAxes)
    if history.get("stopped"):
        fig.suptitle(history["stopped"], fontsize=9)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, classes, normalize=True):
    """Heatmap of true class (rows) vs predicted class (columns); normalize=True: each row sums to 1."""
    y_true = np.asarray(torch.as_tensor(y_true).cpu()).astype(np.int64)
    y_pred = np.asarray(torch.as_tensor(y_pred).cpu()).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}: pass one prediction "
                         "per label (class indices, e.g. probs.argmax(1)).")
    k = len(classes)
    counts = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # (true, predicted)
    matrix = counts / np.maximum(1, counts.sum(1, keepdims=True)) if normalize else counts
    fig, ax = plt.subplots(figsize=(0.6 * k + 2, 0.5 * k + 1.5))
    sns.heatmap(matrix, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(counts) / max(1, counts.sum()):.3f})")
    fig.tight_layout()
    return ax


def image_grid(images, labels=None, classes=None, ncols=8, predicted=None, titles=None, title_colors=None):
    """Images (N, C, H, W) in a grid, titled with their label, or "prediction (true: label)" in red
    when wrong, or with your own `titles` (one string per image, colored by `title_colors` if given).
    Drawn as one mosaic: fast for 100s."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid got no images.")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    tiles = [as_display_image(images[i]) for i in range(n)]   # each (H, W) or (H, W, 3), 0..1
    H, W = tiles[0].shape[:2]
    top = H // 3 if predicted is not None else H // 4        # pixels above each tile for its caption
    if titles is not None:                                   # about H/6 pixels per line of 7-point text
        top = max(top, math.ceil(max(t.count("\n") + 1 for t in titles) * H / 6))
    mosaic = np.ones((nrows * (top + H), ncols * (W + 2)) + tiles[0].shape[2:])  # white background
    inches = 1.3 / (W + 2)                                    # each tile about 1.3 inches wide
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] * inches, mosaic.shape[0] * inches))
    for i, tile in enumerate(tiles):
        row, col = divmod(i, ncols)
        y, x = row * (top + H) + top, col * (W + 2) + 1
        mosaic[y:y + H, x:x + W] = tile
        title, color = "", "black"
        if titles is not None:
            title = titles[i]
            color = title_colors[i] if title_colors is not None else color
        elif labels is not None and predicted is not None:
            title = f"{_class_name(classes, int(predicted[i]))}\n(true: {_class_name(classes, int(labels[i]))})"
            color = "red" if int(predicted[i]) != int(labels[i]) else "black"
        elif labels is not None:
            title = _class_name(classes, int(labels[i]))
        ax.text(x + W / 2, y - 1, title, ha="center", va="bottom", fontsize=7, color=color)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    return ax


def reliability_diagrams(tables):
    """One reliability diagram per {name: calibration.reliability(...) table}: accuracy vs confidence
    per bin (bars) against the diagonal of perfect calibration; bars below it are overconfidence."""
    fig, axes = plt.subplots(1, len(tables), figsize=(3.6 * len(tables), 3.4), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items()):
        width = 1 / table["n_bins"]
        centers = (np.arange(table["n_bins"]) + 0.5) * width
        used = np.asarray(table["count"]) > 0
        ax.bar(centers[used], np.asarray(table["accuracy"])[used], width=width * 0.9, color="C0", label="accuracy")
        ax.plot(np.asarray(table["confidence"])[used], np.asarray(table["confidence"])[used], "o", color="C3",
                ms=3, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{name}\nECE {table['ece']:.4f}")
    axes[0][0].set_ylabel("accuracy in bin")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- error analysis

def _error_title(row, classes):
    return (f"{_class_name(classes, int(row.predicted))} {row.confidence:.2f}\n"
            f"true: {_class_name(classes, int(row.true))}\nloss {row.loss:.2f}")


def top_losses(table, images, classes=None, k=16, ncols=8):
    """The k highest-loss examples of an errors.predictions_table (or of its top_losses rows): each
    image titled "predicted confidence / true: class / loss", red when wrong. images: the split as
    stored (e.g. val.images, uint8), indexed by the table's "index" column."""
    from .errors import rank_losses
    rows = rank_losses(table, k)
    if rows["index"].max() >= len(images):
        raise ValueError(f"the table refers to image {rows['index'].max()} but images holds {len(images)}: "
                         "pass the images of the split the table was computed on, in the same order.")
    ax = image_grid(torch.as_tensor(images)[rows["index"].tolist()], ncols=ncols,
                    titles=[_error_title(r, classes) for r in rows.itertuples(index=False)],
                    title_colors=["red" if r.true != r.predicted else "black" for r in rows.itertuples(index=False)])
    ax.set_title(f"top {len(rows)} losses of {len(table)}", fontsize=9)
    return ax.figure


def confused_pairs(table, images, classes=None, n_pairs=4, per_pair=4):
    """The most confused class pairs side by side, one row each: on the left, images of class A the
    model took for B (highest loss first); on the right, images of B it gets right (most confident),
    so you can see what it thinks B looks like. Is it a label error, an ambiguous image, or a cue
    the model lacks?"""
    from .errors import confused_pairs as pairs_of
    images = torch.as_tensor(images)
    pairs = pairs_of(table).head(n_pairs)
    if pairs.empty:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no errors: no confused pairs", ha="center", va="center")
        return fig
    fig, axes = plt.subplots(len(pairs), 2 * per_pair + 1, figsize=(1.1 * (2 * per_pair + 1), 1.35 * len(pairs)),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * per_pair + [0.3] + [1] * per_pair})
    for ax in axes.flat:
        ax.axis("off")
    for r, pair in enumerate(pairs.itertuples(index=False)):
        a, b = _class_name(classes, int(pair.true)), _class_name(classes, int(pair.predicted))
        mistaken = table[(table["true"] == pair.true) & (table["predicted"] == pair.predicted)]
        mistaken = mistaken.sort_values(["loss", "index"], ascending=[False, True], kind="stable").head(per_pair)
        right = table[(table["true"] == pair.predicted) & (table["predicted"] == pair.predicted)]
        right = right.sort_values(["confidence", "index"], ascending=[False, True], kind="stable").head(per_pair)
        for j, row in enumerate(mistaken.itertuples(index=False)):
            axes[r, j].imshow(as_display_image(images[int(row.index)]), cmap="gray", vmin=0, vmax=1)
            axes[r, j].set_title(f"#{row.index} p={row.confidence:.2f}", fontsize=7, color="red")
        for j, row in enumerate(right.itertuples(index=False)):
            axes[r, per_pair + 1 + j].imshow(as_display_image(images[int(row.index)]), cmap="gray", vmin=0, vmax=1)
            axes[r, per_pair + 1 + j].set_title(f"#{row.index} p={row.confidence:.2f}", fontsize=7)
        axes[r, 0].text(-0.15, 0.5, f"{a} taken\nfor {b}\n({pair.count}x)", transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=8)
        axes[r, -1].text(1.1, 0.5, f"{b},\nright", transform=axes[r, -1].transAxes, ha="left", va="center",
                         fontsize=8)
    fig.suptitle("most confused pairs: the errors (left) beside the class they were taken for (right)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- tuning progress

def best_so_far(values, patience=10, noise=0.0, direction="maximize", ax=None):
    """Diminishing returns of tuning: every trial's value (dots) and the best so far (a step line)
    against the number of trials, with the point where progress.when_to_stop says stop (a dashed
    line) and what the trials after it still added."""
    from .progress import when_to_stop
    result = when_to_stop(values, patience, noise, direction)
    trials = np.arange(1, len(result["best"]) + 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(trials, [float(v) for v in values], "o", color="C0", alpha=0.4, ms=4, label="trial")
    ax.step(trials, result["best"], where="post", color="C1", label="best so far")
    stop = result["stop_after"]
    if stop:
        ax.axvline(stop, color="C3", ls="--", lw=1)
        ax.plot(stop, result["best"][stop - 1], "o", color="C3", ms=8, mfc="none",
                label=f"stop here: trial {stop}; the next {len(trials) - stop} added {result['gain_after_stop']:.3g}")
    else:
        ax.text(0.98, 0.04, f"still improving after {len(trials)} trials", transform=ax.transAxes, ha="right",
                fontsize=8, color="C3")
    ax.set(xlabel="trials run", ylabel="value", title=result["rule"])
    ax.title.set_fontsize(9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=8)
    ax.figure.tight_layout()
    return ax
