"""Shared hyperparameter search: workers in separate processes, samplers, pruning, the trials table."""
import math
import os
import subprocess
import signal
import sys
import time

import matplotlib
import optuna
import pandas as pd
import pytest

from recipe_kit import search
from recipe_kit.data import PROJECT_ROOT

matplotlib.use("Agg")
optuna.logging.set_verbosity(optuna.logging.WARNING)

LR_RANGE, WD_RANGE = (1e-5, 1e-1), (1e-6, 1e-2)  # the space of toy_objective


def memory_study(**kwargs):
    return search.open_study("test", optuna.storages.InMemoryStorage(), **kwargs)


def test_two_worker_processes_share_one_study_without_duplicates_or_losses(tmp_path, two_search_workers):
    storage = f"sqlite:///{tmp_path / 'search.db'}"  # a fresh database: the workers race to create it
    two_search_workers(storage, "shared")

    study = search.open_study("shared", storage)
    trials = study.get_trials()
    assert len(trials) == 20
    assert sorted(t.number for t in trials) == list(range(20))  # each number once: none twice, none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    per_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert sorted(per_worker.tolist()) == [10, 10]              # two workers, 10 trials each
    for t in trials:
        assert LR_RANGE[0] <= t.params["lr"] <= LR_RANGE[1]
        assert WD_RANGE[0] <= t.params["wd"] <= WD_RANGE[1]
        assert t.value == pytest.approx(search.toy_accuracy(t.params["lr"], t.params["wd"]))
    # each worker drew its own seed, so they did not propose the same points
    assert len({(t.params["lr"], t.params["wd"]) for t in trials}) == 20


def test_tpe_is_not_worse_than_random_search_at_equal_budget():
    def regret(sampler, seed):  # how far the best trial is from the known optimum, 0.9
        study = memory_study(sampler=sampler, seed=seed)
        study.optimize(search.toy_objective, n_trials=30)
        return 0.9 - study.best_value

    seeds = range(4)
    tpe = sum(regret("tpe", s) for s in seeds) / len(seeds)
    rand = sum(regret("random", s) for s in seeds) / len(seeds)
    assert tpe <= rand + 1e-3, f"TPE regret {tpe:.4f} vs random {rand:.4f}"


def test_same_seed_gives_same_trials():
    a, b = memory_study(sampler="random", seed=3), memory_study(sampler="random", seed=3)
    a.optimize(search.toy_objective, n_trials=5)
    b.optimize(search.toy_objective, n_trials=5)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_grid_sampler_tries_every_combination_once():
    space = {"lr": [1e-4, 1e-3, 1e-2], "wd": [1e-5, 1e-3]}
    study = memory_study(sampler="grid", search_space=space)
    study.optimize(search.toy_objective, n_trials=6)
    tried = sorted((t.params["lr"], t.params["wd"]) for t in study.trials)
    assert tried == sorted((lr, wd) for lr in space["lr"] for wd in space["wd"])


def test_median_pruner_stops_the_bad_trials_early():
    pruned_study = memory_study(seed=0, pruner="median")
    pruned_study.optimize(search.toy_curve_objective, n_trials=30)
    table = search.trials_table(pruned_study)
    pruned, complete = table[table.state == "PRUNED"], table[table.state == "COMPLETE"]
    assert len(pruned) > 0 and len(complete) >= 5
    assert (pruned.steps < 10).all() and (complete.steps == 10).all()
    final = lambda rows: [search.toy_accuracy(lr, wd) for lr, wd in zip(rows.lr, rows.wd)]  # noqa: E731
    assert sum(final(pruned)) / len(pruned) < sum(final(complete)) / len(complete)

    unpruned_study = memory_study(seed=0, pruner="none")
    unpruned_study.optimize(search.toy_curve_objective, n_trials=10)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in unpruned_study.trials)


def test_trials_table_is_tidy_and_survives_a_csv_round_trip(tmp_path):
    study = memory_study(seed=0)
    study.optimize(search.toy_curve_objective, n_trials=12)
    table = search.trials_table(study)
    assert list(table.columns) == ["number", "state", "value", "duration_s", "worker", "steps", "lr", "wd"]
    assert table.number.tolist() == list(range(12))
    assert (table.duration_s >= 0).all()
    complete = table[table.state == "COMPLETE"]
    assert complete.value.tolist() == pytest.approx([study.trials[n].value for n in complete.number])
    pruned = table[table.state == "PRUNED"]
    assert len(pruned) > 0
    for n, value in zip(pruned.number, pruned.value):  # Optuna keeps a pruned trial's last reported value
        curve = study.trials[n].intermediate_values
        assert value == pytest.approx(curve[max(curve)])

    path = search.write_trials_csv(study, tmp_path / "trials.csv")
    back = pd.read_csv(path)
    assert back.number.tolist() == table.number.tolist()
    assert back.state.tolist() == table.state.tolist()
    for column in ("value", "duration_s", "lr", "wd"):
        assert back[column].tolist() == pytest.approx(table[column].tolist(), rel=1e-12, nan_ok=True)


def test_trials_table_marks_which_worker_ran_each_trial():
    storage = optuna.storages.InMemoryStorage()
    mine = search.run_worker("w", search.toy_objective, 3, storage=storage, seed=0)
    table = search.trials_table(search.open_study("w", storage))
    assert mine == [0, 1, 2]
    assert set(table.worker) == {search.worker_name()}


def test_explore_trials_static_figure_and_widget():
    study = memory_study(seed=0)
    study.optimize(search.toy_curve_objective, n_trials=12)
    fig = search.explore_trials(study, static=True)
    left, right = fig.axes[0], fig.axes[1]  # (axes[2] is the colorbar)
    assert left.get_xlabel() == "lr" and left.get_ylabel() == "wd"
    assert left.get_xscale() == "log" and left.get_yscale() == "log"  # suggested with log=True
    points = sum(len(c.get_offsets()) for c in left.collections)
    assert points == 12                                                 # every trial drawn
    assert right.get_xlabel() == "trial number"
    best_line = right.get_lines()[1].get_ydata()
    assert best_line[-1] == pytest.approx(study.best_value)

    panel = search.explore_trials(study)
    assert f"best value {study.best_value:.4f}" in panel.summary()
    assert panel.render_png()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="x='momentum'"):
        search.explore_trials(study, x="momentum", static=True)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="direction='maximize'"):
        storage = optuna.storages.InMemoryStorage()
        search.open_study("d", storage, direction="maximize")
        search.open_study("d", storage, direction="minimize")  # would silently optimize the wrong way
    with pytest.raises(ValueError, match="sampler='bayes'"):
        memory_study(sampler="bayes")
    with pytest.raises(ValueError, match="search_space"):
        memory_study(sampler="grid")
    with pytest.raises(ValueError, match="pruner='hyperband'"):
        memory_study(pruner="hyperband")
    with pytest.raises(ValueError, match="module:function"):
        search.load_objective("recipe_kit.search.toy_objective")
    with pytest.raises(ValueError, match="no function 'nope'"):
        search.load_objective("recipe_kit.search:nope")
    with pytest.raises(ValueError, match="not a database URL"):
        search.make_storage("runs/search.db")
    assert search.load_objective("recipe_kit.search:toy_objective") is search.toy_objective


def test_default_storage_is_a_sqlite_file_in_the_project_runs_folder():
    url = search.default_storage()
    assert url == f"sqlite:///{PROJECT_ROOT / 'runs' / 'search.db'}"
    assert (PROJECT_ROOT / "runs").is_dir()


def test_toy_accuracy_peaks_at_the_known_optimum():
    best = search.toy_accuracy(3e-3, 1e-4)
    assert best == pytest.approx(0.9)
    assert search.toy_accuracy(3e-2, 1e-4) == pytest.approx(0.9 - 0.08)    # one decade off in lr
    assert search.toy_accuracy(3e-3, 1e-3) == pytest.approx(0.9 - 0.01)    # one decade off in wd
    assert math.isclose(search.toy_accuracy(3e-4, 1e-4), search.toy_accuracy(3e-2, 1e-4))  # log-symmetric


HANGING_OBJECTIVE = '''
import os, time
from recipe_kit.search import toy_accuracy

def objective(trial):
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    wd = trial.suggest_float("wd", 1e-6, 1e-2, log=True)
    print("RUNNING", trial.number, flush=True)
    if os.environ.get("HANG"):
        time.sleep(600)                     # a long training run, killed before it ends
    return toy_accuracy(lr, wd)
'''


def start_worker(tmp_path, storage, trials, hang):
    (tmp_path / "objectives.py").write_text(HANGING_OBJECTIVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT), "HANG": "1" if hang else ""}
    command = [sys.executable, "-m", "recipe_kit.search", "worker", "--study", "s", "--trials", str(trials),
               "--storage", storage, "--objective", "objectives:objective", "--heartbeat", "1"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_killed_workers_trial_is_marked_failed_and_retried(tmp_path, signal_name):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    doomed = start_worker(tmp_path, storage, 1, hang=True)
    try:
        assert doomed.stdout.readline().split() == ["RUNNING", "0"], doomed.stderr.read()
        time.sleep(0.5)                                         # its heartbeat thread has written a beat
        doomed.send_signal(getattr(signal, signal_name))        # no cleanup runs: the trial stays RUNNING
        doomed.wait(timeout=30)
    finally:
        doomed.kill()
    study = search.open_study("s", storage, heartbeat_s=None)   # a look that does not fail anything itself
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    time.sleep(2.5)                                             # past the grace period: 2 heartbeats
    survivor = start_worker(tmp_path, storage, 3, hang=False)
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert "Warning" not in err, err                            # neither RuntimeWarning nor Optuna's warnings
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params  # same point, again
    assert retry.value == pytest.approx(search.toy_accuracy(**retry.params))
    assert "ran trials [1, 2, 3]" in out
