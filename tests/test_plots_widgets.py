"""Plots and widgets, headless (Agg): what they show must follow the data they were given."""
import base64
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import recipe_kit as rk  # noqa: E402
from recipe_kit import plots, widgets  # noqa: E402
from recipe_kit.models import course_cnn  # noqa: E402
from recipe_kit.train import fit, snapshot_predictions  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:300], train.labels[:300], train.classes


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def browser_parts(panel):
    (class_menu, sort_menu, prev_button, page_label, next_button), grid = panel.children[0].children, panel.children[1]
    return class_menu, sort_menu, prev_button, page_label, next_button, grid


def shown(grid):
    """(image bytes, caption) of each visible tile."""
    tiles = [(tile.children[0].value, tile.children[1].value) for tile in grid.children]
    return [t for t in tiles if t[1]]


def shown_indices(grid):
    return [int(caption.split()[0][1:]) for _, caption in shown(grid)]  # "#12 Coat" -> 12


# ----------------------------------------------------------------------------- data browser

def test_browser_pages_and_static_output(fmnist):
    images, labels, classes = fmnist
    panel = widgets.data_browser(images, labels, classes, per_page=64)
    class_menu, sort_menu, prev_button, page_label, next_button, grid = browser_parts(panel)
    assert next_button.description == "Next ▶" and "rk-next" in next_button._dom_classes
    assert "rk-browser-grid" in grid._dom_classes
    assert page_label.value == "page 1 / 5" and prev_button.disabled      # 300 images / 64 per page
    first = shown(grid)
    assert shown_indices(grid) == list(range(64)) and first[0][0] == widgets.image_png(images[0])
    next_button.click()
    assert page_label.value == "page 2 / 5" and not prev_button.disabled
    assert shown_indices(grid) == list(range(64, 128)) and shown(grid)[0][0] != first[0][0]
    for _ in range(5):
        next_button.click()
    assert page_label.value == "page 5 / 5" and next_button.disabled
    assert shown_indices(grid) == list(range(256, 300))                  # the last page is shorter
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == ("data browser: 300 of 300 images (all classes), sorted by index, page 5 / 5")
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    figure = widgets.data_browser(images, labels, classes, per_page=16, static=True)
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes[0].texts) == 16


def test_browser_class_filter_and_brightness_sort(fmnist):
    images, labels, classes = fmnist
    panel = widgets.data_browser(images, labels, classes, per_page=64)
    class_menu, sort_menu, _, page_label, _, grid = browser_parts(panel)
    class_menu.value = classes.index("Bag")
    n_bags = int((labels == 8).sum())
    assert {caption.split(" ", 1)[1] for _, caption in shown(grid)} == {"Bag"}
    assert len(shown(grid)) == min(64, n_bags) and page_label.value == f"page 1 / {math.ceil(n_bags / 64)}"
    class_menu.value = -1
    sort_menu.value = "darkest first"
    brightness = images.float().mean(dim=(1, 2, 3))
    order = shown_indices(grid)
    assert order[0] == int(brightness.argmin())
    assert all(brightness[a] <= brightness[b] for a, b in zip(order, order[1:]))
    sort_menu.value = "brightest first"
    assert shown_indices(grid)[0] == int(brightness.argmax())


def test_browser_findings_rank_and_pairs(fmnist):
    images, labels, classes = fmnist
    findings = {"suspected mislabels": [42, 7, 199], "near duplicates": [(3, 150), (10, 11)]}
    panel = widgets.data_browser(images, labels, classes, findings=findings, order=[5, 4])
    _, sort_menu, _, page_label, _, grid = browser_parts(panel)
    assert sort_menu.value == "given order" and shown_indices(grid) == [5, 4]
    sort_menu.value = "finding: suspected mislabels"
    assert shown_indices(grid) == [42, 7, 199] and shown(grid)[0][1].endswith("rank 1")
    sort_menu.value = "finding: near duplicates"
    assert shown_indices(grid) == [3, 150, 10, 11] and page_label.value == "page 1 / 1"
    assert [caption.split("· ")[1] for _, caption in shown(grid)] == ["pair 1", "pair 1", "pair 2", "pair 2"]
    class_menu = panel.children[0].children[0]
    class_menu.value = next(c for c in range(10) if c not in {int(labels[i]) for i in (3, 150, 10, 11)})
    assert shown(grid) == [] and page_label.value == "page 1 / 1"
    assert base64.b64decode(panel._repr_mimebundle_()["image/png"]).startswith(PNG_MAGIC)
    kept = widgets.browse_order(labels, "finding: near duplicates", int(labels[150]), findings=findings)
    assert [i for i, _ in kept][:2] == [3, 150]                          # a pair stays whole under a class filter
    as_array = widgets.browse_order(labels, "finding: pairs", findings={"pairs": np.array([[3, 150], [10, 11]])})
    assert as_array == [(3, "pair 1"), (150, "pair 1"), (10, "pair 2"), (11, "pair 2")]
    with pytest.raises(ValueError, match="finding: NAME"):
        widgets.browse_order(labels, "finding: unknown", findings=findings)


# ----------------------------------------------------------------------------- batch viewer

def test_batch_viewer_shows_exactly_what_enters_the_model(fmnist):
    images, labels, classes = fmnist
    mean, std = rk.loader.channel_stats(images)
    loader = rk.BatchLoader(images, labels, 16, shuffle=False, mean=mean, std=std)
    panel = widgets.batch_viewer(loader, classes, n=8)                  # mean/std taken from the loader
    button, grid = panel.children[0].children[0], panel.children[1]
    assert [image for image, _ in shown(grid)] == [widgets.image_png(images[i]) for i in range(8)]
    assert [caption for _, caption in shown(grid)] == [classes[int(y)] for y in labels[:8]]
    assert panel.summary().startswith("batch viewer: x (8, 1, 28, 28) torch.float32")
    assert "WARNING" not in panel.summary()
    button.click()                                                       # the next batch: images 16..23
    assert [image for image, _ in shown(grid)] == [widgets.image_png(images[i]) for i in range(16, 24)]
    for wrong_mean, wrong_std in (((0.0,), (1.0,)), ((0.0,), (1 / 255,))):  # overflowing, collapsed
        wrong = widgets.batch_viewer(loader, classes, mean=wrong_mean, std=wrong_std, n=8)
        assert "WARNING: de-normalized pixels span" in wrong.summary()
    assert isinstance(widgets.batch_viewer(loader, classes, n=8, static=True), matplotlib.figure.Figure)


def test_peeking_with_the_batch_viewer_does_not_shift_training_batches(fmnist):
    images, labels, classes = fmnist
    peeked, untouched = (rk.BatchLoader(images, labels, 16, seed=0) for _ in range(2))
    widgets.batch_viewer(peeked, classes, n=8).children[0].children[0].click()
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(peeked, untouched))


# ----------------------------------------------------------------------------- training widgets

@pytest.fixture(scope="module")
def trained(fmnist):
    images, labels, classes = fmnist
    mean, std = rk.loader.channel_stats(images)
    loader = rk.BatchLoader(images, labels, 50, seed=0, mean=mean, std=std)
    x_fixed = rk.BatchLoader(images[:6], labels[:6], 6, shuffle=False, mean=mean, std=std)
    x_fixed = next(iter(x_fixed))[0]
    torch.manual_seed(0)
    model = course_cnn(width=8)
    dash = widgets.live_loss(min_interval_s=1e9)                         # throttled: draws only at the end
    history = fit(model, loader, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3), 2,
                  callbacks=[snapshot_predictions(x_fixed, every=4), dash.callback], progress=False)
    return history, dash


def test_prediction_dynamics_slider_and_static(fmnist, trained):
    images, labels, classes = fmnist
    history, _ = trained
    panel = widgets.prediction_dynamics(history, images[:6], labels[:6], classes)
    slider, picture = panel.children
    assert [label for label, _ in slider.options] == ["0", "4", "8", "12"]   # 12 steps of 50 images
    before = bytes(picture.value)
    assert before.startswith(PNG_MAGIC)
    slider.value = 3
    assert picture.value != before and bytes(picture.value).startswith(PNG_MAGIC)
    steps, probs = widgets.true_class_probability(history["snapshots"], labels[:6])
    assert steps == [0, 4, 8, 12] and probs.shape == (4, 6)
    assert panel.summary() == (f"prediction dynamics: 4 snapshots, steps 0..12; mean p(true class) "
                               f"{probs[0].mean():.3f} -> {probs[-1].mean():.3f}")
    figure = widgets.prediction_dynamics(history, images[:6], labels[:6], classes, static=True)
    assert len(figure.axes[0].lines) == 6 + 1                           # one per image, and chance
    with pytest.raises(ValueError, match="snapshot_predictions"):
        widgets.prediction_dynamics([], images, labels, classes)


def test_live_loss_draws_throttled_and_at_the_end(trained):
    history, dash = trained
    status, picture = dash.children
    assert bytes(picture.value).startswith(PNG_MAGIC)                          # the end of fit always draws
    assert status.value == f"step 12: loss {history['loss'][-1]:.4f}. finished 2 epochs."
    fresh = widgets.live_loss(min_interval_s=1e9)
    assert fresh._repr_mimebundle_()["text/plain"].startswith("live loss: waiting for fit")
    running = {"step": [1], "loss": [2.0], "epoch_step": [], "val_loss": [], "stopped": None}
    fresh.callback(1, None, running)
    first = fresh.children[1].value
    running["step"].append(2)
    running["loss"].append(1.0)
    fresh.callback(2, None, running)
    assert fresh.children[1].value == first                              # throttled
    running["stopped"] = "finished 1 epochs."
    fresh.callback(2, None, running)
    assert fresh.children[1].value != first


# ----------------------------------------------------------------------------- plots

def test_class_balance_bars(fmnist):
    _, labels, classes = fmnist
    ax = plots.class_balance({"train": labels[:200], "val": labels[200:]}, classes)
    assert len(ax.patches) == 2 * 10
    heights = [p.get_height() for p in ax.patches]
    assert heights[:10] == np.bincount(labels[:200], minlength=10).tolist()
    ax = plots.class_balance({"train": labels}, classes, normalize=True)
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(1.0)


def test_confusion_matrix_values():
    classes = ("a", "b", "c")
    ax = plots.confusion_matrix([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], classes)
    matrix = ax.collections[0].get_array().reshape(3, 3)
    assert np.allclose(matrix, [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])
    assert len(ax.texts) == 9 and "accuracy 0.667" in ax.get_title()
    with pytest.raises(ValueError, match="one prediction per label"):
        plots.confusion_matrix([0, 1], [0], classes)


def test_image_grid_pixel_stats_mean_images(fmnist):
    images, labels, classes = fmnist
    ax = plots.image_grid(images[:10], labels[:10], classes, ncols=4, predicted=labels[1:11])
    texts = ax.texts
    assert len(texts) == 10
    wrong = [int(p) != int(t) for p, t in zip(labels[1:11], labels[:10])]
    assert [t.get_color() == "red" for t in texts] == wrong
    ax = plots.pixel_stats({"train": images[:100], "other": images[100:200].float() / 255})
    assert len(ax.lines) == 2
    figure = plots.mean_images_per_class(images, labels, classes)
    assert len(figure.axes) == 2 * 10
    mean_bag = figure.axes[8].images[0].get_array()                     # row 0, column "Bag"
    assert np.allclose(mean_bag, images[labels == 8].float().mean(0)[0].numpy() / 255, atol=1e-6)


def test_learning_curves(trained):
    history, _ = trained
    figure = plots.learning_curves(history)
    ax_loss, ax_acc = figure.axes
    assert len(ax_loss.lines) == 3                                      # per step, smoothed, epoch means (no val)
    assert list(ax_loss.lines[0].get_ydata()) == history["loss"]
    assert len(ax_acc.lines) == 1 and list(ax_acc.lines[0].get_ydata()) == history["train_acc"]
    assert plots.smooth([1.0, float("nan"), 1.0]) == pytest.approx([1.0, 1.0, 1.0])


def test_data_browser_opens_on_the_first_finding(fmnist):
    images, labels, classes = fmnist
    panel = widgets.data_browser(images, labels, classes, per_page=4, ncols=2, findings={"pairs": [(5, 9), (1, 2)]})
    assert "sorted by finding: pairs" in panel.summary()
    assert [caption for _, caption in shown(panel.children[1])][:4] == [
        f"#{i} {classes[int(labels[i])]} · pair {k}" for i, k in ((5, 1), (9, 1), (1, 2), (2, 2))]
