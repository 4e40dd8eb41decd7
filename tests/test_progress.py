"""When to stop tuning: the best-so-far curve and the stop rule, against hand-worked sequences."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from recipe_kit import plots, progress  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_best_so_far_skips_failed_trials_and_follows_the_direction():
    assert progress.best_so_far([0.2, 0.5, 0.3, 0.7]) == [0.2, 0.5, 0.5, 0.7]
    out = progress.best_so_far([math.nan, 0.4, math.nan, 0.3])
    assert math.isnan(out[0]) and out[1:] == [0.4, 0.4, 0.4]
    assert progress.best_so_far(pd.Series([3.0, 1.0, 2.0]), direction="minimize") == [3.0, 1.0, 1.0]


def test_stop_rule_by_hand():
    # best so far: .50 .60 .70 .70 .705 .705 .705 .72; patience 3, noise .01:
    # after trial 6 the best gained .705 - .70 = .005 <= .01 over trials 4..6 (and not earlier: .70-.60 > .01)
    values = [0.5, 0.6, 0.7, 0.65, 0.705, 0.6, 0.69, 0.72]
    result = progress.when_to_stop(values, patience=3, noise=0.01)
    assert result["stop_after"] == 6 and result["gain_after_stop"] == pytest.approx(0.015)
    assert "0.01" in result["rule"] and "3 trials" in result["rule"]
    assert progress.when_to_stop(values, patience=3, noise=0.0)["stop_after"] is None  # trial 5 raised it
    assert progress.when_to_stop(values, patience=2, noise=0.0)["stop_after"] == 7    # trials 6, 7: no gain
    still = progress.when_to_stop(np.linspace(0, 1, 20), patience=5, noise=0.01)
    assert still["stop_after"] is None and still["gain_after_stop"] == 0.0
    losses = [1.0, 0.5, 0.49, 0.495, 0.3]
    assert progress.when_to_stop(losses, patience=2, noise=0.02, direction="minimize")["stop_after"] == 4


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="values is empty"):
        progress.when_to_stop([])
    with pytest.raises(ValueError, match="patience=0"):
        progress.when_to_stop([1.0], patience=0)
    with pytest.raises(ValueError, match="noise=-1"):
        progress.when_to_stop([1.0], noise=-1)
    with pytest.raises(ValueError, match="direction='max'"):
        progress.best_so_far([1.0], direction="max")


def test_plot_marks_the_stop_point():
    rng = np.random.default_rng(0)
    values = 0.9 - 0.2 / np.arange(1, 41) + rng.normal(0, 0.01, 40)  # diminishing returns plus noise
    result = progress.when_to_stop(values, patience=8, noise=0.005)
    ax = plots.best_so_far(values, patience=8, noise=0.005)
    dots, step, marker = ax.lines[0], ax.lines[1], ax.lines[3]
    assert list(dots.get_ydata()) == pytest.approx(list(values)) and list(step.get_ydata()) == result["best"]
    assert ax.lines[2].get_xdata()[0] == result["stop_after"] and marker.get_xdata()[0] == result["stop_after"]
    assert f"stop here: trial {result['stop_after']}" in ax.get_legend().get_texts()[2].get_text()
    ax = plots.best_so_far(np.linspace(0, 1, 10), patience=3, noise=0.01)
    assert "still improving after 10 trials" in ax.texts[0].get_text()
