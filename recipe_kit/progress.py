"""Is a hyperparameter search still making progress? The best-so-far curve, and when to stop.

    result = rk.progress.when_to_stop(table["value"], patience=10, noise=0.004)
    rk.plots.best_so_far(table["value"], patience=10, noise=0.004)

Why: tuning has diminishing returns. Each new trial can only beat the best so far by a little more
than the last one did, and once the gains are smaller than the noise of one run (its seed-to-seed
spread), further trials mostly pick lucky seeds: they fit the validation set, not the task.
The rule: stop after trial t when the best so far has improved by no more than `noise` over the
last `patience` trials. Measure `noise` as the spread of one setting over a few seeds.
"""
import math


def _check(values, patience, noise, direction):
    values = [float(v) for v in values]  # a list, a numpy array or a pandas Series
    if not values:
        raise ValueError("values is empty: pass one value per trial, in the order the trials ran.")
    if not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience={patience!r}: pass a whole number of trials, at least 1.")
    if not noise >= 0:
        raise ValueError(f"noise={noise!r}: pass the spread of one run over seeds, 0 or more (same unit as values).")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r}: use 'maximize' (accuracy) or 'minimize' (loss).")
    return values


def best_so_far(values, direction="maximize"):
    """The best value among the first 1, 2, ... trials. Failed trials (NaN) keep the previous best."""
    values = _check(values, 1, 0.0, direction)
    sign = 1 if direction == "maximize" else -1
    out, best = [], math.nan
    for v in values:
        if math.isfinite(v) and not sign * v <= sign * best:  # first finite value, or a better one
            best = v
        out.append(best)
    return out


def when_to_stop(values, patience=10, noise=0.0, direction="maximize"):
    """Where the rule says stop: plain data for a plot or a sentence.

    Returns {"best": best-so-far list, "stop_after": number of trials after which to stop (None if
    the search was still improving at its end), "gain_after_stop": what the later trials added to the
    best, "rule": the rule in words}.
    """
    values = _check(values, patience, noise, direction)
    best = best_so_far(values, direction)
    sign = 1 if direction == "maximize" else -1
    stop = None
    for t in range(patience, len(best)):  # t: 0-based index of the trial just finished
        if math.isfinite(best[t - patience]) and sign * (best[t] - best[t - patience]) <= noise:
            stop = t + 1
            break
    gain = sign * (best[-1] - best[stop - 1]) if stop else 0.0
    rule = f"stop when the best has gained no more than {noise:.3g} in the last {patience} trials"
    return {"best": best, "stop_after": stop, "gain_after_stop": gain, "rule": rule}
