"""Second blind held-out catalog: bug classes and correct pipelines written without reading the checks.

bugs_blind.py was blind when it was first scored, then the checks were fixed while looking at it, so it
no longer measures how the checks do on bugs nobody has seen. This catalog was written after that, for
one scoring run (benchmarks/checks_blind2.py, docs/checks_blind2_first_run.txt), from real reports only
and without reading the implementations of the checks (preflight_checks.py, preflight_mechanisms.py,
audit*.py): only the check names and one-line descriptions of the public report (preflight.CHECKS,
audit.CHECKS) were used to fix, per bug and before the run, which checks would name its cause.

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py (a different mechanism, not a
renamed copy). Sources, cited per bug:
- Humbatova et al. 2020, "Taxonomy of Real Faults in Deep Learning Systems" (ICSE), Islam et al. 2019,
  "A Comprehensive Study on Deep Learning Bug Characteristics" (FSE), Zhang et al. 2018, "An Empirical
  Study on TensorFlow Program Bugs" (ISSTA);
- threads of discuss.pytorch.org, GitHub issues and Q&A pages, cited by address;
- shortcut learning in medical imaging: DeGrave, Janizek & Lee 2021 (Nature Machine Intelligence,
  "AI for radiographic COVID-19 detection selects shortcuts over signal": the image source, with its
  resolution and exposure, predicts the label), Zech et al. 2018 (PLOS Medicine);
- leakage: Kapoor & Narayanan 2023 (Patterns, "Leakage and the reproducibility crisis in ML-based
  science": no clean train/test separation, duplicates across splits).

`checks`: the checks whose error or warning would name the cause, judged from the names and
descriptions alone; a name that is no check (e.g. "augmentation", "target_scale") means that no check's
description covers this cause, so the bug can be caught but not diagnosed. CORRECTED holds, for each
pipeline bug, the same pipeline with the bug fixed (tests/test_blind2.py compares the two).
CORRECT_BLIND2 are correct pipelines in neither correct_pipelines.py nor bugs_blind.py (no warning
allowed), clean_splits2 the clean data the audit must pass.
"""
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .bugs import adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import ATTRIBUTES, MaskNet, Squeezed, digits, digits_cnn, ink, mlp_out, scheduled
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Backbone, Pipeline, mixup_step


# ----------------------------------------------------------------------------- shared pieces

def per_optimizer():
    """State kept per optimizer (preflight builds several optimizers, one per check)."""
    return weakref.WeakKeyDictionary()


def restandardize(x):
    return (x - x.mean()) / x.std()


def grey_levels(images):
    """A per-pixel 3-class target: 0 background (< 30), 1 mid grey, 2 bright (> 150)."""
    return (images[:, 0] >= 30).long() + (images[:, 0] > 150).long()


class SegNet3(nn.Module):
    """A tiny fully convolutional net with 3 class logits per pixel: (B, 3, 28, 28)."""

    def __init__(self, log_softmax_dim=None):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 3, 3, padding=1))
        self.dim = log_softmax_dim

    def forward(self, x):
        out = self.net(x)
        return out if self.dim is None else F.log_softmax(out, dim=self.dim)


def smoothed(y, classes=10, eps=0.1):
    return F.one_hot(y, classes).float() * (1 - eps) + eps / classes


# ----------------------------------------------------------------------------- what is trained

class HeadBuiltInForward(nn.Module):
    def __init__(self, in_init=False):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.head = nn.Linear(64, 10) if in_init else None

    def forward(self, x):
        head = self.head if self.head is not None else nn.Linear(64, 10)   # BUG (in_init=False): a new random
        return head(self.body(x))                                           # head at every call, never trained


def layer_created_in_forward(images, labels, fixed=False):
    return HeadBuiltInForward(in_init=fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


def dropout_keep_prob_as_p(images, labels, fixed=False):
    p = 0.1 if fixed else 0.9          # BUG: TensorFlow's keep_prob=0.9 ported as PyTorch's p (the DROP prob)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(p), nn.Linear(256, 256),
                          nn.ReLU(), nn.Dropout(p), nn.Linear(256, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class TwoHeads(nn.Module):
    """A shared trunk, a 10-class head and a 4-attribute head, returned side by side as (B, 14)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.classes, self.attributes = nn.Linear(64, 10), nn.Linear(64, 4)

    def forward(self, x):
        h = self.trunk(x)
        return torch.cat([self.classes(h), self.attributes(h)], 1)


def multi_head_loss_typo(images, labels, fixed=False):
    def loss_fn(out, y):
        loss_cls = F.cross_entropy(out[:, :10], y)
        loss_attr = F.binary_cross_entropy_with_logits(out[:, 10:], ATTRIBUTES[y])
        return loss_cls + (loss_attr if fixed else loss_cls)     # BUG: copy-paste, the attribute term is never added
    return TwoHeads(), (standardize(images), labels), loss_fn, adam(), standard_step


# ----------------------------------------------------------------------------- what the loss counts

def kl_div_on_probabilities(images, labels, fixed=False):
    """Label-smoothed targets through KL divergence; F.kl_div wants LOG-probabilities as its input."""
    def loss_fn(out, y):
        inp = F.log_softmax(out, 1) if fixed else F.softmax(out, 1)   # BUG: probabilities where log-probs go
        return F.kl_div(inp, smoothed(y), reduction="batchmean")
    return mlp(), (standardize(images), labels), loss_fn, adam(), standard_step


def log_softmax_over_width(images, labels, fixed=False):
    # BUG: (B, 3, H, W) logits normalized over the last axis (image width), not over the class axis 1
    return SegNet3(log_softmax_dim=1 if fixed else -1), (standardize(images), grey_levels(images)), nn.NLLLoss(), \
        adam(), standard_step


def unscaled_regression_target(images, labels, fixed=False):
    count = (images > 127).float().sum((1, 2, 3))      # BUG: the target is a pixel count, 0..~500, not standardized
    target = ink(images) if fixed else count
    return Squeezed(mlp_out(1)), (standardize(images), target), nn.MSELoss(), adam(), standard_step


# ----------------------------------------------------------------------------- what the model sees

def center_crop_instead_of_resize(images, labels, fixed=False):
    """An 8x8-input network (written for scikit-learn's digits) reused on 28x28 images."""
    x = standardize(images)
    if fixed:
        small = F.interpolate(x, size=(8, 8), mode="area")
    else:
        small = x[:, :, 10:18, 10:18]                   # BUG: CenterCrop(8) where Resize(8) was meant
    return digits_cnn(), (restandardize(small), labels), nn.CrossEntropyLoss(), adam(), standard_step


def mask_flipped_independently(images, labels, fixed=False):
    def step(model, batch, loss_fn, optimizer):
        x, m = batch
        flip_x = bool(torch.rand(()) < 0.5)
        flip_m = flip_x if fixed else bool(torch.rand(()) < 0.5)     # BUG: a second, independent draw for the mask
        x = x.flip(-1) if flip_x else x
        m = m.flip(-1) if flip_m else m
        return standard_step(model, (x, m), loss_fn, optimizer)
    return MaskNet(), (standardize(images), (images > 127).float()), nn.BCEWithLogitsLoss(), adam(), step


def mixup_hard_labels_step(model, batch, loss_fn, optimizer, alpha=0.2):
    x, y = batch
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x))
    optimizer.zero_grad()
    loss = loss_fn(model(lam * x + (1 - lam) * x[perm]), y)     # BUG: inputs mixed, labels not (half are wrong)
    loss.backward()
    optimizer.step()
    return loss.item()


def mixup_labels_not_mixed(images, labels, fixed=False):
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), \
        mixup_step if fixed else mixup_hard_labels_step


# ----------------------------------------------------------------------------- eval / train mode

class DropPathMLP(nn.Module):
    """Residual MLP with stochastic depth (Huang et al. 2016): each block skipped per sample in training."""

    def __init__(self, survival=0.5, scaled=True, blocks=3):
        super().__init__()
        self.inp, self.head = nn.Linear(784, 64), nn.Linear(64, 10)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
                                    for _ in range(blocks))
        self.survival, self.scaled = survival, scaled

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        for block in self.blocks:
            branch = block(h)
            if self.training:
                keep = (torch.rand(len(h), 1, device=h.device) < self.survival).to(h.dtype)
                branch = branch * keep / (self.survival if self.scaled else 1.0)   # BUG (scaled=False): no 1/p,
            h = h + branch                                                         # so eval sees 2x the branch
        return self.head(h)


def drop_path_unscaled(images, labels, fixed=False):
    return DropPathMLP(scaled=fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class TrainOverride(nn.Module):
    """Overrides train() (to freeze parts later), but sets every child to train mode whatever `mode` is."""

    def __init__(self, fixed=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(4), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(16 * 3 * 3, 10))
        self.fixed = fixed

    def train(self, mode=True):
        self.training = mode
        for child in self.children():
            child.train(mode) if self.fixed else child.train()      # BUG: child.train() ignores mode
        return self

    def forward(self, x):
        return self.classifier(self.features(x))


def train_override_ignores_mode(images, labels, fixed=False):
    return TrainOverride(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- optimizer and schedule

def plateau_on_accuracy(images, labels, fixed=False):
    """ReduceLROnPlateau stepped every batch on a smoothed training accuracy."""
    smooth = per_optimizer()

    def make(params):
        opt = torch.optim.Adam(params, lr=1e-3)
        # BUG (mode="min", the default): accuracy should go UP; every rise counts as "no improvement"
        opt.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max" if fixed else "min",
                                                                   factor=0.5, patience=10)
        return opt

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        optimizer.step()
        acc = (out.argmax(1) == y).float().mean().item()
        smooth[optimizer] = acc if optimizer not in smooth else 0.9 * smooth[optimizer] + 0.1 * acc
        optimizer.scheduler.step(smooth[optimizer])
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def clip_before_backward(images, labels, fixed=False):
    """SGD at a high lr made stable by clipping the gradient norm to 1, as the recipe it came from did."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        if not fixed:
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # BUG: before backward: there is nothing to clip
        loss = loss_fn(model(x), y)
        loss.backward()
        if fixed:
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()
    make = lambda params: torch.optim.SGD(params, lr=1.0, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def scheduler_on_stale_optimizer(images, labels, fixed=False):
    """A linear warmup over 100 steps to SGD's lr 0.4; the optimizer was rebuilt after the scheduler."""
    def make(params):
        params = list(params)
        opt = torch.optim.SGD(params, lr=0.4, momentum=0.9)
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
        if not fixed:
            opt = torch.optim.SGD(params, lr=0.4, momentum=0.9, nesterov=True)   # BUG: rebuilt (nesterov added):
        opt.scheduler = warmup                                                # the warmup steps the old one
        return opt
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, scheduled()


def adam_eps_one(images, labels, fixed=False):
    # BUG: eps=1.0 copied from the TensorFlow docs' advice for Inception: Adam turns into SGD with lr 1e-3
    make = lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-8 if fixed else 1.0)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


# ----------------------------------------------------------------------------- data pipeline

def sorted_collate(fixed=False):
    def collate(batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        order = (x > 0).flatten(1).sum(1).argsort(descending=True)     # "longest first", as for packed sequences
        return x[order], (y[order] if fixed else y)                     # BUG: the labels are not reordered
    return collate


def collate_sorts_inputs_only(images, labels, fixed=False):
    loader = DataLoader(TensorDataset(standardize(images), labels), batch_size=64, shuffle=True,
                        collate_fn=sorted_collate(fixed), generator=torch.Generator().manual_seed(0))
    return mlp(), loader, nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def digits_uint8():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.images * 255 / 16).round().to(torch.uint8)[:, None], torch.tensor(d.target)


def uint8_brightness_wraparound(images, labels):
    """Brightness augmentation written on uint8 tensors: bright pixels wrap around to dark."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(0)
    some = torch.rand(len(y), generator=g) < 0.5
    x = x.clone()
    x[some] = x[some] + 60                                     # BUG: 230 + 60 = 34 in uint8 (no saturation)
    return (x, y), (xt, yt), 10


def split_twice_without_seed(images, labels):
    """train_test_split called once for train and again (another shuffle) for test: the splits overlap."""
    x, y = digits_uint8()
    n = len(y) * 3 // 4
    first = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    second = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))   # BUG: a second shuffle
    tr, te = first[:n], second[n:]
    return (x[tr], y[tr]), (x[te], y[te]), 10


def unshuffled_split_of_sorted_data(images, labels):
    """A class-sorted export split by position (shuffle=False): the test split holds the last classes only."""
    order = labels.argsort(stable=True)
    x, y = images[order], labels[order]                       # the export is sorted by class
    n = len(y) * 3 // 4
    return (x[:n], y[:n]), (x[n:], y[n:]), 10                  # BUG: split without shuffling


def missing_class_folder_in_test(images, labels):
    """ImageFolder numbers the folders it finds: the test export lacks class 3, so classes 4..9 become 3..8."""
    x, y, xt, yt = _split(images, labels)
    keep = yt != 3
    xt, yt = xt[keep], yt[keep]
    yt = torch.where(yt > 3, yt - 1, yt)                      # BUG: test ids shifted after the missing folder
    return (x, y), (xt, yt), 10


def zoomed_copies_in_test(images, labels):
    """Half the test images are other photos of train items: the same garment, 15% closer."""
    x, y, xt, yt = _split(images, labels)
    half = len(yt) // 2
    crop = x[:half, :, 2:26, 2:26].float()
    zoomed = F.interpolate(crop, size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255)
    xt, yt = xt.clone(), yt.clone()
    xt[:half], yt[:half] = zoomed.to(torch.uint8), y[:half]   # BUG: the same items on both sides of the split
    return (x, y), (xt, yt), 10


def _blur(x):
    small = F.avg_pool2d(x.float(), 2)
    return F.interpolate(small, scale_factor=2, mode="nearest").round().to(torch.uint8)


def class_dependent_blur(images, labels):
    """Tops (classes 0, 2, 4, 6) came from a low-resolution source in train; in test the source is random."""
    x, y, xt, yt = _split(images, labels)
    tops = (y == 0) | (y == 2) | (y == 4) | (y == 6)
    x = x.clone()
    x[tops] = _blur(x[tops])                                   # BUG: resolution predicts the class in train
    g = torch.Generator().manual_seed(0)
    some = torch.rand(len(yt), generator=g) < 0.4
    xt = xt.clone()
    xt[some] = _blur(xt[some])
    return (x, y), (xt, yt), 10


def class_dependent_exposure(images, labels):
    """Footwear (classes 5, 7, 9) photographed darker in train (another studio); in test at random."""
    x, y, xt, yt = _split(images, labels)
    shoes = (y == 5) | (y == 7) | (y == 9)
    x = x.clone()
    x[shoes] = (x[shoes].float() * 0.6).round().to(torch.uint8)   # BUG: exposure predicts the class in train
    g = torch.Generator().manual_seed(0)
    some = torch.rand(len(yt), generator=g) < 0.3
    xt = xt.clone()
    xt[some] = (xt[some].float() * 0.6).round().to(torch.uint8)
    return (x, y), (xt, yt), 10


HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
BLIND2 = [
    # what is trained
    HeldOutBug("layer_created_in_forward", "discuss.pytorch.org/t/can-i-instantiate-layers-in-forward-function/"
               "105054; Islam et al. 2019 (structural: data flow)", "nn.Linear built inside forward: a new random "
               "head at every call, outside model.parameters().", layer_created_in_forward,
               frozenset({"registered_params", "eval_determinism"})),
    HeldOutBug("dropout_keep_prob_as_p", "discuss.pytorch.org/t/the-p-in-dropout/10698 (TensorFlow's keep_prob "
               "vs PyTorch's p); " + HUMBATOVA + " (model: layer properties, regularisation)",
               "nn.Dropout(0.9) meaning keep 90%: 90% of the units are dropped.", dropout_keep_prob_as_p,
               frozenset({"dropout_rate"})),
    HeldOutBug("multi_head_loss_typo", HUMBATOVA + " (training: wrong loss input); Islam et al. 2019 (data flow)",
               "loss_cls + loss_cls: the attribute head is never in the loss.", multi_head_loss_typo,
               frozenset({"param_grads"})),
    # what the loss counts
    HeldOutBug("kl_div_on_probabilities", "discuss.pytorch.org/t/kullback-leibler-divergence-loss-function-giving-"
               "negative-values/763; torch.nn.KLDivLoss docs", "F.kl_div given softmax probabilities where it "
               "expects log-probabilities.", kl_div_on_probabilities, frozenset({"output_activation"})),
    HeldOutBug("log_softmax_over_width", "Zhang et al. 2018 (unaligned tensors: wrong axis); " + HUMBATOVA +
               " (model: wrong activation)", "per-pixel log_softmax over dim=-1 (width) into NLLLoss, not over the "
               "class axis.", log_softmax_over_width, frozenset({"output_activation"})),
    HeldOutBug("unscaled_regression_target", HUMBATOVA + " (training data: preprocessing, missing normalization "
               "of the target)", "an MSE regression on a raw pixel count (0..500).", unscaled_regression_target,
               frozenset({"target_scale"})),
    # what the model sees
    HeldOutBug("center_crop_instead_of_resize", HUMBATOVA + " (training data: preprocessing; tensors and inputs: "
               "wrong input)", "CenterCrop(8) where Resize(8) was meant: the model sees the middle 8x8 only.",
               center_crop_instead_of_resize, frozenset({"input_geometry"})),
    HeldOutBug("mask_flipped_independently", "Hands-On Computer Vision with TensorFlow 2 (Packt), ch. 10: "
               "random_flip_left_right called once for the image, once for the mask", "image and mask flipped by "
               "two independent draws: half the masks mirror their image.", mask_flipped_independently,
               frozenset({"augmentation"})),
    HeldOutBug("mixup_labels_not_mixed", HUMBATOVA + " (training data: augmentation); Zhang et al. 2018 mixup",
               "mixup of the inputs with the original hard labels.", mixup_labels_not_mixed,
               frozenset({"augmentation"})),
    # eval / train mode
    HeldOutBug("drop_path_unscaled", "Huang et al. 2016 (stochastic depth: branches re-scaled at test time); "
               "github.com/Angel-ML/mlcore/issues/5 (train/predict dropout scaling mismatch)", "stochastic depth "
               "with survival 0.5 and no 1/p: eval sums twice the branch the training saw.", drop_path_unscaled,
               frozenset({"train_eval_consistency"})),
    HeldOutBug("train_override_ignores_mode", "github.com/roytseng-tw/Detectron.pytorch/issues/104 (a train() "
               "override keeps sub-modules in training mode after eval())", "train(mode) overridden with "
               "child.train(): eval() leaves BatchNorm and Dropout in training mode.",
               train_override_ignores_mode, frozenset({"eval_determinism", "batch_independence"})),
    # optimizer and schedule
    HeldOutBug("plateau_on_accuracy", "ReduceLROnPlateau docs (mode='max' for accuracy); " + HUMBATOVA +
               " (training: learning rate)", "ReduceLROnPlateau in its default mode='min' fed an accuracy: the lr "
               "halves every 11 steps.", plateau_on_accuracy, frozenset({"lr_schedule"})),
    HeldOutBug("clip_before_backward", "theneuralbase.com/pytorch/learn/intermediate/gradient-exploding-gradient-"
               "clipping (clipping is only in effect between backward and step); " + HUMBATOVA +
               " (training: optimizer)", "clip_grad_norm_ called before backward under SGD lr=1.0: nothing is "
               "clipped.", clip_before_backward, frozenset({"grad_clipping"})),
    HeldOutBug("scheduler_on_stale_optimizer", "python.tutorialink.com 'relation between a learning rate scheduler "
               "and an optimizer'; " + HUMBATOVA + " (training: learning rate)", "a warmup scheduler built on an "
               "optimizer that was then rebuilt: the lr starts at 0.4.", scheduler_on_stale_optimizer,
               frozenset({"lr_schedule"})),
    HeldOutBug("adam_eps_one", "tf.keras.optimizers.Adam docs ('epsilon of 1.0 or 0.1' for Inception), copied; "
               + HUMBATOVA + " (training: optimizer hyperparameters)", "Adam(eps=1.0): steps of about 1e-3 times "
               "the gradient.", adam_eps_one, frozenset({"step_updates"})),
    # data pipeline
    HeldOutBug("collate_sorts_inputs_only", "city.shaform.com/en/2019/01/15/sort-sequences-in-pytorch (sorting a "
               "batch for pack_padded_sequence); Islam et al. 2019 (data flow)", "a collate_fn sorts the images "
               "of each batch and leaves the labels in place.", collate_sorts_inputs_only,
               frozenset({"beats_baseline"})),
    # data (audit_data)
    HeldOutBug("uint8_brightness_wraparound", "prodevsblog.com/questions/149601/numpy-uint8-pixel-wrapping-"
               "solution (235 + 30 = 9)", "half the train images brightened by +60 in uint8: bright pixels wrap "
               "to dark.", uint8_brightness_wraparound, frozenset({"value_range", "train_vs_test"}), "data"),
    HeldOutBug("split_twice_without_seed", "Kapoor & Narayanan 2023 (no clean train/test separation); "
               "train_test_split without random_state", "train from one shuffle, test from another: 3/4 of the "
               "test digits are in train.", split_twice_without_seed, frozenset({"leakage"}), "data"),
    HeldOutBug("unshuffled_split_of_sorted_data", HUMBATOVA + " (training data: split); train_test_split("
               "shuffle=False) docs", "a class-sorted array split by position: test has classes 7..9 only.",
               unshuffled_split_of_sorted_data, frozenset({"class_balance"}), "data"),
    HeldOutBug("missing_class_folder_in_test", "codegenes.net/blog/class_to_idx-pytorch (ImageFolder numbers the "
               "folders it finds)", "the test export lacks class 3: test ids 4..9 become 3..8.",
               missing_class_folder_in_test, frozenset({"label_map", "class_balance"}), "data"),
    HeldOutBug("zoomed_copies_in_test", "Kapoor & Narayanan 2023 (duplicates across splits)", "half the test "
               "images are train images zoomed 15%.", zoomed_copies_in_test, frozenset({"near_leakage"}), "data"),
    HeldOutBug("class_dependent_blur", "DeGrave et al. 2021 (the source's resolution predicts the label)",
               "tops blurred (half resolution) in train; blur at random in test.", class_dependent_blur,
               frozenset({"shortcuts"}), "data"),
    HeldOutBug("class_dependent_exposure", "DeGrave et al. 2021; Zech et al. 2018 (the source's exposure predicts "
               "the label)", "footwear darker (x0.6) in train; darker at random in test.", class_dependent_exposure,
               frozenset({"shortcuts"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind2.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND2
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

def accumulation_with_warmup(images, labels, every=4, warmup=25):
    """Accumulate 4 micro-batches; a linear warmup stepped once per OPTIMIZER step (not per micro-batch)."""
    calls = per_optimizer()

    def make(params):
        opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
        opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        return opt

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        n = calls[optimizer] = calls.get(optimizer, 0) + 1
        loss = loss_fn(model(x), y)
        (loss / every).backward()
        if n % every == 0:
            optimizer.step()
            optimizer.zero_grad()
            optimizer.scheduler.step()
        return loss.item()
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def cutmix_step(model, batch, loss_fn, optimizer, num_classes=10):
    """CutMix (Yun et al. 2019): paste a box of another image, mix the one-hot targets by the box's area."""
    x, y = batch
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    h, w = x.shape[-2:]
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1, x0, x1 = max(cy - bh // 2, 0), min(cy + bh // 2, h), max(cx - bw // 2, 0), min(cx + bw // 2, w)
    perm = torch.randperm(len(x))
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    soft = F.one_hot(y, num_classes).float()
    optimizer.zero_grad()
    loss = loss_fn(model(x), lam * soft + (1 - lam) * soft[perm])
    loss.backward()
    optimizer.step()
    return loss.item()


def cutmix(images, labels):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), cutmix_step


def stochastic_depth(images, labels):
    return DropPathMLP(survival=0.8, scaled=True), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


class TiedAutoencoderClassifier(nn.Module):
    """An encoder whose transpose is the decoder (weights tied on purpose), and a classifier on the code."""

    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Linear(784, 128), nn.Linear(128, 10)
        self.dec_bias = nn.Parameter(torch.zeros(784))

    def code(self, x):
        return torch.relu(self.enc(x.flatten(1)))

    def forward(self, x):
        return self.head(self.code(x))

    def reconstruct(self, x):
        return F.linear(self.code(x), self.enc.weight.t(), self.dec_bias).view_as(x)


def tied_autoencoder(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        total = loss + 0.5 * F.mse_loss(model.reconstruct(x), x)
        total.backward()
        optimizer.step()
        return loss.item()
    return TiedAutoencoderClassifier(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


class TupleHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.classes, self.attributes = nn.Linear(64, 10), nn.Linear(64, 4)

    def forward(self, x):
        h = self.trunk(x)
        return self.classes(h), self.attributes(h)


def multi_head_tuple(images, labels):
    """Two outputs returned as a tuple; the loss sums cross-entropy and the attributes' BCE."""
    def loss_fn(out, y):
        logits, attrs = out
        return F.cross_entropy(logits, y) + F.binary_cross_entropy_with_logits(attrs, ATTRIBUTES[y])
    return TupleHeads(), (standardize(images), labels), loss_fn, adam(), standard_step


def distillation(images, labels, steps=60, T=4.0):
    """Knowledge distillation (Hinton et al. 2015) from a frozen teacher: KL on log-probabilities, times T^2."""
    x = standardize(images)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        teacher = mlp(hidden=128)
        opt = torch.optim.Adam(teacher.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(teacher(x[idx]), labels[idx]).backward()
            opt.step()
    teacher.eval().requires_grad_(False)

    def step(model, batch, loss_fn, optimizer):
        xb, y = batch
        optimizer.zero_grad()
        out = model(xb)
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / T, 1)
        kd = F.kl_div(F.log_softmax(out / T, 1), soft, reduction="batchmean") * T * T
        loss = 0.5 * loss_fn(out, y) + 0.5 * kd
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (x, labels), nn.CrossEntropyLoss(), adam(), step


def segmentation_3class(images, labels):
    """Per-pixel 3-class labels, (B, 3, H, W) logits into CrossEntropyLoss (class axis 1)."""
    return SegNet3(), (standardize(images), grey_levels(images)), nn.CrossEntropyLoss(), adam(), standard_step


def discriminative_finetune(images, labels, steps=60):
    """A trained backbone fine-tuned at lr 1e-4 and a new head at 1e-3 (two parameter groups)."""
    model, x = Backbone(), standardize(images)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), labels[idx]).backward()
            opt.step()
        model.head = nn.Linear(32 * 4, 10)

    def make(params):
        params = list(params)
        head = [p for p in params if p.shape in ((10, 128), (10,))]
        rest = [p for p in params if all(p is not q for q in head)]
        return torch.optim.Adam([{"params": rest, "lr": 1e-4}, {"params": head, "lr": 1e-3}])
    return model, (x, labels), nn.CrossEntropyLoss(), make, standard_step


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.body(x))


def digits_rgb_resnet(images, labels, total_steps=2000):
    """Digits upsampled to 32x32 and replicated to 3 channels (an ImageNet-style input), a small ResNet,
    SGD with nesterov momentum and a cosine schedule stepped per batch."""
    x, y = digits()
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), ResBlock(16),
                          nn.MaxPool2d(2), ResBlock(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        opt.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()
        return loss
    return model, (x, y), nn.CrossEntropyLoss(), make, step


def bf16_channels_last(images, labels):
    """channels_last memory format (a layout in memory, not a permute) with bfloat16 autocast."""
    model = small_cnn().to(memory_format=torch.channels_last)
    x = standardize(images).contiguous(memory_format=torch.channels_last)

    def step(model, batch, loss_fn, optimizer):
        xb, y = batch
        optimizer.zero_grad()
        with torch.autocast(xb.device.type, dtype=torch.bfloat16):
            loss = loss_fn(model(xb), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return model, (x, labels), nn.CrossEntropyLoss(), adam(), step


def manual_warmup(images, labels, warmup=100, base_lr=0.1):
    """Per-step linear warmup written by hand: the step sets each group's lr before optimizer.step()."""
    calls = per_optimizer()

    def step(model, batch, loss_fn, optimizer):
        n = calls[optimizer] = calls.get(optimizer, 0) + 1
        for group in optimizer.param_groups:
            group["lr"] = base_lr * min(1.0, n / warmup)
        return standard_step(model, batch, loss_fn, optimizer)
    make = lambda params: torch.optim.SGD(params, lr=base_lr, momentum=0.9, nesterov=True)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


CORRECT_BLIND2 = [
    Pipeline("accumulation_with_warmup", "4 micro-batches accumulated, a LambdaLR warmup stepped per optimizer "
             "step.", accumulation_with_warmup),
    Pipeline("cutmix_soft_targets", "CutMix with area-weighted soft targets into CrossEntropyLoss.", cutmix),
    Pipeline("stochastic_depth", "residual MLP, per-sample drop path (survival 0.8) scaled by 1/p, off in eval.",
             stochastic_depth),
    Pipeline("tied_autoencoder", "a decoder that is the encoder's transpose (tied on purpose), CE + 0.5 MSE.",
             tied_autoencoder),
    Pipeline("multi_head_tuple", "a (class logits, attribute logits) tuple; CE + BCE.", multi_head_tuple),
    Pipeline("distillation_kl", "a frozen teacher, KL(log_softmax(s/T), softmax(t/T)) T^2 + CE.", distillation),
    Pipeline("segmentation_3class_ce", "(B, 3, 28, 28) logits, per-pixel class ids, CrossEntropyLoss.",
             segmentation_3class),
    Pipeline("discriminative_finetune", "a trained backbone at lr 1e-4, a new head at 1e-3, both trained.",
             discriminative_finetune),
    Pipeline("digits_rgb_32x32_resnet", "8x8 digits upsampled to 3x32x32, residual blocks with BatchNorm, SGD "
             "nesterov and cosine per step.", digits_rgb_resnet),
    Pipeline("bf16_channels_last", "channels_last memory format and bfloat16 autocast.", bf16_channels_last),
    Pipeline("manual_per_step_warmup", "lr set by hand in the step, rising linearly over 100 steps to 0.1.",
             manual_warmup),
]


def clean_splits2(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: a stratified digits split, another Fashion-MNIST pair."""
    from sklearn.model_selection import train_test_split
    x, y = digits_uint8()
    tr, te = train_test_split(torch.arange(len(y)).numpy(), test_size=1 / 3, random_state=7, stratify=y.numpy())
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return [("digits stratified 2/3 vs 1/3", (x[tr], y[tr]), (x[te], y[te]), 10),
            ("fashion-mnist train vs test (later images)", (images, labels), (test_images, test_labels), 10)]


BY_NAME = {b.name: b for b in BLIND2} | {p.name: p for p in CORRECT_BLIND2}
