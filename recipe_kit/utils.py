"""Reproducibility and hardware: the two things every notebook sets before anything else."""
import os
import random

import numpy as np
import torch


def seed_everything(seed=0):
    """Seed python, numpy and torch (all devices), so a rerun gives the same numbers.

    Note: CPU results can still differ across thread counts (pytorch/pytorch#88718), so code that
    compares numbers also pins torch.set_num_threads and compares with a tolerance.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds cuda and mps
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses (e.g. DataLoader workers)
    return seed


def pick_device(prefer=None):
    """The fastest device here: cuda, then mps (Apple), then cpu. `prefer` forces one ("cpu")."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
