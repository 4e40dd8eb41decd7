"""Fourth blind held-out catalog: bug classes and correct pipelines written without reading the checks.

The three earlier blind catalogs (bugs_blind.py, bugs_blind2.py, bugs_blind3.py) stopped being blind when
the checks were fixed while looking at them. This one was written afterwards, for one scoring run
(benchmarks/checks_blind4.py), by someone who did not open the implementations of the checks
(preflight*.py, audit*.py, report.py, checks.py, rng.py), their tests, their thresholds or any earlier
scoring record, and who never ran preflight or audit_data on these entries. The only information about
the checks used: their public names and one-line descriptions (preflight.CHECKS, audit.CHECKS, as
printed) and the docstrings of `preflight` and `audit_data`. From those alone, per bug and before any
run, `checks` names the checks whose error or warning would name the cause.

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py, bugs_blind2.py, bugs_blind3.py
(a different mechanism, not a renamed copy). Sources, cited per bug:
- Humbatova et al. 2020, "Taxonomy of Real Faults in Deep Learning Systems" (ICSE), Islam et al. 2019,
  "A Comprehensive Study on Deep Learning Bug Characteristics" (FSE), Zhang et al. 2018, "An Empirical
  Study on TensorFlow Program Bugs" (ISSTA);
- PyTorch and torchvision documentation where it states the contract the bug breaks;
- papers of the practice the bug gets wrong (CutMix, OHEM, He initialization, straight-through
  estimators, label-noise and dataset-shift studies).

`checks`: a name that is no check (NOT_A_CHECK) means no check's description covers this cause, so the
bug can be caught but not diagnosed. CORRECTED holds, for each pipeline bug, the same pipeline with the
bug fixed (tests/test_blind4.py compares the two). CORRECT_BLIND4 are correct pipelines in none of the
earlier catalogs (no warning allowed), clean_splits4 the clean data the audit must pass.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bugs import adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import ATTRIBUTES, Squeezed, digits, ink, mlp_out, scheduled
from .bugs_blind2 import SegNet3, digits_uint8, grey_levels
from .bugs_blind3 import footwear, per_model, pretrain, standardize_channels, tinted
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Backbone, Pipeline

# Declared causes that are no check: no check's one-line description covers them.
NOT_A_CHECK = frozenset({"same_batch_every_step", "pooling_axis", "custom_backward", "loss_coverage"})

HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
ISLAM = "Islam et al. 2019 (FSE)"


# ----------------------------------------------------------------------------- learning rate

def warmup_integer_division(images, labels, fixed=False, warmup=1000):
    """A linear warm-up over 1000 steps written with LambdaLR; `//` where `/` was meant."""
    def make(params):
        opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
        if fixed:
            factor = lambda s: min(1.0, (s + 1) / warmup)
        else:
            factor = lambda s: min(1, s // warmup)   # BUG: floor division: factor 0 for the first 1000 steps
        opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return opt
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, scheduled()


# ----------------------------------------------------------------------------- what the model is fed

def next_iter_in_step(images, labels, fixed=False):
    """The step pulls its batch with next(iter(loader)) from an unshuffled DataLoader."""
    x = standardize(images)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=64)

    def step(model, batch, loss_fn, optimizer):
        if not fixed:
            batch = next(iter(loader))     # BUG: a fresh iterator every call: always the loader's first batch
        return standard_step(model, batch, loss_fn, optimizer)
    return mlp(), (x, labels), nn.CrossEntropyLoss(), adam(), step


class PooledCNN(nn.Module):
    """A colour CNN ending in global average pooling: (B, 16, 4, 4) features -> 16 numbers -> 10 logits."""

    def __init__(self, fixed=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(4))
        self.head, self.fixed = nn.Linear(16, 10), fixed

    def pool(self, h):
        if self.fixed:
            return h.mean((2, 3))
        return h.mean(1).flatten(1)          # BUG: averages the 16 channels, keeps the 4x4 map (16 = 16)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


def global_pool_over_channels(images, labels, fixed=False):
    return PooledCNN(fixed), (standardize_channels(tinted(images)), labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


def random_erasing():
    from torchvision.transforms import RandomErasing
    return RandomErasing(p=0.5, scale=(0.05, 0.25), value=0)


def erasing_step(erase):
    """Random erasing, per image, on the training batch only."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        return standard_step(model, (torch.stack([erase(img) for img in x]), y), loss_fn, optimizer)
    return step


def transform_module_in_model(images, labels, fixed=False):
    """torchvision transforms are nn.Modules, so RandomErasing fits in nn.Sequential; but a transform ignores
    train()/eval(): inside the model it erases patches at evaluation too."""
    erase = random_erasing()
    if fixed:
        return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), erasing_step(erase)
    model = nn.Sequential(erase, *small_cnn())     # BUG: the augmentation is part of the model, eval included
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def cutmix(x, y, perm, box, fixed=False, classes=10):
    """Paste box (top, left, height, width) of x[perm] into x; targets weighted by the areas they show."""
    top, left, h, w = box
    x = x.clone()
    x[:, :, top:top + h, left:left + w] = x[perm][:, :, top:top + h, left:left + w]
    keep = 1 - h * w / (x.shape[-2] * x.shape[-1])        # the share of the original image still visible
    a = keep if fixed else 1 - keep                       # BUG: the pasted area's share given to the original
    soft = F.one_hot(y, classes).float()
    return x, a * soft + (1 - a) * soft[perm]


def cutmix_step(fixed):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        H, W = x.shape[-2:]
        side = math.sqrt(1 - float(torch.rand(())))       # lam ~ U(0, 1): the box covers 1 - lam of the image
        h, w = max(1, int(H * side)), max(1, int(W * side))
        top, left = int(torch.randint(0, H - h + 1, ())), int(torch.randint(0, W - w + 1, ()))
        xm, ym = cutmix(x, y, torch.randperm(len(x), device=x.device), (top, left, h, w), fixed)
        optimizer.zero_grad()
        loss = loss_fn(model(xm), ym)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def cutmix_label_weights_swapped(images, labels, fixed=False):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), cutmix_step(fixed)


def mask_transposed_column_major(images, labels, fixed=False):
    """Per-pixel 3-class masks exported column-major (MATLAB, order='F') and read back row-major."""
    target = grey_levels(images)
    if not fixed:
        target = target.transpose(1, 2).contiguous()    # BUG: every mask is its image's transpose
    return SegNet3(), (standardize(images), target), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- what the loss computes

def bce_arguments_swapped(images, labels, fixed=False):
    """Footwear or not, one logit; the functional BCE called as (target, logits)."""
    def loss_fn(logits, target):
        if fixed:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.binary_cross_entropy_with_logits(target, logits)   # BUG: (input, target) swapped
    return Squeezed(mlp_out(1)), (standardize(images), footwear(labels)), loss_fn, adam(), standard_step


def sigmoid_head_on_standardized_target(images, labels, fixed=False):
    """Regression on the standardized share of bright pixels (about half the targets negative)."""
    net = mlp_out(1) if fixed else nn.Sequential(mlp_out(1), nn.Sigmoid())   # BUG: outputs in (0, 1) only
    return Squeezed(net), (standardize(images), ink(images)), nn.MSELoss(), adam(), standard_step


def partial_attributes(labels, share=0.3, seed=15):
    """The 4 attributes per image with 30% of the entries unannotated, marked -1 (as CheXpert marks
    uncertain findings)."""
    t = ATTRIBUTES[labels].clone()
    t[torch.rand(t.shape, generator=torch.Generator().manual_seed(seed)) < share] = -1
    return t


def multilabel_unknown_as_minus_one(images, labels, fixed=False):
    """Multi-label attributes with unannotated entries (-1) that the loss must skip."""
    def loss_fn(out, t):
        if not fixed:
            return F.binary_cross_entropy_with_logits(out, t)   # BUG: -1 fed as a target, never masked
        known = (t >= 0).float()
        per_entry = F.binary_cross_entropy_with_logits(out, t.clamp(min=0), reduction="none")
        return (per_entry * known).sum() / known.sum().clamp(min=1)
    return mlp_out(4), (standardize(images), partial_attributes(labels)), loss_fn, adam(), standard_step


def ohem_loss(fixed=False, keep=0.25):
    """Online hard example mining (Shrivastava et al. 2016): the mean loss of the hardest samples."""
    def loss_fn(out, y):
        per_sample = F.cross_entropy(out, y, reduction="none")
        k = max(1, int(keep * len(y))) if fixed else 1    # BUG: a per-image k=1 copied as the per-batch k
        return per_sample.topk(k).values.mean()
    return loss_fn


def hard_mining_keeps_one_sample(images, labels, fixed=False):
    return mlp(), (standardize(images), labels), ohem_loss(fixed), adam(), standard_step


def last_microbatch_step(fixed, k=4):
    """Splits the batch into k micro-batches and accumulates their gradients before one step."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        total = 0.0
        for xb, yb in zip(x.chunk(k), y.chunk(k)):
            loss = loss_fn(model(xb), yb) / k
            if fixed:
                loss.backward()
            total += loss.item()
        if not fixed:
            loss.backward()               # BUG: dedented out of the loop: only the last micro-batch counts
        optimizer.step()
        return total
    return step


def loss_on_last_microbatch_only(images, labels, fixed=False):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, last_microbatch_step(fixed)


def loss_clamped_for_stability(images, labels, fixed=False):
    """A 'stabilized' loss: clamp(max=1.0) on the batch loss, meant to tame rare spikes."""
    def loss_fn(out, y):
        loss = F.cross_entropy(out, y)
        return loss if fixed else loss.clamp(max=1.0)   # BUG: above 1 (ln 10 = 2.3 at the start) grad = 0
    return mlp(), (standardize(images), labels), loss_fn, adam(), standard_step


# ----------------------------------------------------------------------------- gradients and initialization

class FakeQuant(torch.autograd.Function):
    """Activations rounded to a 0.25 grid with a straight-through gradient (Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, x, fixed):
        ctx.fixed = fixed
        return (x * 4).round() / 4

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.fixed:
            return grad_output, None
        return torch.ones_like(grad_output), None   # BUG: d(identity)/dx without the chain rule (grad_output)


class QuantMLP(nn.Module):
    def __init__(self, fixed=False):
        super().__init__()
        self.body, self.head, self.fixed = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU()), \
            nn.Linear(128, 10), fixed

    def forward(self, x):
        return self.head(FakeQuant.apply(self.body(x), self.fixed))


def custom_backward_drops_grad_output(images, labels, fixed=False):
    return QuantMLP(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def deep_relu_mlp(fixed=False, width=256, depth=3):
    """8x8 digits, 3 hidden ReLU layers, weights drawn by hand from N(0, std)."""
    sizes = [64] + [width] * depth
    layers = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            std = math.sqrt(2 / m.in_features) if fixed else 1 / m.in_features   # BUG: the variance used as std
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return model


def init_std_as_variance(images, labels, fixed=False):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return deep_relu_mlp(fixed), digits(), nn.CrossEntropyLoss(), make, standard_step


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


# Visually close pairs (shirt -> T-shirt, pullover -> coat, sneaker -> sandal): annotators confuse them.
CONFUSED = {6: 0, 2: 4, 7: 5}


def class_conditional_label_flips(images, labels):
    """A vendor's annotators labelled 40% of shirts T-shirt, of pullovers coat, of sneakers sandal."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(11)
    flip = torch.rand(len(y), generator=g) < 0.4
    y = y.clone()
    for src, dst in CONFUSED.items():
        y[flip & (y == src)] = dst                 # BUG: structured (pair-flip) noise, the rest untouched
    return (x, y), (xt, yt), 10


def test_label_prior_shift(images, labels):
    """The test set comes from a deployment where tops are rare: classes 0..4 kept at 10%, 5..9 whole."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(12)
    keep = (yt >= 5) | (torch.rand(len(yt), generator=g) < 0.1)
    return (x, y), (xt[keep], yt[keep]), 10        # BUG: test class proportions unlike train's


def test_objects_smaller(images, labels):
    """Test photos taken from further away: objects shrunk to 20x20 (area), centred on black."""
    x, y, xt, yt = _split(images, labels)
    small = F.interpolate(xt.float(), size=(20, 20), mode="area").round().to(torch.uint8)
    return (x, y), (F.pad(small, (4, 4, 4, 4)), yt), 10     # BUG: another scale in test only


def class_dependent_sensor_noise(images, labels):
    """T-shirts and dresses (classes 0, 3) came from a noisier scanner in train; in test the noisy scanner
    is used at random."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(13)
    noisy = lambda t: (t.float() + 25 * torch.randn(t.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
    sel = (y == 0) | (y == 3)
    x = x.clone()
    x[sel] = noisy(x[sel])                         # BUG: noise level predicts the class in train
    some = torch.rand(len(yt), generator=g) < 0.2
    xt = xt.clone()
    xt[some] = noisy(xt[some])
    return (x, y), (xt, yt), 10


def blank_placeholder_images(images, labels):
    """Scraped train set: 6% of the downloads failed and were saved as the site's flat grey placeholder,
    each keeping the label of the image it replaces."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(14)
    failed = torch.rand(len(y), generator=g) < 0.06
    x = x.clone()
    x[failed] = 128                                 # BUG: identical blank images under every label
    return (x, y), (xt, yt), 10


def filter_on_images_only(images, labels):
    """8x8 digits: faint scans (the 10% with the least ink) dropped from the images, not from the labels,
    then the labels cut to the images' length."""
    x, y = digits_uint8()
    n = len(y) * 3 // 4
    x, y, xt, yt = x[:n], y[:n], x[n:], y[n:]
    ink_sum = x.flatten(1).float().sum(1)
    keep = ink_sum > ink_sum.quantile(0.1)
    x = x[keep]
    y = y[:len(x)]                                  # BUG: meant y[keep]: labels slide after the first drop
    return (x, y), (xt, yt), 10


def test_strokes_dilated(images, labels):
    """Test images from another renderer with bolder strokes: a 3x3 grey-level dilation."""
    x, y, xt, yt = _split(images, labels)
    bold = F.max_pool2d(xt.float(), 3, stride=1, padding=1).to(torch.uint8)
    return (x, y), (bold, yt), 10                   # BUG: thicker shapes in test only


BLIND4 = [
    # learning rate
    HeldOutBug("warmup_integer_division", "torch.optim.lr_scheduler.LambdaLR docs (lr = base lr x the "
               "lambda's factor); PEP 238 (// is floor division); " + HUMBATOVA + " (training: hyperparameters)",
               "a LambdaLR warm-up factor min(1, step // 1000): the lr is exactly 0 for the first 1000 steps.",
               warmup_integer_division, frozenset({"step_updates"})),
    # what the model is fed
    HeldOutBug("next_iter_in_step", "torch.utils.data.DataLoader docs (each iter() starts a new pass over the "
               "dataset); " + HUMBATOVA + " (training data); " + ISLAM + " (data flow)",
               "the step fetches next(iter(loader)) from an unshuffled loader: the same first 64 images every "
               "step.", next_iter_in_step, frozenset({"same_batch_every_step"})),
    HeldOutBug("global_pool_over_channels", HUMBATOVA + " (model: layer properties, wrong tensor shape); " +
               ISLAM + " (structural: dimension mismatch); torch.mean docs (dim)",
               "global average pooling as h.mean(1) on (B, 16, 4, 4) colour features: the 16 channels are "
               "averaged, the 4x4 map kept, and the shapes still fit the head.", global_pool_over_channels,
               frozenset({"pooling_axis"})),
    HeldOutBug("transform_module_in_model", "torchvision.transforms docs (transforms are nn.Module subclasses; "
               "RandomErasing); torch.nn.Module.eval docs (only modules that read self.training change)",
               "torchvision RandomErasing placed inside the model's nn.Sequential: it erases patches in eval "
               "mode too.", transform_module_in_model, frozenset({"eval_determinism"})),
    HeldOutBug("cutmix_label_weights_swapped", "Yun et al. 2019, CutMix (ICCV; lambda = 1 - box area "
               "share); timm's mixup.py (cutmix_bbox_and_lam)", "CutMix targets weighted by the box area for the "
               "original image's label: the image showing 80% of A is labelled 20% A.",
               cutmix_label_weights_swapped, frozenset({"augmentation"})),
    HeldOutBug("mask_transposed_column_major", "numpy.reshape docs (order 'C' vs 'F'); scipy.io.loadmat "
               "(MATLAB arrays are column-major); " + HUMBATOVA + " (training data: preprocessing)",
               "per-pixel 3-class masks read as the transpose of their images.", mask_transposed_column_major,
               frozenset({"beats_baseline"})),
    # what the loss computes
    HeldOutBug("bce_arguments_swapped", "torch.nn.functional.binary_cross_entropy_with_logits docs (input, "
               "target); " + ISLAM + " (API misuse); " + HUMBATOVA + " (training: loss function)",
               "F.binary_cross_entropy_with_logits(target, logits): the logits become the target, negatives "
               "get no gradient and the loss falls without bound.", bce_arguments_swapped,
               frozenset({"loss_classes"})),
    HeldOutBug("sigmoid_head_on_standardized_target", HUMBATOVA + " (model: wrong activation function of the "
               "output layer); Zhang et al. 2018 (ISSTA)", "a Sigmoid at the end of a regression model whose "
               "targets are standardized: half the targets are negative and out of reach.",
               sigmoid_head_on_standardized_target, frozenset({"output_activation"})),
    HeldOutBug("multilabel_unknown_as_minus_one", "Irvin et al. 2019 (AAAI, CheXpert: uncertain labels "
               "as -1 and the U-Ignore policy); torch.nn.BCEWithLogitsLoss docs (targets between 0 and 1)",
               "4 multi-label attributes with 30% unannotated entries marked -1 and fed to BCEWithLogitsLoss "
               "unmasked: those logits are pushed to minus infinity and the loss has no floor.",
               multilabel_unknown_as_minus_one, frozenset({"loss_classes"})),
    HeldOutBug("hard_mining_keeps_one_sample", "Shrivastava et al. 2016, OHEM (CVPR); " + HUMBATOVA +
               " (training: loss function)", "hard example mining keeping the top 1 loss per batch (a per-image "
               "k copied as the per-batch k): one sample of 64 trains, usually a hard or mislabelled one.",
               hard_mining_keeps_one_sample, frozenset({"loss_coverage"})),
    HeldOutBug("loss_on_last_microbatch_only", "PyTorch docs, gradient accumulation in the AMP examples "
               "(backward inside the micro-batch loop); " + HUMBATOVA + " (training: missing step)",
               "backward() dedented out of the micro-batch loop: only the last quarter of every batch trains.",
               loss_on_last_microbatch_only, frozenset({"loss_coverage"})),
    HeldOutBug("loss_clamped_for_stability", "torch.clamp docs (zero gradient outside [min, max]); " + HUMBATOVA +
               " (training: loss function)", "the batch loss clamped at 1.0 'for stability': from ln 10 = 2.3 at "
               "the start its gradient is exactly 0, nothing ever trains.", loss_clamped_for_stability,
               frozenset({"param_grads", "step_updates"})),
    # gradients and initialization
    HeldOutBug("custom_backward_drops_grad_output", "PyTorch docs, Extending torch.autograd (backward receives "
               "grad_output; check with torch.autograd.gradcheck); Bengio et al. 2013 (straight-through "
               "estimator)", "a fake-quantization autograd.Function whose backward returns ones instead of "
               "grad_output: the body's gradient ignores the loss.", custom_backward_drops_grad_output,
               frozenset({"custom_backward"})),
    HeldOutBug("init_std_as_variance", "He et al. 2015 (variance 2/fan_in); torch.nn.init docs; " + HUMBATOVA +
               " (model: wrong weights initialisation)", "8x8 digits, 3 hidden ReLU layers drawn with std "
               "1/fan_in (the variance formula): activations shrink about 20x per layer.",
               init_std_as_variance, frozenset({"grad_norms"})),
    # data (audit_data)
    HeldOutBug("class_conditional_label_flips", "Patrini et al. 2017 (CVPR, class-dependent label noise); "
               "Northcutt, Jiang & Chuang 2021 (JAIR, confident learning)", "40% of shirts labelled T-shirt, of "
               "pullovers coat, of sneakers sandal; the other classes clean.", class_conditional_label_flips,
               frozenset({"label_issues"}), "data"),
    HeldOutBug("test_label_prior_shift", "Lipton, Wang & Smola 2018 (ICML, label shift); Quinonero-Candela et "
               "al. 2009 (Dataset Shift in Machine Learning)", "test classes 0..4 kept at 10%, 5..9 whole.",
               test_label_prior_shift, frozenset({"class_balance"}), "data"),
    HeldOutBug("test_objects_smaller", "Torralba & Efros 2011 (CVPR, dataset bias); Recht et al. 2019 (ICML, "
               "ImageNetV2)", "test objects shrunk to 20x20 and centred: another scale.", test_objects_smaller,
               frozenset({"train_vs_test"}), "data"),
    HeldOutBug("class_dependent_sensor_noise", "DeGrave, Janizek & Lee 2021 (Nature Machine Intelligence, "
               "source predicts the label); Geirhos et al. 2020 (shortcut learning)", "T-shirts and dresses "
               "noisy (std 25) in train; a fifth of all test images noisy at random.",
               class_dependent_sensor_noise, frozenset({"shortcuts"}), "data"),
    HeldOutBug("blank_placeholder_images", "Sambasivan et al. 2021 (CHI, data cascades); " + HUMBATOVA +
               " (training data: low quality)", "6% of train images replaced by one flat grey placeholder, "
               "keeping their labels.", blank_placeholder_images, frozenset({"corrupted", "duplicates"}),
               "data"),
    HeldOutBug("filter_on_images_only", ISLAM + " (data bugs); " + HUMBATOVA + " (training data: "
               "preprocessing)", "8x8 digits: the faintest 10% dropped from the images only, labels cut to "
               "length: labels slide out of step.", filter_on_images_only,
               frozenset({"label_signal", "label_issues"}), "data"),
    HeldOutBug("test_strokes_dilated", "Torralba & Efros 2011 (dataset bias: another source); " + HUMBATOVA +
               " (training data: preprocessing)", "test images dilated 3x3: bolder, larger shapes.",
               test_strokes_dilated, frozenset({"train_vs_test"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind4.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND4
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

def layerwise_lr_decay(images, labels, decay=0.5, base=2e-3):
    """Layer-wise lr decay (as in BEiT / ELECTRA fine-tuning): one AdamW group per Linear, the head at the
    base lr and each layer below at `decay` times the one above."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))

    def make(params):
        layers = list(params)                             # (weight, bias) of each Linear, input to head
        layers = [layers[i:i + 2] for i in range(0, len(layers), 2)]
        groups = [{"params": pair, "lr": base * decay ** (len(layers) - 1 - i)} for i, pair in enumerate(layers)]
        return torch.optim.AdamW(groups, lr=base, weight_decay=0.05)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


class WSConv2d(nn.Conv2d):
    """Weight standardization (Qiao et al. 2019): each output filter's weights standardized in forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def ws_groupnorm_cnn(images, labels):
    """Weight-standardized convolutions with GroupNorm (no batch statistics), SGD nesterov."""
    model = nn.Sequential(WSConv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
                          WSConv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 4, 10))
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def spectral_norm_mlp(images, labels):
    """Both Linear layers under torch.nn.utils.parametrizations.spectral_norm: the weight used in forward is
    computed from `parametrizations.weight.original` by power iteration (a buffer updated in training)."""
    sn = nn.utils.parametrizations.spectral_norm
    model = nn.Sequential(nn.Flatten(), sn(nn.Linear(784, 128)), nn.ReLU(), sn(nn.Linear(128, 10)))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


def lookahead_step(k=5, alpha=0.5):
    """Lookahead (Zhang et al. 2019) around the inner optimizer: slow weights kept per optimizer (it wraps
    the optimizer); every k steps they move alpha of the way to the fast weights, which restart from them."""
    state = per_model()

    def step(model, batch, loss_fn, optimizer):
        if optimizer not in state:
            state[optimizer] = [0, [p.detach().clone() for p in model.parameters()]]
        loss = standard_step(model, batch, loss_fn, optimizer)
        state[optimizer][0] += 1
        n, slow = state[optimizer]
        if n % k == 0:
            with torch.no_grad():
                for s, p in zip(slow, model.parameters()):
                    s.lerp_(p, alpha)
                    p.copy_(s)
        return loss
    return step


def lookahead(images, labels):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), lookahead_step()


def partially_frozen(images, labels, steps=30):
    """A briefly pretrained backbone whose first convolution is frozen (requires_grad=False); the optimizer
    gets all parameters, as timm does: SGD skips those without a gradient."""
    x = standardize(images)
    model = Backbone()
    pretrain(model, x, labels, steps, lambda p: torch.optim.Adam(p, 1e-3))
    model.features[0].requires_grad_(False)
    make = lambda params: torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-4)
    return model, (x, labels), nn.CrossEntropyLoss(), make, standard_step


def random_erasing_in_step(images, labels):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), erasing_step(random_erasing())


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm over channels (channels-last inside, on purpose), an inverted-bottleneck
    MLP with GELU, and a layer scale initialized at 1e-6 (Liu et al. 2022): the branch starts almost off."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)             # (B, H, W, C)
        h = self.mlp(self.norm(h)) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 4, stride=4)         # 28x28 -> 7x7 patches
        self.blocks = nn.Sequential(ConvNeXtBlock(c), ConvNeXtBlock(c))
        self.norm, self.head = nn.LayerNorm(c), nn.Linear(c, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x)).mean((2, 3))))


def convnext_layer_scale(images, labels):
    make = lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
    return TinyConvNeXt(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def binary_pos_weight(images, labels):
    """Bag or not (about 10% positive), one logit, BCEWithLogitsLoss(pos_weight = negatives / positives)."""
    y = (labels == 8).float()
    pos_weight = (len(y) - y.sum()) / y.sum().clamp(min=1)
    return Squeezed(mlp_out(1)), (standardize(images), y), nn.BCEWithLogitsLoss(pos_weight=pos_weight), adam(), \
        standard_step


def dice_ce(out, target, eps=1.0):
    """Per-pixel cross-entropy plus soft Dice averaged over the 3 classes (Milletari et al. 2016)."""
    p = out.softmax(1)
    t = F.one_hot(target, out.shape[1]).permute(0, 3, 1, 2).float()
    inter, total = (p * t).sum((0, 2, 3)), (p + t).sum((0, 2, 3))
    return F.cross_entropy(out, target) + (1 - (2 * inter + eps) / (total + eps)).mean()


def segmentation_dice_ce(images, labels):
    return SegNet3(), (standardize(images), grey_levels(images)), dice_ce, adam(2e-3), standard_step


CORRECT_BLIND4 = [
    Pipeline("layerwise_lr_decay", "one AdamW group per Linear, lr halving per layer below the head.",
             layerwise_lr_decay),
    Pipeline("weight_standardized_groupnorm", "weight-standardized convs with GroupNorm, SGD nesterov.",
             ws_groupnorm_cnn),
    Pipeline("spectral_norm_parametrization", "spectral_norm parametrizations on both Linear layers: the "
             "trained tensors are weight.original, the forward weight is derived.", spectral_norm_mlp),
    Pipeline("lookahead_optimizer", "Lookahead (k=5, alpha=0.5) around Adam, written in the step: every 5th "
             "step moves the weights back toward the slow copy.", lookahead),
    Pipeline("partially_frozen_all_params", "first conv frozen by requires_grad=False, every parameter "
             "handed to SGD with momentum and weight decay.", partially_frozen),
    Pipeline("random_erasing_in_step", "torchvision RandomErasing per image, in the train step only.",
             random_erasing_in_step),
    Pipeline("convnext_layer_scale", "ConvNeXt blocks: depthwise 7x7, channels-last LayerNorm, GELU MLP, "
             "layer scale initialized at 1e-6.", convnext_layer_scale),
    Pipeline("binary_pos_weight", "bag vs the rest (10% positive), one logit, BCEWithLogitsLoss with "
             "pos_weight = negatives / positives.", binary_pos_weight),
    Pipeline("segmentation_dice_ce", "3-class per-pixel segmentation, cross-entropy plus soft Dice.",
             segmentation_dice_ce),
]


def clean_splits4(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: 8x8 digits split at random (same writers' pool on
    both sides), a 14x14 version of a Fashion-MNIST train/test pair (both resized the same way), and the
    4 upper-body classes of another pair."""
    x, y = digits_uint8()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(21))
    n = len(y) * 3 // 4
    tr, te = order[:n], order[n:]
    half, quarter = len(labels) // 2, len(test_labels) // 2
    small = lambda t: F.interpolate(t.float(), size=(14, 14), mode="area").round().to(torch.uint8)
    tops = {0: 0, 2: 1, 4: 2, 6: 3}                    # T-shirt, pullover, coat, shirt -> 0..3
    pick = lambda t, l: (t[sum(l == k for k in tops).bool()],
                         torch.tensor([tops[v] for v in l.tolist() if v in tops], dtype=l.dtype))
    return [("digits 8x8 random split", (x[tr], y[tr]), (x[te], y[te]), 10),
            ("fashion-mnist 14x14 train vs test", (small(images[:half]), labels[:half]),
             (small(test_images[:quarter]), test_labels[:quarter]), 10),
            ("fashion-mnist upper-body 4 classes train vs test", pick(images[half:], labels[half:]),
             pick(test_images[quarter:], test_labels[quarter:]), 4)]


BY_NAME = {b.name: b for b in BLIND4} | {p.name: p for p in CORRECT_BLIND4}
