"""A seeded in-memory batch loader: augmentations as tensor ops on whole batches, on the model's device.

Why not torchvision's DataLoader? For a dataset that fits in memory, per-image PIL transforms cost
more than the model itself on a laptop CPU (benchmarks/loader.py measures the gap). Here the dataset
lives on the device as uint8, a batch is one index, and each augmentation is a few tensor ops on the
whole batch (the cifar10-airbench approach). Labels are never touched by augmentation.

    loader = BatchLoader(train.images, train.labels, batch_size=128, seed=0,
                         augment=Augment(crop_padding=2, flip=True), mean=(0.286,), std=(0.353,))
    for x, y in loader:   # x: (B, C, H, W) float32 normalized, y: (B,) int64, both on loader.device
        ...
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .utils import check_device


@dataclass(frozen=True)
class Augment:
    """Which batch augmentations to apply (all off by default: stage 2 of the recipe wants none)."""
    crop_padding: int = 0              # pixels of zero padding, then a random crop back to size
    flip: bool = False                 # horizontal flip with probability 0.5
    erase_p: float = 0.0               # probability of erasing one rectangle (random erasing/cutout)
    erase_scale: tuple = (0.02, 0.33)  # erased area as a fraction of the image
    erase_ratio: tuple = (0.3, 3.3)    # aspect ratio range of the erased rectangle


def channel_stats(images):
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0..1 scale, as tuples."""
    x = images.float().div_(255)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


# ----------------------------------------------------------------------------- batch augmentations
# Each takes a float batch (B, C, H, W) and a CPU torch.Generator; random numbers are drawn on the CPU
# so the same seed gives the same batches on every device.

def random_crop(x, padding, gen):
    """Pad with zeros, then crop each image back to (H, W) at its own random offset."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))    # (B, C, H+2p, W+2p)
    windows = padded.unfold(2, H, 1).unfold(3, W, 1)             # (B, C, 2p+1, 2p+1, H, W), a view
    dy = torch.randint(0, 2 * padding + 1, (B,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (B,), generator=gen).to(x.device)
    return windows[torch.arange(B, device=x.device), :, dy, dx]  # (B, C, H, W): one window each


def random_flip(x, gen):
    """Mirror left-right each image with probability 0.5."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_erase(x, gen, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, inplace=False):
    """Set one random rectangle per image to `value` with probability p (Zhong et al. 2017).
    inplace=True overwrites x (the loader's own batch) instead of copying it."""
    B, _, H, W = x.shape
    u = torch.rand(5, B, generator=gen)                          # one draw: area, aspect, top, left, apply
    area = (scale[0] + u[0] * (scale[1] - scale[0])) * H * W
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + u[1] * (log_hi - log_lo))         # log-uniform, as torchvision
    h = (area * aspect).sqrt().round().clamp(1, H)
    w = (area / aspect).sqrt().round().clamp(1, W)
    top, left = (u[2] * (H - h + 1)).floor(), (u[3] * (W - w + 1)).floor()
    apply = u[4] < p
    top, left, h, w, apply = (t.to(x.device) for t in (top, left, h, w, apply))
    rows, cols = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None]) & apply[:, None]  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])                 # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]                                 # (B, H, W)
    return x.masked_fill_(mask[:, None], value) if inplace else x.masked_fill(mask[:, None], value)


def normalize(x, mean, std, inplace=False):
    """(x - mean) / std per channel; mean and std are sequences of length C. inplace=True overwrites x."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return x.sub_(mean).div_(std) if inplace else (x - mean) / std


def augment_batch(x_uint8, augment, gen, mean=None, std=None):
    """uint8 batch -> float batch: crop and flip (on bytes, 4x less memory), scale to 0..1,
    normalize, then erase (to 0, the mean once normalized)."""
    x = x_uint8
    if augment.crop_padding:
        x = random_crop(x, augment.crop_padding, gen)
    if augment.flip:
        x = random_flip(x, gen)
    x = x.float().div_(255)
    if mean is not None:  # in place: x is this batch's own fresh tensor
        x = normalize(x, mean, std, inplace=True)
    if augment.erase_p:
        x = random_erase(x, gen, augment.erase_p, augment.erase_scale, augment.erase_ratio, inplace=True)
    return x


# ----------------------------------------------------------------------------- the loader

class BatchLoader:
    """Iterate (x, y) batches of an in-memory dataset, shuffled by its own seeded generator.

    Epoch e draws its order and augmentations from a generator seeded with (seed, e), so runs with
    the same seed see the same batches, and peeking at one epoch never shifts the next. A DataLoader
    is the right tool when data does not fit in memory or needs per-file decoding.
    """

    def __init__(self, images, labels, batch_size=128, shuffle=True, seed=0, augment=None,
                 mean=None, std=None, device="cpu", drop_last=False):
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} items but labels has {len(labels)}: "
                             "pass the images and labels of the same split.")
        if len(images) == 0:
            raise ValueError("images is empty: check the split you loaded.")
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}; "
                             "load_dataset() returns that layout.")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (see channel_stats), or neither.")
        self.device = check_device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.augment = augment or Augment()
        if mean is not None:  # tensors on the device once, not per batch
            mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
            std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.mean, self.std = mean, std
        self.epoch = 0

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = augment_batch(self.images[idx], self.augment, gen, self.mean, self.std)
            yield x, self.labels[idx]
