"""Hyperparameter search that several processes, or machines, share: a thin layer over Optuna.

Optuna does the searching (TPE, random, grid, pruning); this module only picks sane defaults, makes
the study live in a database so workers can join it, and turns the trials into a plain table.

    study = open_study("stage5")                  # runs/search.db, shared by every worker
    study.optimize(toy_objective, n_trials=30)    # or, from shells / machines:
    #   python -m recipe_kit.search worker --study stage5 --trials 30 --objective recipe_kit.search:toy_objective
    trials_table(study)                           # pandas: number, state, value, duration_s, worker, lr, wd
    explore_trials(study)                         # pick axes, see where the good trials are

Why a database: a trial number is handed out by the database, so N workers never run trial 7 twice
and never lose one. SQLite (the default) serves the processes of one machine; PostgreSQL serves
many machines with the same code (docs/search.md).
"""
import argparse
import importlib
import math
import os
import socket
import time
import warnings

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import sqlalchemy

from .data import default_dir

RUNS_DIR = default_dir("runs", "RECIPE_RUNS_DIR")  # <checkout>/runs, else ~/.local/share/recipe-kit/runs
SQLITE_TIMEOUT_S = 60  # seconds a worker waits for another's write lock before 'database is locked'
HEARTBEAT_S = 60       # a worker marks its running trial alive this often (seconds); after 2 missed
                       # beats the trial counts as dead (worker killed, machine gone): the next worker
MAX_RETRY = 3          # to start a trial marks it FAIL and queues it again, same params, up to 3 times


# ----------------------------------------------------------------------------- studies

def default_storage():
    """The SQLite file every worker on this machine shares: RUNS_DIR/search.db (<project>/runs in the
    course checkout, else a per-user folder; $RECIPE_RUNS_DIR overrides both)."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{RUNS_DIR / 'search.db'}"


def make_storage(storage=None, heartbeat_s=HEARTBEAT_S):
    """An Optuna storage from a URL. SQLite gets a 60 s lock timeout: concurrent workers queue their
    writes instead of failing with 'database is locked' (SQLite's default waits 5 s).

    heartbeat_s: without heartbeats, a trial whose worker was killed (SIGKILL, SIGTERM, a lost
    machine) stays RUNNING forever and its point is never tried. With them, Optuna's heartbeat marks
    it FAIL after 2 * heartbeat_s seconds of silence and RetryHeartbeatStaleTrialCallback queues it
    again. None turns them off.
    """
    storage = default_storage() if storage is None else storage
    if not isinstance(storage, str):
        return storage  # already an Optuna storage, e.g. optuna.storages.InMemoryStorage()
    if "://" not in storage:
        raise ValueError(f"storage={storage!r} is not a database URL: use e.g. 'sqlite:///runs/search.db' "
                         "or 'postgresql://user:password@host/db'.")
    if heartbeat_s is not None and (not isinstance(heartbeat_s, int) or heartbeat_s < 1):
        raise ValueError(f"heartbeat_s={heartbeat_s!r}: pass whole seconds >= 1 (Optuna's heartbeat_interval), "
                         "or None for no heartbeats.")
    connect_args = {"timeout": SQLITE_TIMEOUT_S} if storage.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            return _rdb_storage(storage, connect_args, heartbeat_s)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            # workers started together on a new database race to create its tables; the losers
            # find them created a moment later (or open the study once before starting workers)
            if attempt == 2:
                raise
            time.sleep(1.0)


def _rdb_storage(url, connect_args, heartbeat_s):
    if heartbeat_s is None:
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args})
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8: stable enough here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRY)} if retry else \
            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args},
                                          heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s, **callback)


def make_sampler(sampler="tpe", seed=0, search_space=None):
    """An Optuna sampler by name: "tpe" (learns where good trials are), "random", or "grid"
    (needs search_space={"lr": [1e-4, 1e-3], ...}, every combination once)."""
    if not isinstance(sampler, str):
        return sampler  # already an Optuna sampler
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler == "grid":
        if not search_space:
            raise ValueError('sampler="grid" needs search_space={"lr": [1e-4, 1e-3, 1e-2], ...}: '
                             "the values of each parameter to try.")
        return optuna.samplers.GridSampler(search_space, seed=seed)
    raise ValueError(f'sampler={sampler!r}: use "tpe", "random" or "grid".')


def make_pruner(pruner="median"):
    """ "median": stop a trial whose intermediate value is worse than the median of earlier trials at
    the same step (after 5 complete trials, so there is a median to compare with). "none": never."""
    if not isinstance(pruner, str):
        return pruner  # already an Optuna pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f'pruner={pruner!r}: use "median" or "none".')


def open_study(name, storage=None, sampler="tpe", seed=0, direction="maximize", pruner="median",
               search_space=None, heartbeat_s=HEARTBEAT_S):
    """Create the study `name`, or join it if it exists (how several workers share one search).

    The sampler and pruner live in this process only; the trials live in the storage. Give each
    worker its own seed: workers with the same seed propose the same first trials.
    """
    study = optuna.create_study(study_name=name, storage=make_storage(storage, heartbeat_s),
                                sampler=make_sampler(sampler, seed, search_space),
                                pruner=make_pruner(pruner), direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        # Optuna would silently keep the stored direction and optimize the other way round
        raise ValueError(f"study {name!r} already exists with direction={study.direction.name.lower()!r}, "
                         f"not {direction!r}: pass that direction, or pick a new study name.")
    return study


def worker_name():
    """host:pid, stored on each trial so the table says which worker (machine) ran it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(study_name, objective, n_trials, storage=None, sampler="tpe", seed=None,
               direction="maximize", pruner="median", search_space=None, heartbeat_s=HEARTBEAT_S):
    """Run n_trials of the shared study in this process; start it in as many processes as you like.

    seed=None draws a fresh seed per worker (same-seeded workers would repeat each other's trials).
    Returns the numbers of the trials this worker ran (a dead worker's trial, re-queued, counts too).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}: a worker needs at least 1 trial to run.")
    study = open_study(study_name, storage, sampler, seed, direction, pruner, search_space, heartbeat_s)
    me, mine = worker_name(), []

    def tagged_objective(trial):
        trial.set_user_attr("worker", me)
        mine.append(trial.number)
        return objective(trial)

    study.optimize(tagged_objective, n_trials=n_trials)
    return mine


def load_objective(path):
    """The function at "package.module:function", imported like any other Python name."""
    module_name, sep, function_name = path.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"objective={path!r}: write it as module:function, e.g. recipe_kit.search:toy_objective.")
    function = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(function):
        raise ValueError(f"objective={path!r}: module {module_name} has no function {function_name!r}.")
    return function


# ----------------------------------------------------------------------------- example objectives

def toy_accuracy(lr, wd):
    """A synthetic validation accuracy with a known answer: best (0.9) at lr=3e-3, wd=1e-4.

    Like real networks, lr matters a lot (0.08 lost per decade away) and wd little (0.01 per
    decade), and both act on a log scale. Costs nothing, so searches can be compared in seconds.
    """
    lr_decades, wd_decades = math.log10(lr / 3e-3), math.log10(wd / 1e-4)
    return 0.9 - 0.08 * lr_decades ** 2 - 0.01 * wd_decades ** 2


def toy_objective(trial):
    """An Optuna objective: suggest lr and weight decay on log axes, return toy_accuracy."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    wd = trial.suggest_float("wd", 1e-6, 1e-2, log=True)
    return toy_accuracy(lr, wd)


def slow_toy_objective(trial):
    """toy_objective that takes 0.1 s, like a (very short) training run: lets workers overlap."""
    time.sleep(0.1)
    return toy_objective(trial)


def toy_curve_objective(trial, epochs=10):
    """An objective that reports a learning curve, so a pruner can stop the hopeless trials early.

    Accuracy after epoch e approaches toy_accuracy like 1 - exp(-e / 3): bad settings stay bad at
    every epoch, which is what the median pruner bets on.
    """
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    wd = trial.suggest_float("wd", 1e-6, 1e-2, log=True)
    final = toy_accuracy(lr, wd)
    for epoch in range(1, epochs + 1):
        accuracy = final * (1 - math.exp(-epoch / 3))
        trial.report(accuracy, step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


# ----------------------------------------------------------------------------- tracking

def trials_table(study):
    """One row per trial: number, state, value, duration_s, worker, steps, then one column per param.

    steps is the last intermediate step reported (how far a pruned trial got). value is NaN for a
    failed or running trial; for a pruned one Optuna keeps its last reported intermediate value.
    A param named like a fixed column gets a "param_" prefix.
    """
    fixed = ["number", "state", "value", "duration_s", "worker", "steps"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else math.nan
        row = {"number": t.number, "state": t.state.name, "value": math.nan if t.value is None else t.value,
               "duration_s": duration, "worker": t.user_attrs.get("worker", ""),
               "steps": max(t.intermediate_values, default=0)}
        row.update({("param_" + k if k in fixed else k): v for k, v in t.params.items()})
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else fixed)
    return table.sort_values("number", ignore_index=True)


def write_trials_csv(study, path):
    """Save trials_table to CSV (one file per study: diff it, plot it with seaborn, keep it)."""
    trials_table(study).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- exploring

def log_scaled_params(study):
    """Names of the params suggested with log=True (their axes should be logarithmic too)."""
    names = set()
    for t in study.get_trials(deepcopy=False):
        names |= {k for k, d in t.distributions.items() if getattr(d, "log", False)}
    return names


def trials_figure(table, x, y, log_axes=(), direction="maximize"):
    """Two panels: trials on the (x, y) plane colored by value (pruned/failed as gray crosses), and
    value against trial number with the best so far (is the search still improving?)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    done = table[table["state"] == "COMPLETE"]
    other = table[table["state"] != "COMPLETE"]
    left.scatter(other[x], other[y], c="lightgray", marker="x", label="pruned / failed")
    dots = left.scatter(done[x], done[y], c=done["value"], cmap="viridis")
    if len(done):
        fig.colorbar(dots, ax=left, label="value")
    left.set(xlabel=x, ylabel=y, title=f"{len(done)} complete, {len(other)} other trials")
    left.set_xscale("log" if x in log_axes else "linear")
    left.set_yscale("log" if y in log_axes else "linear")
    if len(other):
        left.legend(loc="best")
    best = done["value"].cummax() if direction == "maximize" else done["value"].cummin()
    right.plot(done["number"], done["value"], "o", alpha=0.5, label="trial")
    right.plot(done["number"], best, "-", color="C1", label="best so far")
    right.set(xlabel="trial number", ylabel="value", title="progress")
    right.legend(loc="best")
    fig.tight_layout()
    return fig


def explore_trials(study, x=None, y=None, static=False):
    """Pick two axes (params, "number", "duration_s") with dropdowns; see where the good trials are.

    static=True returns the matplotlib figure; the widget also shows a PNG and a text summary
    where widgets are not rendered (nbval, GitHub).
    """
    from .widgets import Panel, figure_png  # widgets imports ipywidgets: only load it when asked

    table = trials_table(study)
    params = [c for c in table.columns if c not in ("number", "state", "value", "duration_s", "worker", "steps")]
    choices = params + ["number", "duration_s"]
    x = x or choices[0]
    y = y or (choices[1] if len(params) > 1 else "value")
    for name, arg in ((x, "x"), (y, "y")):
        if name not in choices + ["value"]:
            raise ValueError(f"{arg}={name!r} is not a column of this study: use one of {choices + ['value']}.")
    log_axes, direction = log_scaled_params(study), study.direction.name.lower()
    state = {"x": x, "y": y}

    def figure():
        return trials_figure(table, state["x"], state["y"], log_axes, direction)

    if static:
        return figure()

    import ipywidgets as widgets

    def summary():
        done = table[table["state"] == "COMPLETE"]
        if not len(done):
            return f"study {study.study_name!r}: {len(table)} trials, none complete"
        best = done.loc[done["value"].idxmax() if direction == "maximize" else done["value"].idxmin()]
        settings = ", ".join(f"{p}={best[p]:.3g}" if isinstance(best[p], float) else f"{p}={best[p]}"
                             for p in params)
        return (f"study {study.study_name!r}: {len(table)} trials ({len(done)} complete); "
                f"best value {best['value']:.4f} at trial {int(best['number'])} ({settings})")

    x_menu = widgets.Dropdown(options=choices + ["value"], value=x, description="x")
    y_menu = widgets.Dropdown(options=choices + ["value"], value=y, description="y")
    picture = widgets.Image(format="png")

    def show(_=None):
        state["x"], state["y"] = x_menu.value, y_menu.value
        picture.value = figure_png(figure())

    x_menu.observe(show, names="value")
    y_menu.observe(show, names="value")
    show()
    return Panel([widgets.HBox([x_menu, y_menu]), picture, widgets.Label(summary())], summary,
                 lambda: figure_png(figure()))


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipe_kit.search",
                                     description="Join a shared Optuna study and run trials of it.")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run trials of a study; start one per process or machine")
    worker.add_argument("--study", required=True, help="study name (created if it does not exist)")
    worker.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    worker.add_argument("--objective", required=True, help="module:function, e.g. recipe_kit.search:toy_objective")
    worker.add_argument("--storage", default=None, help="database URL (default: sqlite:///RUNS_DIR/search.db, see docs/search.md)")
    worker.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    worker.add_argument("--seed", type=int, default=None, help="sampler seed; default: fresh per worker")
    worker.add_argument("--direction", default="maximize", choices=["maximize", "minimize"])
    worker.add_argument("--pruner", default="median", choices=["median", "none"])
    worker.add_argument("--heartbeat", type=int, default=HEARTBEAT_S,
                        help=f"seconds between heartbeats (default {HEARTBEAT_S}); a killed worker's trial is "
                             "retried after 2 missed beats; 0 turns heartbeats off")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one summary line instead of one per trial
    objective = load_objective(args.objective)
    start = time.time()
    heartbeat_s = args.heartbeat or None
    mine = run_worker(args.study, objective, args.trials, args.storage, args.sampler, args.seed,
                      args.direction, args.pruner, heartbeat_s=heartbeat_s)
    table = trials_table(open_study(args.study, args.storage, direction=args.direction, heartbeat_s=heartbeat_s))
    done = table[table["state"] == "COMPLETE"]["value"]
    best = (done.max() if args.direction == "maximize" else done.min()) if len(done) else math.nan
    print(f"worker {worker_name()}: ran trials {mine} in {time.time() - start:.1f} s; "
          f"study {args.study!r} has {len(table)} trials, best value {best:.4f}")


if __name__ == "__main__":
    main()
