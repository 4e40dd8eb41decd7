"""recipe_kit: the companion package of recipe-course.

One concept per module: data (loading, verified), loader (fast batches), utils (seeds, device),
audit and preflight (the checks, reporting through report), bugs (planted-bug pipelines), models
(the course's small nets), train (a transparent loop), errors (what a model gets wrong), plots and
widgets (looking at things), search, tune and progress (hyperparameter search with Optuna, the
ideas behind it, when to stop), drills and quiz (interview prep), cpu (which
float path this machine trains on), learner (a learner's own copies,
solutions on demand).
"""
from . import bugs, cpu, drills, errors, plots, progress, quiz, search, tune, widgets
from .audit import audit_data
from .data import DataError, Images, load_dataset, train_val_split
from .errors import most_confused, top_losses
from .loader import Augment, BatchLoader, channel_stats
from .models import (MixedPrecision, course_cnn, init_final_bias_to_log_prior, logistic_regression, mlp,
                     vgg_cnn)
from .preflight import preflight
from .report import ChecksFailed, Problem, Report
from .train import EarlyStopping, evaluate, fit, predict, snapshot_predictions
from .utils import pick_device, seed_everything

__version__ = "0.1.0"


def solution(stage, n):
    """Exercise n of notebook `stage`, solved: see learner.solution. (Imported on first use, so that
    `python -m recipe_kit.learner` runs a module the package has not already loaded.)"""
    from .learner import solution
    return solution(stage, n)
