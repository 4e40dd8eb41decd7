"""recipe_kit: the companion package of recipe-course.

One concept per module: data (loading, verified), loader (fast batches), utils (seeds, device),
audit and preflight (the checks, reporting through report), bugs (planted-bug pipelines), models
(the course's small nets), train (a transparent loop), plots and widgets (looking at things),
search and tune (hyperparameter search with Optuna, and the ideas behind it), drills and quiz
(interview prep).

The modules that pull in heavy libraries (matplotlib, seaborn, optuna, pandas, ipywidgets) load on
first use, `rk.plots` or `import recipe_kit.plots`, so `import recipe_kit` stays quick in scripts
and worker processes (benchmarks/import_time.py measures it).
"""
import importlib

from .audit import audit_data
from .data import DataError, Images, load_dataset, train_val_split
from .loader import Augment, BatchLoader, channel_stats
from .models import (MixedPrecision, course_cnn, init_final_bias_to_log_prior, logistic_regression, mlp,
                     vgg_cnn)
from .preflight import preflight
from .report import ChecksFailed, Problem, Report
from .train import EarlyStopping, evaluate, fit, predict, snapshot_predictions
from .utils import check_device, pick_device, seed_everything

__version__ = "0.1.0"

LAZY_MODULES = ("bugs", "calibration", "drills", "plots", "quiz", "search", "tune", "widgets")


def __getattr__(name):  # PEP 562: rk.plots imports recipe_kit.plots the first time it is used
    if name in LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'recipe_kit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(LAZY_MODULES))
