"""One preserved-RNG helper: checks and tuning may draw random numbers, but must leave the caller's
python, numpy, torch (and CUDA) random states exactly as they found them, so a training run after
them gives the same numbers as without them."""
import contextlib
import random

import numpy as np
import torch


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Restore the python/numpy/torch global random states (and CUDA's, when initialized) on exit."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
