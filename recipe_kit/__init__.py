"""recipe_kit: the companion package of recipe-course.

One concept per module: data (loading, verified), loader (fast batches), utils (seeds, device).
"""
from .data import DataError, Images, load_dataset
from .loader import Augment, BatchLoader
from .utils import pick_device, seed_everything

__version__ = "0.1.0"
