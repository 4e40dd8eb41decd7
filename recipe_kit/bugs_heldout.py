"""Held-out bugs: silent bug classes the checks were NOT calibrated on, to measure how they generalize.

bugs.py is the calibration catalog: its bugs set the thresholds. The bugs here come from real reports
instead, and must never be used to tune a threshold against one bug; they measure whether a check
designed around a property every correct pipeline has catches bugs nobody listed. Sources:
- Humbatova et al. 2020, "Taxonomy of Real Faults in Deep Learning Systems" (ICSE): model (wrong
  activation, missing/extra layer), training (wrong loss, hyperparameters, optimizer), tensors and
  inputs (wrong shape, layout), training data (preprocessing) faults.
- Islam et al. 2019, "A Comprehensive Study on Deep Learning Bug Characteristics" (FSE): structural
  and data bugs in PyTorch/TF programs.
- Recurring threads of discuss.pytorch.org ("parameters not updating: layers in a python list",
  "different results in eval mode: F.dropout without training=self.training", "double sigmoid with
  BCEWithLogitsLoss", "view instead of permute for channels-last images", "StepLR stepped every batch").

Each bug names the checks that diagnose its cause (`checks`); caught = any error, diagnosed = an error
from one of them. benchmarks/checks_heldout.py prints recall and false alarms (on correct_pipelines).
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bugs import adam, mlp, small_cnn, standard_step, standardize


@dataclass(frozen=True)
class HeldOutBug:
    name: str
    source: str            # where bugs of this class are reported
    description: str
    build: Callable        # build(images, labels) -> preflight args (kind "pipeline") or audit_data args ("data")
    checks: frozenset      # errors from these checks name the cause
    kind: str = "pipeline"
    budget: str = "full"


# ----------------------------------------------------------------------------- what is trained

class ListOfLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = [nn.Linear(784, 64), nn.Linear(64, 64)]     # BUG: a plain list, not nn.ModuleList
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


def layers_in_python_list(images, labels):
    return ListOfLayers(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def epoch_schedule_stepped_per_batch(images, labels):
    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        opt.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)   # meant per epoch
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()                                 # BUG: stepped every batch
        return loss
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def weight_decay_typo(images, labels):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5.0)   # BUG: meant 5e-4
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def zero_grad_once(images, labels):
    first = set()

    def step(model, batch, loss_fn, optimizer):
        if optimizer not in first:                                 # BUG: zero_grad "before the loop" only
            optimizer.zero_grad()
            first.add(optimizer)
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def accumulation_never_zeroed(images, labels):
    calls = {}

    def step(model, batch, loss_fn, optimizer):
        n = calls[id(optimizer)] = calls.get(id(optimizer), 0) + 1
        loss = loss_fn(model(batch[0]), batch[1])
        (loss / 4).backward()
        if n % 4 == 0:
            optimizer.step()                                       # BUG: no zero_grad after the step
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def sum_reduction_with_mean_lr(images, labels):
    make = lambda params: torch.optim.SGD(params, lr=0.1)         # tuned for reduction="mean"
    return (mlp(), (standardize(images), labels), nn.CrossEntropyLoss(reduction="sum"), make,   # BUG: 64x steps
            standard_step)


# ----------------------------------------------------------------------------- what the loss counts

def ignore_index_is_a_class(images, labels):
    loss = nn.CrossEntropyLoss(ignore_index=0)                     # BUG: "ignore padding" copied from NLP code
    return mlp(), (standardize(images), labels), loss, adam(), standard_step


def inverted_class_weights(images, labels):
    keep = torch.cat([(labels < 5).nonzero()[:, 0], (labels >= 5).nonzero()[:100, 0]])
    y = labels[keep]
    counts = torch.bincount(y, minlength=10).float()
    weight = counts / counts.mean()                                # BUG: meant mean / counts
    return mlp(), (standardize(images[keep]), y), nn.CrossEntropyLoss(weight=weight), adam(), standard_step


class OneOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


def regression_on_class_ids(images, labels):
    # BUG: 10 unordered classes fitted as a number 0..9 with MSE: "Sandal" sits between 4 and 6
    return OneOutput(), (standardize(images), labels.float()), nn.MSELoss(), adam(), standard_step


def double_sigmoid_bce(images, labels):
    keep = (labels == 5) | (labels == 7)
    model = nn.Sequential(OneOutput(), nn.Sigmoid())               # BUG: BCEWithLogitsLoss applies sigmoid again
    return model, (standardize(images[keep]), (labels[keep] == 7).float()), nn.BCEWithLogitsLoss(), adam(), \
        standard_step


# ----------------------------------------------------------------------------- what the model sees

class DropoutAlwaysOn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 128), nn.Linear(128, 10)

    def forward(self, x):
        h = F.dropout(torch.relu(self.fc1(x.flatten(1))), 0.5)     # BUG: no training=self.training
        return self.fc2(h)


def dropout_in_eval(images, labels):
    return DropoutAlwaysOn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class ViewNotPermute(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, x):                                          # x: (B, H, W, C) channels-last
        return self.net(x.reshape(len(x), 3, 32, 32))              # BUG: meant x.permute(0, 3, 1, 2)


def channels_last_viewed(images, labels):
    x = F.pad(images.float() / 255, (2, 2, 2, 2)) * torch.tensor([1.0, 0.7, 0.4]).view(1, 3, 1, 1)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return ViewNotPermute(), (x.permute(0, 2, 3, 1).contiguous(), labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


def batchnorm_without_running_stats(images, labels):
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8, track_running_stats=False),  # BUG
                          nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * 7 * 7, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def normalized_twice(images, labels):
    x = standardize(images)
    return small_cnn(), ((x - 0.2860) / 0.3530, labels), nn.CrossEntropyLoss(), adam(), standard_step   # BUG


# ----------------------------------------------------------------------------- data (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def label_watermark(images, labels):
    """A corner pixel encodes the label in train only (a scanner stamp, a file-name leak)."""
    x, y, xt, yt = _split(images, labels)
    x = x.clone()
    x[:, 0, 0, 0] = (y * 25).to(torch.uint8)                       # BUG: the label, written into a pixel
    return (x, y), (xt, yt), 10


def test_rotated(images, labels):
    """The test set went through another pipeline: every image transposed (another source's geometry)."""
    x, y, xt, yt = _split(images, labels)
    return (x, y), (xt.transpose(2, 3).contiguous(), yt), 10      # BUG: same pixel statistics, other geometry


def test_downscaled(images, labels):
    """Test images at half resolution, upscaled back: same mean, blurred (another camera, a resize)."""
    x, y, xt, yt = _split(images, labels)
    small = F.interpolate(xt.float(), scale_factor=0.5, mode="area")
    blurred = F.interpolate(small, size=(28, 28), mode="nearest").round().to(torch.uint8)   # BUG
    return (x, y), (blurred, yt), 10


HELD_OUT = [
    HeldOutBug("layers_in_python_list", "PyTorch forums; Islam et al. 2019 (structural)", "Hidden layers kept in "
               "a python list: invisible to model.parameters(), so never trained.", layers_in_python_list,
               frozenset({"registered_params"})),
    HeldOutBug("epoch_schedule_stepped_per_batch", "PyTorch forums; Humbatova et al. 2020 (training: "
               "hyperparameters)", "StepLR(step_size=10) meant per epoch, stepped every batch: the lr halves "
               "every 10 steps.", epoch_schedule_stepped_per_batch, frozenset({"lr_schedule"})),
    HeldOutBug("weight_decay_typo", "Humbatova et al. 2020 (training: regularization)", "weight_decay=5.0 "
               "instead of 5e-4: the decay term swamps the gradient.", weight_decay_typo, frozenset({"weight_decay"})),
    HeldOutBug("zero_grad_once", "PyTorch forums", "zero_grad() called once before the loop, not every step.",
               zero_grad_once, frozenset({"zero_grad"})),
    HeldOutBug("accumulation_never_zeroed", "PyTorch forums", "gradient accumulation that steps every 4 "
               "batches but never zeroes.", accumulation_never_zeroed, frozenset({"zero_grad"})),
    HeldOutBug("sum_reduction_with_mean_lr", "Humbatova et al. 2020 (training: loss)", "reduction='sum' with "
               "an SGD lr tuned for the mean: steps 64x too large.", sum_reduction_with_mean_lr,
               frozenset({"step_updates", "overfit_batch"})),
    HeldOutBug("ignore_index_is_a_class", "PyTorch forums", "CrossEntropyLoss(ignore_index=0) on labels "
               "where 0 is a real class: class 0 never contributes.", ignore_index_is_a_class,
               frozenset({"loss_classes"})),
    HeldOutBug("inverted_class_weights", "Humbatova et al. 2020 (training: loss)", "class weights proportional "
               "to the counts: the rare classes are weighted down.", inverted_class_weights,
               frozenset({"loss_classes"})),
    HeldOutBug("regression_on_class_ids", "Humbatova et al. 2020 (training: wrong loss)", "10 classes fitted "
               "as a number with MSELoss.", regression_on_class_ids, frozenset({"loss_classes"})),
    HeldOutBug("double_sigmoid_bce", "PyTorch forums", "a Sigmoid at the end of the model and "
               "BCEWithLogitsLoss: outputs squashed twice.", double_sigmoid_bce, frozenset({"output_activation"})),
    HeldOutBug("dropout_in_eval", "PyTorch forums", "F.dropout without training=self.training: eval outputs "
               "are random.", dropout_in_eval, frozenset({"eval_determinism"})),
    HeldOutBug("channels_last_viewed", "PyTorch forums; Humbatova et al. 2020 (tensors: wrong shape)",
               "(B, H, W, C) images reshaped to (B, C, H, W) instead of permuted: scrambled geometry, same "
               "statistics.", channels_last_viewed, frozenset({"input_layout"})),
    HeldOutBug("batchnorm_without_running_stats", "PyTorch forums", "BatchNorm2d(track_running_stats=False): "
               "eval outputs depend on the other samples of the batch.", batchnorm_without_running_stats,
               frozenset({"batch_independence"})),
    HeldOutBug("normalized_twice", "Humbatova et al. 2020 (training data: preprocessing)", "standardized "
               "images standardized again.", normalized_twice, frozenset({"input_scale"})),
    HeldOutBug("label_watermark", "shortcut learning (Geirhos et al. 2020)", "a pixel encodes the label in "
               "train only.", label_watermark, frozenset({"shortcuts"}), "data"),
    HeldOutBug("test_rotated", "dataset shift; adversarial validation", "test images transposed: same pixel "
               "statistics, other geometry.", test_rotated, frozenset({"train_vs_test"}), "data"),
    HeldOutBug("test_downscaled", "dataset shift; adversarial validation", "test images at half resolution.",
               test_downscaled, frozenset({"train_vs_test"}), "data"),
]

BY_NAME = {b.name: b for b in HELD_OUT}
