"""The ideas behind tuning, small enough to read: log scales, random beats grid, the LR range test.

    space = {"lr": (1e-5, 1e-1, "log"), "wd": (1e-6, 1e-2, "log")}
    random_search_points(16, space, seed=0)    # 16 points, 16 different learning rates
    grid_search_points(16, space)              # 16 points, only 4 different learning rates
    lr_range_test(model, loader, nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1))

Random search wins because usually one axis matters (the learning rate) and the others barely do:
a grid spends its budget repeating the same few learning rates (Bergstra & Bengio, 2012).
The LR range test (Smith, 2017) finds a good learning rate in one short run instead of a search.
"""
import copy
import math

import matplotlib.pyplot as plt
import numpy as np

from .rng import preserved_rng
from .train import model_device


# ----------------------------------------------------------------------------- search spaces

def _check_space(space):
    """Each axis is (low, high) or (low, high, "log"|"linear"); log axes need 0 < low."""
    if not space:
        raise ValueError('space is empty: pass e.g. {"lr": (1e-5, 1e-1, "log"), "wd": (1e-6, 1e-2, "log")}.')
    for name, axis in space.items():
        low, high, scale = (*axis, "linear")[:3]
        if scale not in ("log", "linear") or not low < high or (scale == "log" and low <= 0):
            raise ValueError(f"space[{name!r}]={axis!r}: use (low, high) or (low, high, 'log'|'linear') "
                             "with low < high, and low > 0 on a log axis.")
    return {name: (*axis, "linear")[:3] for name, axis in space.items()}


def log_uniform(low, high, size, rng):
    """`size` numbers spread evenly over the decades between low and high: as many in 1e-5..1e-4 as
    in 1e-2..1e-1. (Uniform in [1e-5, 1e-1] would put 90% of them above 1e-2.)"""
    if not 0 < low < high:
        raise ValueError(f"low={low}, high={high}: a log-uniform range needs 0 < low < high.")
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def random_search_points(n, space, seed=0):
    """n points drawn independently: each axis gets n different values."""
    space, rng = _check_space(space), np.random.default_rng(seed)
    columns = {name: log_uniform(low, high, n, rng) if scale == "log" else rng.uniform(low, high, n)
               for name, (low, high, scale) in space.items()}
    return [{name: float(values[i]) for name, values in columns.items()} for i in range(n)]


def grid_search_points(n, space):
    """The largest full grid within a budget of n points: k = floor(n ** (1/d)) values per axis,
    k**d points. With d=2 and n=16: 4 values per axis, so only 4 different learning rates."""
    space = _check_space(space)
    k = int(math.floor(n ** (1 / len(space)) + 1e-9))  # + 1e-9: 16 ** 0.5 must give 4, not 3.999
    if k < 1:
        raise ValueError(f"n={n}: a grid needs at least 1 point.")
    axes = [np.geomspace(low, high, k) if scale == "log" else np.linspace(low, high, k)
            for low, high, scale in space.values()]
    mesh = np.meshgrid(*axes, indexing="ij")           # d arrays of shape (k, ..., k)
    columns = [m.ravel() for m in mesh]                # d arrays of k**d values
    return [{name: float(col[i]) for name, col in zip(space, columns)} for i in range(k ** len(space))]


def coverage_of_important_axis(points, axis):
    """How many different values of `axis` the points try: all that matters if only that axis does."""
    if any(axis not in p for p in points):
        raise ValueError(f"axis={axis!r} is not in every point: the points have {sorted(points[0])}.")
    return len(np.unique([p[axis] for p in points]))


def plot_random_vs_grid(random_points, grid_points, x="lr", y="wd", log=True):
    """The Bergstra & Bengio picture: both layouts, with the values each tries on x drawn as ticks
    below the axis (the projection onto the important axis)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
    for ax, points, title in ((axes[0], grid_points, "grid"), (axes[1], random_points, "random")):
        xs, ys = [p[x] for p in points], [p[y] for p in points]
        ax.scatter(xs, ys)
        ax.plot(xs, [0.0] * len(xs), "|", color="C3", markersize=20, transform=ax.get_xaxis_transform())
        ax.set(title=f"{title}: {len(points)} runs, {coverage_of_important_axis(points, x)} values of {x}",
               xlabel=x, ylabel=y)
        if log:
            ax.set(xscale="log", yscale="log")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- LR range test

def _batches_forever(loader):
    """Cycle through the loader: the test may want more steps than one epoch has batches."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("loader yielded no batches: pass a loader over a non-empty dataset.")


def lr_range_test(model, loader, loss_fn, make_optimizer, start_lr=1e-6, end_lr=1.0, steps=100,
                  smooth=0.05, diverge_factor=4.0):
    """Leslie Smith's LR range test: train a copy of the model for `steps` steps while the learning
    rate grows exponentially from start_lr to end_lr; the loss falls, flattens, then blows up.

    make_optimizer(params) -> optimizer, e.g. lambda p: torch.optim.AdamW(p, weight_decay=1e-4);
    its lr is overwritten every step. smooth: weight of each new loss in the moving average.
    Stops when the smoothed loss exceeds diverge_factor x its minimum (or is not finite).
    Your model, your loader's epoch count and the python/numpy/torch random states are left as
    they were, so running the test does not change the training that follows.

    Returns a dict: lrs, losses (raw), smoothed (per step done), min_loss_lr, steepest_lr,
    suggested_lr (min_loss_lr / 10: a rate still clearly on the falling part), stopped (in words).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"start_lr={start_lr}, end_lr={end_lr}: need 0 < start_lr < end_lr.")
    if steps < 5:
        raise ValueError(f"steps={steps}: use at least 5 steps (100 is typical).")
    if not 0 < smooth <= 1:
        raise ValueError(f"smooth={smooth}: the weight of each new loss must be in (0, 1].")
    epoch = getattr(loader, "epoch", None)  # BatchLoader counts epochs
    try:
        with preserved_rng():
            trial = copy.deepcopy(model).train()
            optimizer = make_optimizer(trial.parameters())
            device = model_device(trial)
            lrs, losses, smoothed, stopped = [], [], [], f"reached end_lr={end_lr:g}"
            average = 0.0
            for step, (x, y) in zip(range(steps), _batches_forever(loader)):
                lr = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(trial(x.to(device)), y.to(device))
                loss.backward()
                optimizer.step()
                average = (1 - smooth) * average + smooth * loss.item()
                lrs.append(lr)
                losses.append(loss.item())
                smoothed.append(average / (1 - (1 - smooth) ** (step + 1)))  # bias-corrected: no start at 0
                if not math.isfinite(smoothed[-1]) or smoothed[-1] > diverge_factor * min(smoothed):
                    stopped = f"diverged at lr={lr:.3g} (step {step})"
                    break
    finally:
        if epoch is not None:
            loader.epoch = epoch
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "stopped": stopped,
            **suggest_lr(lrs, smoothed, start_lr)}


def suggest_lr(lrs, smoothed, start_lr):
    """Two rules of thumb on the smoothed curve: a tenth of the lr at its minimum, and the lr where
    it falls fastest (per decade). The first is steadier; the second is often close to it."""
    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if len(finite) < 3:
        raise ValueError(f"the loss diverged after {len(finite)} steps: lower start_lr (now {start_lr:g}).")
    lowest = min(finite, key=lambda i: smoothed[i])
    steepest = lowest
    if lowest >= 2:  # d loss / d decade at the points between the start and the minimum (not the ends)
        slopes = np.gradient(np.array(smoothed[:lowest + 1]), np.log10(lrs[:lowest + 1]))
        steepest = 1 + int(np.argmin(slopes[1:-1]))
    return {"min_loss_lr": float(lrs[lowest]), "steepest_lr": float(lrs[steepest]),
            "suggested_lr": float(max(lrs[lowest] / 10, start_lr))}


def plot_lr_range_test(result, ax=None):
    """Loss against learning rate (log axis), raw and smoothed, with the suggested rate marked."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    ax.plot(result["lrs"], result["losses"], alpha=0.3, label="loss")
    ax.plot(result["lrs"], result["smoothed"], label="smoothed")
    ax.axvline(result["suggested_lr"], color="C2", linestyle="--",
               label=f"suggested {result['suggested_lr']:.2g} (min / 10)")
    ax.axvline(result["steepest_lr"], color="C3", linestyle=":", label=f"steepest {result['steepest_lr']:.2g}")
    low = min(result["smoothed"])
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=f"LR range test: {result['stopped']}",
           ylim=(None, low + 2 * (result["smoothed"][0] - low) + 1e-12))
    ax.legend(loc="best")
    return ax
