"""Correct but advanced training pipelines: the checks must stay quiet on every one of them.

A check that fires on correct code teaches learners to ignore it, and hides the same message on a
real bug. Each Pipeline here is written the way a careful practitioner writes it (gradient
accumulation, AMP with a GradScaler, EMA, mixup, a frozen pretrained backbone...) and must get no
error from preflight; the warnings it may get are listed, with why they are justified.

    for p in CORRECT:
        report = preflight(*p.build(images, labels), budget="full")
        assert report.ok and {w.check for w in report.warnings} <= p.warnings

build(images uint8 (N, 1, 28, 28), labels (N,)) -> (model, train, loss_fn, make_optimizer, train_step);
the pipelines that need other data (8x8 digits, 32x32 colour images) make it from these.
"""
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bugs import adam, mlp, small_cnn, standard_step, standardize


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str          # the practice, and what a naive check gets wrong about it
    build: Callable
    warnings: frozenset = frozenset()   # checks allowed to warn, each justified in the description


# ----------------------------------------------------------------------------- steps

def accumulating_step(every=4):
    """Gradient accumulation done right: zero_grad and step once every `every` micro-batches."""
    calls = weakref.WeakKeyDictionary()     # per optimizer: preflight builds several

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        n = calls[optimizer] = calls.get(optimizer, 0) + 1
        loss = loss_fn(model(x), y)
        (loss / every).backward()
        if n % every == 0:
            optimizer.step()
            optimizer.zero_grad()
        return loss.item()
    return step


def amp_step(dtype=torch.float16):
    """Mixed precision with a GradScaler: clip after unscale_, as the PyTorch AMP recipe says."""
    scalers = weakref.WeakKeyDictionary()

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        scaler = scalers.setdefault(optimizer, torch.amp.GradScaler(x.device.type))
        optimizer.zero_grad()
        with torch.autocast(x.device.type, dtype=dtype):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        return loss.item()
    return step


def bf16_step(model, batch, loss_fn, optimizer):
    x, y = batch
    optimizer.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def ema_step(decay=0.99):
    """An exponential moving average of the weights, updated after every step (kept per model)."""
    emas = weakref.WeakKeyDictionary()

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        ema = emas.get(model)
        if ema is None:
            ema = emas[model] = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay))
        ema.update_parameters(model)
        return loss
    return step


def mixup_step(model, batch, loss_fn, optimizer, alpha=0.2, num_classes=10):
    """Mixup with soft targets: mix pairs of inputs and their one-hot labels with a Beta(alpha, alpha) weight."""
    x, y = batch
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    soft = F.one_hot(y, num_classes).float()
    x_mix, y_mix = lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
    optimizer.zero_grad()
    loss = loss_fn(model(x_mix), y_mix)          # CrossEntropyLoss accepts class probabilities as targets
    loss.backward()
    optimizer.step()
    return loss.item()


def clipped_step(model, batch, loss_fn, optimizer):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
    optimizer.step()
    return loss.item()


def scheduled_step(model, batch, loss_fn, optimizer):
    """A OneCycle schedule stepped once per batch, as it is meant to be (it is attached to the optimizer)."""
    loss = standard_step(model, batch, loss_fn, optimizer)
    optimizer.scheduler.step()
    return loss


def one_cycle(params, total_steps=2000):
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    opt.scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total_steps)
    return opt


# ----------------------------------------------------------------------------- models and data

class Backbone(nn.Module):
    """A small CNN with a separate head, the shape of a torchvision model."""

    def __init__(self, channels=1, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32 * 4, classes)

    def forward(self, x):
        return self.head(self.features(x))


def pretrained_frozen(images, labels, steps=60):
    """A backbone trained for a few steps (standing in for pretrained weights), then frozen; a new head."""
    gen = torch.Generator().manual_seed(0)
    model, x = Backbone(), standardize(images)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), labels[idx]).backward()
            opt.step()
        model.head = nn.Linear(32 * 4, 10)                # a new task's head
    for p in model.features.parameters():
        p.requires_grad_(False)
    model.features.eval()                                 # frozen BatchNorm statistics too

    def step(model, batch, loss_fn, optimizer):
        model.train()
        model.features.eval()
        return standard_step(model, batch, loss_fn, optimizer)
    head_only = lambda params: torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)
    return model, (x, labels), nn.CrossEntropyLoss(), head_only, step


def class_weighted(images, labels):
    """Imbalanced classes (class 0 kept whole, the rest thinned) with inverse-frequency loss weights."""
    keep = torch.cat([(labels < 5).nonzero()[:, 0], (labels >= 5).nonzero()[:200, 0]])
    y = labels[keep]
    counts = torch.bincount(y, minlength=10).float()
    weight = counts.sum() / (10 * counts)
    return mlp(), (standardize(images[keep]), y), nn.CrossEntropyLoss(weight=weight), adam(), standard_step


class BinaryHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)                     # (B,) logits for BCEWithLogitsLoss


def binary_bce(images, labels):
    """Two classes (sandal vs sneaker), one output unit, BCEWithLogitsLoss on float targets."""
    keep = (labels == 5) | (labels == 7)
    return (BinaryHead(), (standardize(images[keep]), (labels[keep] == 7).float()), nn.BCEWithLogitsLoss(),
            adam(), standard_step)


def digits_8x8(images, labels):
    """scikit-learn's 8x8 digits (0..16 pixel values), standardized, a small CNN."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None]     # (1797, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    return model, (x, torch.tensor(d.target)), nn.CrossEntropyLoss(), adam(), standard_step


def colour_32x32(images, labels):
    """32x32x3 inputs: Fashion-MNIST padded to 32x32 and tinted per channel, standardized per channel."""
    x = F.pad(images.float() / 255, (2, 2, 2, 2))                 # (N, 1, 32, 32)
    tint = torch.tensor([1.0, 0.7, 0.4]).view(1, 3, 1, 1)
    x = x * tint                                                  # (N, 3, 32, 32)
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    return Backbone(channels=3), ((x - mean) / std, labels), nn.CrossEntropyLoss(), adam(), standard_step


def with_step(step, loss=nn.CrossEntropyLoss, make=None, model=mlp):
    return lambda images, labels: (model(), (standardize(images), labels), loss(), make or adam(), step)


CORRECT = [
    Pipeline("gradient_accumulation", "zero_grad and step every 4 micro-batches, loss divided by 4: the "
             "gradient grows within an accumulation window by design.", with_step(accumulating_step(4))),
    Pipeline("amp_grad_scaler", "float16 autocast with a GradScaler, clipping after unscale_: gradients "
             "are 65536x larger than the true ones until unscale_.", with_step(amp_step())),
    Pipeline("bf16_autocast", "bfloat16 autocast around forward and loss: no scaler needed.",
             with_step(bf16_step, model=small_cnn)),
    Pipeline("ema_of_weights", "an EMA copy of the weights updated after each step.", with_step(ema_step())),
    Pipeline("mixup_soft_targets", "mixup of inputs and one-hot targets inside the step: the step mixes "
             "samples on purpose, and one batch cannot be memorized to zero loss.", with_step(mixup_step)),
    Pipeline("frozen_pretrained_backbone", "a trained backbone frozen (requires_grad=False, BatchNorm in "
             "eval), only the new head in the optimizer: a note (no warning) says which layers are frozen.",
             pretrained_frozen),
    Pipeline("class_weighted_loss", "inverse-frequency class weights in CrossEntropyLoss on imbalanced "
             "classes.", class_weighted),
    Pipeline("bce_one_output", "a binary task with one logit and BCEWithLogitsLoss.", binary_bce),
    Pipeline("one_cycle_per_step", "OneCycleLR stepped every batch, as designed, on SGD with nesterov "
             "momentum and weight decay: it starts at max_lr/25.", with_step(scheduled_step, make=one_cycle)),
    Pipeline("label_smoothing", "CrossEntropyLoss(label_smoothing=0.1): the loss floor is not 0.",
             with_step(standard_step, loss=lambda: nn.CrossEntropyLoss(label_smoothing=0.1))),
    Pipeline("gradient_clipping", "clip_grad_norm_ to 0.5 between backward and step.", with_step(clipped_step)),
    Pipeline("digits_8x8", "scikit-learn digits, 8x8 inputs, 1797 samples.", digits_8x8),
    Pipeline("colour_32x32", "3-channel 32x32 inputs, per-channel standardization.", colour_32x32),
]

BY_NAME = {p.name: p for p in CORRECT}
