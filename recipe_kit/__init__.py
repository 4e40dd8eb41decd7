"""recipe_kit: the companion package of recipe-course.

One concept per module: data (loading, verified), loader (fast batches), utils (seeds, device),
audit and preflight (the checks, reporting through report), compare (is a change larger than the
noise?), bugs (planted-bug pipelines), models (the course's small nets), train (a transparent
loop), errors (what a model gets wrong), lineage (each notebook's decision, written down), plots and
widgets (looking at things), search, tune and progress (hyperparameter search with Optuna, the
ideas behind it, when to stop), drills and quiz (interview prep), cpu (which float path this
machine trains on), learner (a learner's own copies, solutions on demand).

The modules that pull in heavy libraries (matplotlib, seaborn, optuna, pandas, ipywidgets) load on
first use, `rk.plots` or `import recipe_kit.plots`, so `import recipe_kit` stays quick in scripts
and worker processes (benchmarks/import_time.py measures it).
"""
import importlib

from . import compare, cpu, progress
from .audit import audit_data
from .compare import paired_gain, right_on
from .data import DataError, Images, load_dataset, train_val_split
from .loader import Augment, BatchLoader, channel_stats
from .models import (MixedPrecision, course_cnn, init_final_bias_to_log_prior, logistic_regression, mlp,
                     vgg_cnn)
from .preflight import preflight
from .report import ChecksFailed, Problem, Report
from .train import EarlyStopping, evaluate, fit, predict, snapshot_predictions
from .utils import check_device, pick_device, seed_everything

__version__ = "0.1.0"

LAZY_MODULES = ("bugs", "calibration", "lineage", "drills", "errors", "plots", "quiz", "search", "tune", "widgets")


def __getattr__(name):  # PEP 562: rk.plots imports recipe_kit.plots the first time it is used
    if name in LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'recipe_kit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(LAZY_MODULES) | {"top_losses", "most_confused"})


def top_losses(*args, **kwargs):
    """The examples a model gets most wrong: see errors.top_losses (pandas loads on first use)."""
    return importlib.import_module(".errors", __name__).top_losses(*args, **kwargs)


def most_confused(*args, **kwargs):
    """The class pairs a model confuses most: see errors.most_confused."""
    return importlib.import_module(".errors", __name__).most_confused(*args, **kwargs)


def solution(stage, n):
    """Exercise n of notebook `stage`, solved: see learner.solution. (Imported on first use, so that
    `python -m recipe_kit.learner` runs a module the package has not already loaded.)"""
    from .learner import solution
    return solution(stage, n)
