"""Interactive views for looking at data and at training, that still say something when not rendered.

Each function returns a Panel: an ipywidgets VBox that also carries a one-line text summary and a
PNG of its state. JupyterLab shows the live widget; where no widget frontend runs (nbval, nbconvert,
GitHub) the saved output is that summary and PNG, so a headless run records something deterministic
and meaningful. static=True returns just the matplotlib figure instead of a widget.

    rk.widgets.data_browser(train.images, train.labels, train.classes, findings={"near duplicates": pairs})
    rk.widgets.batch_viewer(loader, train.classes)                  # the tensors that enter the model
    rk.widgets.error_browser(rk.errors.predictions_table(model, val_loader, classes=val.classes),
                             val.images, val.classes)               # what the model gets most wrong
    dash = rk.widgets.live_loss(); display(dash); fit(..., callbacks=[dash.callback])
"""
import base64
import io
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image as PILImage

from .plots import as_display_image, image_grid, smooth


class Panel(widgets.VBox):
    """A VBox with a text summary and a PNG of its state for frontends without widgets.
    summary: () -> str; render_png: () -> PNG bytes or None; callback: a fit() callback (live panels)."""

    def __init__(self, children, summary, render_png, callback=None, **kwargs):
        super().__init__(children, **kwargs)
        self.summary, self.render_png, self.callback = summary, render_png, callback

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)  # the widget view (a live frontend prefers it)
        bundle["text/plain"] = self.summary()
        png = self.render_png()
        if png:
            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        return bundle


def figure_png(fig, dpi=72):
    """PNG bytes of a matplotlib figure, then close it (so a notebook does not show it a second time)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def image_png(image, scale=3):
    """PNG bytes of one image (C, H, W), enlarged `scale` times with nearest neighbour (sharp pixels)."""
    array = (as_display_image(image) * 255).round().astype(np.uint8)  # (H, W) or (H, W, 3)
    picture = PILImage.fromarray(array)
    picture = picture.resize((picture.width * scale, picture.height * scale), PILImage.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _tile_grid(n, ncols, css_class):
    """A GridBox of n (image, caption) tiles; returns the grid and the lists of images and captions."""
    images = [widgets.Image(format="png", layout=widgets.Layout(width="84px", height="84px"))  # same size
              for _ in range(n)]
    captions = [widgets.Label(layout=widgets.Layout(width="auto")) for _ in range(n)]
    tiles = [widgets.VBox([image, caption]) for image, caption in zip(images, captions)]
    grid = widgets.GridBox(tiles, layout=widgets.Layout(grid_template_columns=f"repeat({ncols}, auto)"))
    grid.add_class(css_class)
    return grid, images, captions


def _show_tiles(images, captions, pictures, texts):
    """Fill the first len(pictures) tiles, blank the rest (the last page is often shorter)."""
    for k, (image, caption) in enumerate(zip(images, captions)):
        image.value = pictures[k] if k < len(pictures) else b""
        caption.value = texts[k] if k < len(texts) else ""


# ----------------------------------------------------------------------------- data browser

def browse_order(labels, sort="index", class_filter=None, brightness=None, findings=None, order=None):
    """What the data browser shows, in order: a list of (image index, note) pairs.

    sort: "index", "given order" (`order`), "darkest first", "brightest first" (by `brightness`), or
    "finding: NAME" for findings[NAME], a ranked list of indices or of (i, j) pairs (shown side by side).
    class_filter: a class index, or None for all; a pair is kept when either image is of that class.
    """
    labels = torch.as_tensor(labels).tolist()
    if sort == "index":
        items = range(len(labels))
    elif sort == "given order":
        items = order
    elif sort in ("darkest first", "brightest first"):
        key = torch.as_tensor(brightness) * (1 if sort == "darkest first" else -1)
        items = torch.argsort(key, stable=True).tolist()
    elif sort.startswith("finding: ") and sort[len("finding: "):] in (findings or {}):
        items = findings[sort[len("finding: "):]]
    else:
        raise ValueError(f"sort={sort!r}: use 'index', 'given order', 'darkest first', 'brightest first' "
                         f"or 'finding: NAME' with NAME in findings ({sorted(findings or {})}).")
    shown = []
    for rank, item in enumerate(items, start=1):
        members = [int(i) for i in item] if np.ndim(item) else [int(item)]  # a pair (i, j) or one index
        if class_filter is not None and all(labels[i] != class_filter for i in members):
            continue
        note = "" if sort != "given order" and not sort.startswith("finding: ") else \
            (f"pair {rank}" if len(members) > 1 else f"rank {rank}")
        shown += [(i, note) for i in members]
    return shown


def data_browser(images, labels, classes, per_page=64, order=None, findings=None, ncols=8, static=False):
    """Page through a dataset: filter by class, sort by index, brightness or audit findings.

    order: indices to show first (e.g. a ranking); findings: {name: [index, ...] or [(i, j), ...]}.
    Opens on `order` if given, else on the first finding, else in index order.
    """
    images, labels = torch.as_tensor(images).cpu(), torch.as_tensor(labels).cpu()
    if len(images) != len(labels):
        raise ValueError(f"images has {len(images)} items but labels has {len(labels)}.")
    if per_page % 2 or ncols % 2:
        raise ValueError(f"per_page={per_page}, ncols={ncols}: use even numbers, so pairs share a row.")
    findings = dict(findings or {})
    brightness = images.flatten(1).sum(1, dtype=torch.int64)  # (N,) total intensity: sorts like the mean
    first = "given order" if order is not None else (f"finding: {next(iter(findings))}" if findings else "index")
    state = {"sort": first, "class": None, "page": 0}  # open on what the caller asked to see

    def update_view():
        state["view"] = browse_order(labels, state["sort"], state["class"], brightness, findings, order)
        state["pages"] = max(1, math.ceil(len(state["view"]) / per_page))

    def page_items():
        return state["view"][state["page"] * per_page:(state["page"] + 1) * per_page]

    def caption(i, note):
        return f"#{i} {classes[int(labels[i])]}" + (f" · {note}" if note else "")

    def summary():
        chosen = "all classes" if state["class"] is None else classes[state["class"]]
        return (f"data browser: {len(state['view'])} of {len(labels)} images ({chosen}), sorted by "
                f"{state['sort']}, page {state['page'] + 1} / {state['pages']}")

    def figure():
        items = page_items()
        if not items:  # e.g. a finding with no image of the chosen class
            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no images match", ha="center", va="center")
            return fig
        return image_grid(images[[i for i, _ in items]], titles=[caption(i, note) for i, note in items],
                          ncols=ncols).figure

    update_view()
    if static:
        return figure()
    class_menu = widgets.Dropdown(options=[("all classes", -1)] + [(c, k) for k, c in enumerate(classes)],
                                  value=-1, description="class")
    sorts = (["given order"] if order is not None else []) + ["index", "darkest first", "brightest first"] \
        + [f"finding: {name}" for name in findings]
    sort_menu = widgets.Dropdown(options=sorts, value=state["sort"], description="sort")
    prev_button, next_button = widgets.Button(description="◀ Prev"), widgets.Button(description="Next ▶")
    prev_button.add_class("rk-prev")
    next_button.add_class("rk-next")
    page_label = widgets.Label(layout=widgets.Layout(min_width="110px"))  # room for "page 938 / 938"
    grid, tiles, captions = _tile_grid(per_page, ncols, "rk-browser-grid")

    def show():
        items = page_items()
        _show_tiles(tiles, captions, [image_png(images[i]) for i, _ in items], [caption(*it) for it in items])
        page_label.value = f"page {state['page'] + 1} / {state['pages']}"
        prev_button.disabled, next_button.disabled = state["page"] == 0, state["page"] >= state["pages"] - 1

    def on_change(_):
        state["sort"], state["page"] = sort_menu.value, 0
        state["class"] = None if class_menu.value < 0 else class_menu.value
        update_view()
        show()

    def turn(delta):
        state["page"] = min(max(0, state["page"] + delta), state["pages"] - 1)
        show()

    class_menu.observe(on_change, names="value")
    sort_menu.observe(on_change, names="value")
    prev_button.on_click(lambda _: turn(-1))
    next_button.on_click(lambda _: turn(+1))
    show()
    controls = widgets.HBox([class_menu, sort_menu, prev_button, page_label, next_button])
    return Panel([controls, grid], summary, lambda: figure_png(figure()))


# ----------------------------------------------------------------------------- batch viewer

def denormalize(x, mean, std):
    """Undo loader normalization: x * std + mean per channel, for x (B, C, H, W)."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"mean has {len(mean)} and std {len(std)} values but the batch has {x.shape[1]} "
                         "channels: pass the mean/std the loader normalized with.")
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return x * std + mean


def describe_batch(x, y, shown):
    """One line about the tensors that enter the model, and a warning if de-normalizing did not give
    back pixels spanning about 0..1 (the loader used other statistics, or normalized twice)."""
    text = (f"x {tuple(x.shape)} {x.dtype}: mean {x.mean():.3f}, std {x.std():.3f}, min {x.min():.2f}, "
            f"max {x.max():.2f}; y {tuple(y.shape)} {y.dtype}")
    if shown.min() < -0.05 or shown.max() > 1.05 or shown.max() - shown.min() < 0.2:
        text += (f". WARNING: de-normalized pixels span {shown.min():.2f}..{shown.max():.2f}, not 0..1: the "
                 "mean/std here differ from the loader's (wrong statistics? normalized twice?)")
    return text


def batch_viewer(loader, classes, mean=None, std=None, n=32, ncols=8, static=False):
    """"Just before the net": the next batch of `loader`, de-normalized, with its labels.

    mean/std default to the loader's own (a BatchLoader has .mean and .std); a loader that does not
    normalize needs none. A "Next batch" button draws the next one.
    """
    mean = mean if mean is not None else getattr(loader, "mean", None)
    std = std if std is not None else getattr(loader, "std", None)
    state = {"batches": iter(loader)}
    epoch = getattr(loader, "epoch", None)  # a BatchLoader counts epochs to seed each one

    def next_batch():
        try:
            x, y = next(state["batches"])
        except StopIteration:  # end of the epoch: start the next one
            state["batches"] = iter(loader)
            x, y = next(state["batches"])
        if epoch is not None:  # peeking must not shift the batches the training run will see
            loader.epoch = epoch
        x, y = x[:n].detach().cpu(), y[:n].cpu()                        # x: (n, C, H, W) as the model sees it
        shown = denormalize(x, mean, std) if mean is not None else x   # back to the 0..1 pixel scale
        state.update(x=x, y=y, shown=(shown.clamp(0, 1) * 255).round().to(torch.uint8))
        state["text"] = describe_batch(x, y, shown)

    def figure():
        return image_grid(state["shown"], state["y"], classes, ncols=ncols).figure

    next_batch()
    if static:
        return figure()
    grid, tiles, captions = _tile_grid(n, ncols, "rk-batch-grid")
    info = widgets.Label()
    button = widgets.Button(description="Next batch ▶")

    def show():
        _show_tiles(tiles, captions, [image_png(image) for image in state["shown"]],
                    [classes[int(label)] for label in state["y"]])
        info.value = state["text"]

    button.on_click(lambda _: (next_batch(), show()))
    show()
    return Panel([widgets.HBox([button, info]), grid], lambda: "batch viewer: " + state["text"],
                 lambda: figure_png(figure()))


# ----------------------------------------------------------------------------- prediction dynamics

def _snapshots_of(snapshots):
    snapshots = snapshots["snapshots"] if isinstance(snapshots, dict) else snapshots  # a history works too
    if not snapshots:
        raise ValueError("no snapshots: pass callbacks=[snapshot_predictions(x_fixed, every=k)] to fit, "
                         "then history['snapshots'].")
    return snapshots


def true_class_probability(snapshots, labels):
    """(steps, probs) with probs (num_snapshots, B): the probability each image gives its true class."""
    labels = torch.as_tensor(labels).cpu().long()
    probs = torch.stack([s["probs"][torch.arange(len(labels)), labels] for s in snapshots])  # (S, B)
    return [s["step"] for s in snapshots], probs


def dynamics_frame(probs, images, labels, classes, step):
    """One moment of training: each image above a bar chart of its predicted class probabilities
    (true class green, a wrong top prediction red)."""
    k = len(images)
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k + 1, 3.6), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1.4]})
    for j in range(k):
        axes[0, j].imshow(as_display_image(images[j]), cmap="gray", vmin=0, vmax=1)
        axes[0, j].axis("off")
        axes[0, j].set_title(classes[int(labels[j])], fontsize=8)
        p = probs[j].tolist()
        top = int(np.argmax(p))
        colors = ["tab:green" if c == int(labels[j]) else "tab:red" if c == top else "0.7" for c in range(len(p))]
        axes[1, j].barh(range(len(p)), p, color=colors)
        axes[1, j].set_xlim(0, 1)
        axes[1, j].invert_yaxis()
        axes[1, j].set_yticks(range(len(p)), classes if j == 0 else [""] * len(p), fontsize=7)
        axes[1, j].tick_params(axis="x", labelsize=7)
    fig.suptitle(f"predictions at step {step}", fontsize=9)
    fig.tight_layout()
    return fig


def _true_class_figure(snapshots, labels, classes):
    steps, probs = true_class_probability(snapshots, labels)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for j in range(probs.shape[1]):
        ax.plot(steps, probs[:, j], marker=".", label=f"{j}: {classes[int(labels[j])]}")
    ax.axhline(1 / len(classes), color="0.5", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("step")
    ax.set_ylabel("p(true class)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def prediction_dynamics(snapshots, images, labels, classes, max_images=8, static=False):
    """Replay how the predictions on a fixed batch changed during training (a slider over steps).

    snapshots: history["snapshots"] from snapshot_predictions (or the history itself); images and
    labels: that fixed batch (uint8, or normalized floats which are rescaled for display).
    static=True: one figure of p(true class) against step for each image.
    """
    snapshots = _snapshots_of(snapshots)
    k = min(max_images, len(images))
    images, labels = torch.as_tensor(images)[:k].cpu(), torch.as_tensor(labels)[:k].cpu()
    if snapshots[0]["probs"].shape[0] < k:
        raise ValueError(f"snapshots hold {snapshots[0]['probs'].shape[0]} images but {k} were passed: "
                         "pass the batch given to snapshot_predictions.")
    snapshots = [{"step": s["step"], "probs": s["probs"][:k]} for s in snapshots]
    if static:
        return _true_class_figure(snapshots, labels, classes)
    frames = {}  # snapshot index -> PNG bytes, drawn on first view

    def frame(i):
        if i not in frames:
            frames[i] = figure_png(dynamics_frame(snapshots[i]["probs"], images, labels, classes,
                                                  snapshots[i]["step"]))
        return frames[i]

    slider = widgets.SelectionSlider(options=[(str(s["step"]), i) for i, s in enumerate(snapshots)],
                                     value=0, description="step")
    picture = widgets.Image(value=frame(0), format="png")
    slider.observe(lambda change: setattr(picture, "value", frame(change["new"])), names="value")
    steps, probs = true_class_probability(snapshots, labels)
    summary = (f"prediction dynamics: {len(snapshots)} snapshots, steps {steps[0]}..{steps[-1]}; mean p(true class) "
               f"{probs[0].mean():.3f} -> {probs[-1].mean():.3f}")
    return Panel([slider, picture], lambda: summary,
                 lambda: figure_png(_true_class_figure(snapshots, labels, classes)))


# ----------------------------------------------------------------------------- live loss

def loss_figure(history, smoothing=0.9, log_scale=False):
    """A light loss plot for redrawing during training: per-step loss, smoothed, and val loss per epoch."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(history["step"], history["loss"], color="0.75", lw=0.8, label="loss per step")
    ax.plot(history["step"], smooth(history["loss"], smoothing), color="C0", label="smoothed")
    if any(math.isfinite(v) for v in history["val_loss"]):
        ax.plot(history["epoch_step"], history["val_loss"], "o-", color="C1", label="val loss")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def live_loss(min_interval_s=1.0, smoothing=0.9, log_scale=False):
    """A loss plot that redraws during fit: fit(..., callbacks=[dash.callback]).

    Redraws at most once per min_interval_s (seconds), so drawing never dominates training, and
    always once more when training ends.
    """
    picture = widgets.Image(format="png")
    status = widgets.Label("waiting for fit(..., callbacks=[dash.callback])")
    state = {"history": None, "last_draw": -math.inf}

    def callback(step, model, history):
        state["history"] = history
        done = history["stopped"] is not None
        if not history["loss"] or (not done and time.perf_counter() - state["last_draw"] < min_interval_s):
            return
        picture.value = figure_png(loss_figure(history, smoothing, log_scale))
        state["last_draw"] = time.perf_counter()
        status.value = f"step {step}: loss {history['loss'][-1]:.4f}" + (f". {history['stopped']}" if done else "")

    def render_png():
        history = state["history"]
        return figure_png(loss_figure(history, smoothing, log_scale)) if history and history["loss"] else None

    return Panel([status, picture], lambda: "live loss: " + status.value, render_png, callback=callback)


# ----------------------------------------------------------------------------- error browser

def error_views(table, max_pairs=10):
    """The error browser's views: {name: row positions of `table` to show, highest loss first}.
    "highest loss" (all examples), "errors only", then one view per most confused pair."""
    from .errors import confused_pairs
    ranked = table.sort_values(["loss", "index"], ascending=[False, True], kind="stable")
    wrong = ranked["true"] != ranked["predicted"]
    views = {"highest loss": list(ranked.index), "errors only": list(ranked.index[wrong])}
    named = "true_name" in table
    for pair in confused_pairs(table).head(max_pairs).itertuples(index=False):
        name = f"{pair.true_name} → {pair.predicted_name}" if named else f"{pair.true} → {pair.predicted}"
        chosen = (ranked["true"] == pair.true) & (ranked["predicted"] == pair.predicted)
        views[f"{name} ({pair.count})"] = list(ranked.index[chosen])
    return views


def error_browser(table, images, classes=None, per_page=32, ncols=8, static=False):
    """Page through what a model gets wrong: highest loss first, errors only, or one confused pair.

    table: errors.predictions_table(model, val_loader, classes=...); images: that split's images as
    stored (e.g. val.images), indexed by the table's "index" column. Captions read
    "#index predicted confidence (true: class)"; a wrong prediction is marked ✗.
    static=True returns the figure of the first page (errors only) instead of a widget.
    """
    images = torch.as_tensor(images).cpu()
    if len(table) and table["index"].max() >= len(images):
        raise ValueError(f"the table refers to image {table['index'].max()} but images holds {len(images)}: "
                         "pass the images of the split the table was computed on, in the same order.")
    views = error_views(table)
    state = {"view": "errors only", "page": 0}

    def name(label):
        return classes[int(label)] if classes is not None else str(int(label))

    def rows():
        positions = views[state["view"]]
        return table.loc[positions[state["page"] * per_page:(state["page"] + 1) * per_page]]

    def pages():
        return max(1, math.ceil(len(views[state["view"]]) / per_page))

    def caption(row):
        mark = "✗ " if row.true != row.predicted else ""
        return f"{mark}#{row.index} {name(row.predicted)} {row.confidence:.2f} (true: {name(row.true)})"

    def summary():
        errors, n = len(views["errors only"]), len(table)
        pairs = [v for v in views if v not in ("highest loss", "errors only")][:3]
        return (f"error browser: {errors} errors in {n} examples ({errors / max(1, n):.1%}); showing "
                f"{state['view']}, page {state['page'] + 1} / {pages()}; most confused: {', '.join(pairs) or 'none'}")

    def figure():
        shown = rows()
        if shown.empty:
            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no errors", ha="center", va="center")
            return fig
        titles = [caption(r).replace(" (true", "\n(true") for r in shown.itertuples(index=False)]
        colors = ["red" if r.true != r.predicted else "black" for r in shown.itertuples(index=False)]
        return image_grid(images[shown["index"].tolist()], titles=titles, title_colors=colors, ncols=ncols).figure

    if static:
        return figure()
    view_menu = widgets.Dropdown(options=list(views), value=state["view"], description="show")
    prev_button, next_button = widgets.Button(description="◀ Prev"), widgets.Button(description="Next ▶")
    page_label = widgets.Label(layout=widgets.Layout(min_width="110px"))
    grid, tiles, captions = _tile_grid(per_page, ncols, "rk-error-grid")

    def show():
        shown = list(rows().itertuples(index=False))
        _show_tiles(tiles, captions, [image_png(images[r.index]) for r in shown], [caption(r) for r in shown])
        page_label.value = f"page {state['page'] + 1} / {pages()}"
        prev_button.disabled, next_button.disabled = state["page"] == 0, state["page"] >= pages() - 1

    def on_view(change):
        state["view"], state["page"] = change["new"], 0
        show()

    def turn(delta):
        state["page"] = min(max(0, state["page"] + delta), pages() - 1)
        show()

    view_menu.observe(on_view, names="value")
    prev_button.on_click(lambda _: turn(-1))
    next_button.on_click(lambda _: turn(+1))
    show()
    return Panel([widgets.HBox([view_menu, prev_button, page_label, next_button]), grid], summary,
                 lambda: figure_png(figure()))
