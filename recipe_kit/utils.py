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
        return check_device(prefer, "prefer")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device, argument="device"):
    """torch.device(device), or a ValueError naming `argument` and the fix when this machine lacks it.

    Why: torch's own errors come late (at the first .to()) and say nothing about what to pass instead.
    """
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"{argument}={device!r}: pass a device name such as 'cpu', 'cuda', 'cuda:0' or 'mps', "
                         "or rk.pick_device() for the fastest one here.")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{argument}={str(device)!r} is not a device name ({e}): use 'cpu', 'cuda', 'cuda:0' "
                         "or 'mps', or rk.pick_device() for the fastest one here.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{argument}={str(device)!r}, but PyTorch sees no CUDA GPU here (no NVIDIA GPU, or a "
                             "CPU-only PyTorch build): pass device='cpu', or rk.pick_device(), which picks cuda "
                             "only where it works (README, 'Using a GPU').")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{argument}={str(device)!r}, but this machine has {torch.cuda.device_count()} CUDA "
                             f"GPU(s), numbered from 0: pass device='cuda:0' (or 'cuda').")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{argument}={str(device)!r}, but Apple's MPS is not available here: pass "
                             "device='cpu', or rk.pick_device() for the fastest device here.")
    elif device.type not in ("cpu", "meta"):
        try:  # other backends (xpu, ...): ask torch whether one is there
            available = getattr(torch, device.type).is_available()
        except AttributeError:
            available = True  # a backend we cannot ask: let torch decide
        if not available:
            raise ValueError(f"{argument}={str(device)!r}, but no {device.type} device is available here: pass "
                             "device='cpu', or rk.pick_device() for the fastest device here.")
    return device
