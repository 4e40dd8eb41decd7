"""Error analysis on tiny data: losses against PyTorch's cross-entropy, rankings and pair counts
against slow obvious versions, and the plots and browser show exactly those rows."""
import base64
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import recipe_kit as rk  # noqa: E402
from recipe_kit import errors, plots, widgets  # noqa: E402

CLASSES = ["zero", "one", "two", "three"]
MEAN, STD = (0.5,), (0.25,)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def tiny():
    """60 random 6x6 images, labels 0..3, a small net (with dropout) that gets about 3/4 wrong."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 1, 6, 6), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (60,), generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(36, 4))
    x = (images.float() / 255 - MEAN[0]) / STD[0]  # what a BatchLoader with MEAN, STD gives
    return images, labels, model, x


def reference_losses(model, x, labels):
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    return F.cross_entropy(logits, labels, reduction="none"), logits.softmax(1)


def test_table_matches_pytorch_cross_entropy_and_leaves_the_model_alone(tiny):
    images, labels, model, x = tiny
    model.train()
    table = errors.predictions_table(model, x, labels, CLASSES, batch_size=16)
    assert model.training  # mode restored; eval mode used inside (dropout off: deterministic)
    loss, probs = reference_losses(model, x, labels)
    assert list(table.columns) == errors.COLUMNS + ["true_name", "predicted_name"]
    assert table["index"].tolist() == list(range(60)) and table["true"].tolist() == labels.tolist()
    assert torch.allclose(torch.tensor(table["loss"].to_numpy()), loss, atol=1e-5)
    assert table["predicted"].tolist() == probs.argmax(1).tolist()
    assert torch.allclose(torch.tensor(table["confidence"].to_numpy()), probs.max(1).values, atol=1e-6)
    assert torch.allclose(torch.tensor(table["p_true"].to_numpy()), probs[torch.arange(60), labels], atol=1e-6)
    assert table["true_name"][3] == CLASSES[int(labels[3])]


def test_a_loader_gives_the_same_table_and_is_not_advanced(tiny):
    images, labels, model, x = tiny
    loader = rk.BatchLoader(images, labels, batch_size=7, shuffle=False, mean=MEAN, std=STD)
    epoch = loader.epoch
    from_loader = errors.predictions_table(model, loader)           # labels come from the batches
    assert loader.epoch == epoch
    from_tensor = errors.predictions_table(model, x, labels)
    assert from_loader[["index", "true", "predicted"]].equals(from_tensor[["index", "true", "predicted"]])
    assert (from_loader["loss"] - from_tensor["loss"]).abs().max() < 1e-5


def test_top_losses_and_most_confused_against_slow_versions(tiny):
    images, labels, model, x = tiny
    loss, probs = reference_losses(model, x, labels)
    top = rk.top_losses(model, x, labels, CLASSES, k=5)
    slow = sorted(range(60), key=lambda i: -loss[i].item())[:5]
    assert top["index"].tolist() == slow and top["loss"].is_monotonic_decreasing
    predicted = probs.argmax(1).tolist()
    counts = Counter((t, p) for t, p in zip(labels.tolist(), predicted) if t != p)
    pairs = rk.most_confused(model, x, labels, CLASSES, min_count=2)
    assert {(r.true, r.predicted): r.count for r in pairs.itertuples()} == {k: c for k, c in counts.items() if c >= 2}
    assert pairs["count"].is_monotonic_decreasing and len(pairs) >= 2
    first = pairs.iloc[0]
    assert (first.true_name, first.predicted_name) == (CLASSES[first.true], CLASSES[first.predicted])


def test_bad_input_is_named_with_its_fix(tiny):
    images, labels, model, x = tiny
    with pytest.raises(ValueError, match="normalized float inputs"):
        errors.predictions_table(model, images, labels)
    with pytest.raises(ValueError, match="shuffle=False"):
        errors.predictions_table(model, rk.BatchLoader(images, labels, shuffle=True))
    with pytest.raises(ValueError, match="labels has shape"):
        errors.predictions_table(model, x, labels[:10])
    with pytest.raises(ValueError, match="pass labels"):
        errors.predictions_table(model, x)
    with pytest.raises(ValueError, match="classes has 2 names"):
        errors.predictions_table(model, x, labels, ["a", "b"])
    with pytest.raises(ValueError, match="k=0"):
        rk.top_losses(model, x, labels, k=0)


def test_static_plots_show_the_top_losses_and_the_pairs(tiny):
    images, labels, model, x = tiny
    table = errors.predictions_table(model, x, labels, CLASSES)
    fig = plots.top_losses(table, images, CLASSES, k=6, ncols=3)
    texts = [t for t in fig.axes[0].texts]
    worst = errors.rank_losses(table, 1).iloc[0]
    assert len(texts) == 6 and texts[0].get_text() == (f"{worst.predicted_name} {worst.confidence:.2f}\n"
                                                       f"true: {worst.true_name}\nloss {worst.loss:.2f}")
    assert [t.get_color() == "red" for t in texts] == [r.true != r.predicted
                                                      for r in errors.rank_losses(table, 6).itertuples()]
    fig = plots.confused_pairs(table, images, CLASSES, n_pairs=2, per_pair=3)
    pairs = errors.confused_pairs(table).head(2)
    for r, pair in enumerate(pairs.itertuples()):
        row = fig.axes[r * 7:(r + 1) * 7]                              # 3 errors, a spacer, 3 right ones
        shown_errors = sum(bool(ax.images) for ax in row[:3])
        assert shown_errors == min(3, pair.count) and f"({pair.count}x)" in row[0].texts[0].get_text()
        right = ((table["true"] == pair.predicted) & (table["predicted"] == pair.predicted)).sum()
        assert sum(bool(ax.images) for ax in row[4:]) == min(3, right) and not row[3].images
    with pytest.raises(ValueError, match="images holds 10"):
        plots.top_losses(table, images[:10], CLASSES)
    perfect = table.assign(predicted=table["true"])
    assert "no errors" in plots.confused_pairs(perfect, images).axes[0].texts[0].get_text()


def test_error_browser_views_pages_and_static_fallback(tiny):
    images, labels, model, x = tiny
    table = errors.predictions_table(model, x, labels, CLASSES)
    panel = widgets.error_browser(table, images, CLASSES, per_page=8, ncols=4)
    (menu, prev_button, page_label, next_button), grid = panel.children[0].children, panel.children[1]
    wrong = table[table["true"] != table["predicted"]].sort_values("loss", ascending=False)

    def captions():
        return [tile.children[1].value for tile in grid.children if tile.children[1].value]

    assert menu.value == "errors only" and page_label.value == f"page 1 / {-(-len(wrong) // 8)}"
    assert [int(c.split("#")[1].split()[0]) for c in captions()] == wrong["index"].tolist()[:8]
    assert all(c.startswith("✗ #") for c in captions())
    assert grid.children[0].children[0].value == widgets.image_png(images[int(wrong["index"].iloc[0])])
    next_button.click()
    assert [int(c.split("#")[1].split()[0]) for c in captions()] == wrong["index"].tolist()[8:16]
    pair = errors.confused_pairs(table).iloc[0]
    menu.value = next(v for v in menu.options if v.startswith(f"{pair.true_name} → {pair.predicted_name} ("))
    assert page_label.value == "page 1 / 1" and len(captions()) == pair["count"]
    assert all(c.endswith(f"(true: {pair.true_name})") and f" {pair.predicted_name} " in c for c in captions())
    assert f"{len(wrong)} errors in 60 examples" in panel.summary()
    bundle = panel._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG") and "error browser" in bundle["text/plain"]
    assert isinstance(widgets.error_browser(table, images, CLASSES, static=True), matplotlib.figure.Figure)
