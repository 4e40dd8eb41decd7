"""recipe_kit: the companion package of recipe-course.

One concept per module: data (loading, verified), loader (fast batches), utils (seeds, device),
models (the course's small nets), train (a transparent loop), plots and widgets (looking at things).
"""
from . import plots, widgets
from .data import DataError, Images, load_dataset
from .loader import Augment, BatchLoader, channel_stats
from .models import course_cnn, init_final_bias_to_log_prior, logistic_regression, mlp
from .train import EarlyStopping, evaluate, fit, predict, snapshot_predictions
from .utils import pick_device, seed_everything

__version__ = "0.1.0"
