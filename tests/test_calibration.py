"""Temperature scaling and the reliability table, against slow obvious versions and torchmetrics."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from recipe_kit import calibration, plots  # noqa: E402


def calibrated_logits(n=4000, num_classes=5, seed=0):
    """Logits whose softmax is exactly the distribution the labels are drawn from: calibrated by construction."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, num_classes, generator=gen)
    labels = torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)
    return logits, labels


def slow_ece(probs, labels, n_bins):
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        rows = [i for i in range(len(probs)) if lo < probs[i].max() <= hi]
        if rows:
            conf = sum(probs[i].max().item() for i in rows) / len(rows)
            acc = sum(int(probs[i].argmax() == labels[i]) for i in rows) / len(rows)
            total += len(rows) / len(probs) * abs(acc - conf)
    return total


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_overconfidence(true_t):
    logits, labels = calibrated_logits()
    t = calibration.fit_temperature(logits * true_t, labels)         # logits * 3: overconfident, T = 3 undoes it
    assert t == pytest.approx(true_t, rel=0.1)
    slow_best = min((F.cross_entropy(logits * true_t / c, labels).item(), c) for c in torch.linspace(0.2, 4, 381))
    assert t == pytest.approx(slow_best[1].item(), abs=0.02)


def test_temperature_never_changes_the_predicted_class_and_lowers_ece():
    logits, labels = calibrated_logits(seed=1)
    hot = logits * 3                                                 # overconfident
    t = calibration.fit_temperature(hot, labels)
    assert torch.equal((hot / t).argmax(1), hot.argmax(1))
    before = calibration.reliability(hot.softmax(1), labels)["ece"]
    after = calibration.reliability((hot / t).softmax(1), labels)["ece"]
    assert after < before / 3


def test_reliability_table_matches_a_slow_version():
    logits, labels = calibrated_logits(n=600, seed=2)
    probs = (logits * 2).softmax(1)
    table = calibration.reliability(probs, labels, n_bins=10)
    assert table["ece"] == pytest.approx(slow_ece(probs, labels, 10), abs=1e-5)
    assert sum(table["count"]) == 600 and len(table["accuracy"]) == 10
    nonempty = [k for k in range(10) if table["count"][k]]
    assert sum(table["count"][k] * table["accuracy"][k] for k in nonempty) == pytest.approx(
        (probs.argmax(1) == labels).sum().item())


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="softmax"):
        calibration.reliability(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="raw logits"):
        calibration.fit_temperature(torch.randn(4), torch.zeros(4, dtype=torch.long))


def test_reliability_diagrams_draw_one_panel_per_table():
    logits, labels = calibrated_logits(n=300, seed=3)
    tables = {"raw": calibration.reliability((logits * 3).softmax(1), labels),
              "scaled": calibration.reliability(logits.softmax(1), labels)}
    fig = plots.reliability_diagrams(tables)
    assert len(fig.axes) == 2 and "ECE" in fig.axes[1].get_title()
