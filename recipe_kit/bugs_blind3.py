"""Third blind held-out catalog: bug classes and correct pipelines written without reading the checks.

bugs_blind.py and bugs_blind2.py were blind when first scored, then the checks were fixed while looking at
them. This catalog was written after that, for one scoring run (benchmarks/checks_blind3.py), from real
reports and without reading the implementations of the checks (preflight*.py, audit*.py, report.py,
checks.py) or the earlier scoring records: only the public check names and their one-line descriptions
(preflight.CHECKS, audit.CHECKS, as printed) were used to fix, per bug and before any run, which checks
would name its cause.

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py, bugs_blind2.py (a different
mechanism, not a renamed copy). Sources, cited per bug:
- Humbatova et al. 2020, "Taxonomy of Real Faults in Deep Learning Systems" (ICSE), Islam et al. 2019,
  "A Comprehensive Study on Deep Learning Bug Characteristics" (FSE), Zhang et al. 2018, "An Empirical
  Study on TensorFlow Program Bugs" (ISSTA);
- PyTorch's own documentation where it warns about the pitfall, threads of discuss.pytorch.org, GitHub
  issues and Q&A pages, cited by address;
- label noise: Northcutt, Athalye & Mueller 2021 ("Pervasive label errors in test sets destabilize
  machine learning benchmarks", NeurIPS Datasets and Benchmarks);
- shortcuts: DeGrave, Janizek & Lee 2021 (Nature Machine Intelligence: patient positioning and source
  predict the label), Zech et al. 2018 (PLOS Medicine).

`checks`: the checks whose error or warning would name the cause, judged from the names and descriptions
alone; a name that is no check (NOT_A_CHECK) means no check's description covers this cause, so the bug
can be caught but not diagnosed. CORRECTED holds, for each pipeline bug, the same pipeline with the bug
fixed (tests/test_blind3.py compares the two). CORRECT_BLIND3 are correct pipelines in none of the earlier
catalogs (no warning allowed), clean_splits3 the clean data the audit must pass.
"""
import math
import weakref
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bugs import MEAN, STD, adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import ATTRIBUTES, Squeezed, digits, digits_cnn, mlp_out
from .bugs_blind2 import SegNet3, grey_levels
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Backbone, Pipeline

# Declared causes that are no check: no check's one-line description covers them.
NOT_A_CHECK = frozenset({"target_resampling", "pretrained_weights", "loss_reduction", "regularization_strength"})


# ----------------------------------------------------------------------------- shared pieces

def per_model():
    """State kept per model or optimizer (the checks may build several copies)."""
    return weakref.WeakKeyDictionary()


TINT = torch.tensor([1.0, 0.75, 0.45])   # a colour version of the images: per-channel gains (R, G, B)


def tinted(images, size=32):
    """uint8 (N, 1, 28, 28) -> uint8 (N, 3, size, size): padded to size and tinted per channel."""
    pad = (size - 28) // 2
    x = F.pad(images.float(), (pad, size - 28 - pad, pad, size - 28 - pad))
    return (x * TINT.view(1, 3, 1, 1)).round().clamp(0, 255).to(torch.uint8)


def standardize_channels(x):
    x = x.float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def colour_cnn(momentum=0.1):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=momentum), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32, momentum=momentum),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4, 10))


def footwear(labels):
    """Binary target: sandal, sneaker or ankle boot (classes 5, 7, 9)."""
    return ((labels == 5) | (labels == 7) | (labels == 9)).float()


# ----------------------------------------------------------------------------- eval / train mode

class NormalizeInForward(nn.Module):
    """Takes 0..1 pixels; random horizontal flips in training, then standardization, then a CNN."""

    def __init__(self, fixed=False):
        super().__init__()
        self.net, self.fixed = small_cnn(), fixed

    def forward(self, x):
        if self.training:
            flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(-1), x)
            if not self.fixed:
                x = (x - MEAN) / STD          # BUG: indented into the training branch: eval sees raw 0..1
        if self.fixed:
            x = (x - MEAN) / STD
        return self.net(x)


def normalization_inside_training_branch(images, labels, fixed=False):
    return NormalizeInForward(fixed), (images.float() / 255, labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


def batchnorm_momentum_keras_convention(images, labels, fixed=False):
    """Keras' BatchNormalization(momentum=0.99) ported as PyTorch's momentum=0.99 (PyTorch's is 1 - Keras')."""
    model = colour_cnn(momentum=0.01 if fixed else 0.99)   # BUG: running stats = the last batch's stats
    return model, (standardize_channels(tinted(images)), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- what the loss computes

def cross_entropy_on_single_logit(images, labels, fixed=False):
    """Footwear or not, one logit per image, float targets (B, 1)."""
    loss = nn.BCEWithLogitsLoss() if fixed else nn.CrossEntropyLoss()   # BUG: softmax over ONE logit is 1:
    return mlp_out(1), (standardize(images), footwear(labels)[:, None]), loss, adam(), standard_step  # loss 0


def imbalanced(images, labels):
    """Class k keeps about (k + 1) / 10 of its images: class 9 whole, class 0 a tenth."""
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(len(labels), generator=g) < (labels.float() + 1) / 10
    return images[keep], labels[keep]


def counter_weights(y, fixed=False):
    counts = Counter(y.tolist())
    if fixed:
        return torch.tensor([len(y) / (10 * counts[k]) for k in range(10)])
    return torch.tensor([len(y) / (10 * c) for c in counts.values()])   # BUG: first-seen order, not class order


def class_weights_in_counter_order(images, labels, fixed=False):
    x, y = imbalanced(images, labels)
    return mlp(), (standardize(x), y), nn.CrossEntropyLoss(weight=counter_weights(y, fixed)), adam(), standard_step


def softmax_for_multilabel(images, labels, fixed=False):
    """4 attributes per image (0 to 3 true): probabilities into BCELoss."""
    out = nn.Sigmoid() if fixed else nn.Softmax(dim=1)    # BUG: softmax makes the 4 attributes compete
    return nn.Sequential(mlp_out(4), out), (standardize(images), ATTRIBUTES[labels]), nn.BCELoss(), adam(), \
        standard_step


def partial_mask_loss_mean(images, labels, fixed=False):
    """Per-pixel 3-class segmentation with sparse annotation: 1 pixel in 20 is labelled (the rest -1),
    under SGD. The masked per-pixel loss must be divided by the number of LABELLED pixels."""
    g = torch.Generator().manual_seed(2)
    target = grey_levels(images)
    target[torch.rand(target.shape, generator=g) > 0.05] = -1           # unlabelled

    def loss_fn(out, t):
        mask = (t >= 0).float()
        per_pixel = F.cross_entropy(out, t.clamp(min=0), reduction="none") * mask
        # BUG: .mean() divides by every pixel, labelled or not: the loss and its gradient are 20x too small
        return per_pixel.sum() / mask.sum().clamp(min=1) if fixed else per_pixel.mean()
    make = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return SegNet3(), (standardize(images), target), loss_fn, make, standard_step


def label_smoothing_as_confidence(images, labels, fixed=False):
    """A config's `smoothing: 0.9` written by code where it meant the true class's confidence (1 - eps)."""
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(label_smoothing=0.1 if fixed else 0.9), \
        adam(), standard_step


# ----------------------------------------------------------------------------- targets

def half_size(images, labels, fixed=False):
    x = F.interpolate(images.float(), size=(14, 14), mode="area")
    m = grey_levels(images)[:, None].float()
    if fixed:
        m = F.interpolate(m, size=(14, 14), mode="nearest")
    else:
        m = F.interpolate(m, size=(14, 14), mode="bilinear", align_corners=False)   # BUG: class ids averaged,
    return x, m[:, 0].long()                                                      # then truncated by .long()


def mask_resized_bilinear(images, labels, fixed=False):
    """Per-pixel 3-class segmentation at 14x14: the images resized by area, the class-id masks too."""
    x, m = half_size(images, labels, fixed)
    return SegNet3(), ((x / 255 - MEAN) / STD, m), nn.CrossEntropyLoss(), adam(), standard_step


def target_integer_division(images, labels, fixed=False):
    """Regression on the share of bright pixels."""
    bright = (images > 127).sum((1, 2, 3))                      # int64
    share = bright / 784 if fixed else (bright // 784).float()  # BUG: floor division: every target is 0
    return Squeezed(mlp_out(1)), (standardize(images), share), nn.MSELoss(), adam(), standard_step


# ----------------------------------------------------------------------------- learning rate

def lr_compounding_decay(images, labels, fixed=False):
    """8x8 digits; an exponential per-step decay lr = base * 0.999**n written by hand."""
    calls = per_model()

    def step(model, batch, loss_fn, optimizer):
        n = calls[optimizer] = calls.get(optimizer, 0) + 1
        for group in optimizer.param_groups:
            if fixed:
                group["lr"] = 0.05 * 0.999 ** n
            else:
                group["lr"] *= 0.999 ** n       # BUG: from the CURRENT lr: base * 0.999**(n(n+1)/2)
        return standard_step(model, batch, loss_fn, optimizer)
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    x, y = digits()
    return digits_cnn(), (x, y), nn.CrossEntropyLoss(), make, step


def lambda_lr_absolute(images, labels, fixed=False):
    """Step decay (halve every 500 steps) through LambdaLR, whose lambda must return a FACTOR."""
    def make(params):
        opt = torch.optim.Adam(params, lr=1e-3)
        if fixed:
            decay = lambda s: 0.5 ** (s // 500)
        else:
            decay = lambda s: 1e-3 * 0.5 ** (s // 500)     # BUG: an absolute lr: the lr becomes 1e-3 * 1e-3
        opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, decay)
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()
        return loss
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


# ----------------------------------------------------------------------------- what is trained

def param_iterator_spent(images, labels, fixed=False):
    """nanoGPT-style AdamW groups (decay on kernels, none on biases and BatchNorm) from a filter()."""
    def make(params):
        if fixed:
            trainable = [p for p in params if p.requires_grad]
        else:
            trainable = filter(lambda p: p.requires_grad, params)   # an iterator: it can be read once
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]             # BUG: empty, the iterator is spent
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def pretrain(model, x, y, steps, make, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = make(model.parameters())
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return opt


def dataparallel_checkpoint_strict_false(images, labels, fixed=False, steps=60):
    """A backbone 'pretrained' under nn.DataParallel (keys prefixed 'module.'), loaded with strict=False,
    frozen, and a new head trained on top."""
    x = standardize(images)
    source = Backbone()
    pretrain(source, x, labels, steps, lambda p: torch.optim.Adam(p, 1e-3))
    checkpoint = {"module." + k: v for k, v in source.state_dict().items()}   # as saved from DataParallel
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = Backbone()
    if fixed:
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    model.load_state_dict(checkpoint, strict=False)   # BUG: no key matches, nothing is loaded, nothing said
    model.head = nn.Linear(32 * 4, 10)
    for p in model.features.parameters():
        p.requires_grad_(False)
    model.features.eval()

    def step(model, batch, loss_fn, optimizer):
        model.train()
        model.features.eval()
        return standard_step(model, batch, loss_fn, optimizer)
    head_only = lambda params: torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)
    return model, (x, labels), nn.CrossEntropyLoss(), head_only, step


def optimizer_state_overrides_lr(images, labels, fixed=False, steps=30):
    """Fine-tuning resumed from a pretraining checkpoint (weights and optimizer) at a 50x lower lr."""
    x = standardize(images)
    source = mlp()
    opt = pretrain(source, x, labels, steps, lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9))
    checkpoint = {"model": source.state_dict(), "optimizer": opt.state_dict()}
    model = mlp()
    model.load_state_dict(checkpoint["model"])

    def make(params):
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        opt.load_state_dict(checkpoint["optimizer"])      # BUG: restores the checkpoint's lr=0.5 too
        if fixed:
            for group in opt.param_groups:
                group["lr"] = 0.01
        return opt
    return model, (x, labels), nn.CrossEntropyLoss(), make, standard_step


# ----------------------------------------------------------------------------- gradients and regularization

def hook_registered_every_step(images, labels, fixed=False):
    """The body learns at 0.1x the head's rate through a gradient hook on its parameters."""
    hooked = per_model()

    def step(model, batch, loss_fn, optimizer):
        if not fixed or model not in hooked:
            for p in model[:-1].parameters():           # BUG (fixed=False): one more hook at every step:
                p.register_hook(lambda g: g * 0.1)      # the body's gradient is scaled by 0.1**step
            hooked[model] = True
        return standard_step(model, batch, loss_fn, optimizer)
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def l2_penalty_without_coefficient(images, labels, fixed=False):
    """An explicit L2 penalty added to the loss; its coefficient 5e-4 was lost in a refactor."""
    lam = 5e-4 if fixed else 1.0                        # BUG: loss + sum ||w||^2 with coefficient 1

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        penalty = sum(p.pow(2).sum() for name, p in model.named_parameters() if name.endswith("weight"))
        (loss + lam * penalty).backward()
        optimizer.step()
        return loss.item()
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def test_channels_bgr(images, labels):
    """Colour images: train decoded with PIL (RGB), test with cv2.imread (BGR), channels never swapped."""
    x, y, xt, yt = _split(images, labels)
    return (tinted(x), y), (tinted(xt).flip(1), yt), 10          # BUG: test channels in reverse order


def test_inverted_polarity(images, labels):
    """Test images from scans, dark object on a light page, fed without inverting them."""
    x, y, xt, yt = _split(images, labels)
    return (x, y), (255 - xt, yt), 10                              # BUG: 255 - x in test only


def crowd_label_noise(images, labels):
    """A third of the train labels from an unreliable annotator: uniformly random classes."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(5)
    noisy = torch.rand(len(y), generator=g) < 0.35
    y = y.clone()
    y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=g)   # BUG: 35% noise (about 31% wrong)
    return (x, y), (xt, yt), 10


def conflicting_duplicate_annotations(images, labels):
    """Two annotation rounds concatenated: a quarter of the train images again, with the second round's
    (disagreeing) labels."""
    x, y, xt, yt = _split(images, labels)
    k = len(y) // 4
    g = torch.Generator().manual_seed(6)
    other = (y[:k] + torch.randint(1, 10, (k,), generator=g)) % 10         # always a different class
    return (torch.cat([x, x[:k]]), torch.cat([y, other])), (xt, yt), 10  # BUG: same bytes, two labels


# ImageFolder numbers the folders in sorted (alphabetical) order of their names.
FASHION_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def alphabetical_class_order_in_test(images, labels):
    """Train labels in the dataset's canonical order; the test export re-read with ImageFolder, which
    numbers the class folders alphabetically."""
    x, y, xt, yt = _split(images, labels)
    alphabetical = sorted(FASHION_NAMES)                 # as find_classes sorts the folder names
    remap = torch.tensor([alphabetical.index(name) for name in FASHION_NAMES])
    return (x, y), (xt, remap[yt]), 10                            # BUG: another id for 6 of the 10 classes


def class_dependent_position(images, labels):
    """Bags and trousers (classes 1, 8) photographed off-centre in train (another station: shifted 3 pixels
    down and right); in test the shift is at random."""
    x, y, xt, yt = _split(images, labels)
    shift = lambda t: F.pad(t, (3, 0, 3, 0))[:, :, :28, :28]      # 3 down, 3 right, black fill
    sel = (y == 1) | (y == 8)
    x = x.clone()
    x[sel] = shift(x[sel])                                        # BUG: position predicts the class in train
    g = torch.Generator().manual_seed(0)
    some = torch.rand(len(yt), generator=g) < 0.2
    xt = xt.clone()
    xt[some] = shift(xt[some])
    return (x, y), (xt, yt), 10


def train_sources_in_two_scales(images, labels):
    """Train concatenated from two exports as float arrays: one as 0..255, one after ToTensor (0..1);
    test is the 0..255 export."""
    x, y, xt, yt = _split(images, labels)
    x = x.float()
    half = len(y) // 2
    x[half:] = x[half:] / 255                                     # BUG: half of train is 255x darker
    return (x, y), (xt.float(), yt), 10


HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
BLIND3 = [
    # eval / train mode
    HeldOutBug("normalization_inside_training_branch", HUMBATOVA + " (training data: preprocessing differs "
               "between training and inference); Islam et al. 2019 (data flow)", "standardization indented into "
               "forward's `if self.training:` augmentation block: eval sees raw 0..1 pixels.",
               normalization_inside_training_branch, frozenset({"train_eval_consistency"})),
    HeldOutBug("batchnorm_momentum_keras_convention", "torch.nn.BatchNorm2d docs (this momentum differs from "
               "the conventional one: new = (1 - momentum) * old + momentum * batch); Keras BatchNormalization("
               "momentum=0.99) ported as is", "BatchNorm2d(momentum=0.99) on 3x32x32 colour images: the running "
               "statistics are the last batch's.", batchnorm_momentum_keras_convention,
               frozenset({"train_eval_consistency", "eval_determinism"})),
    # what the loss computes
    HeldOutBug("cross_entropy_on_single_logit", HUMBATOVA + " (training: wrong loss function); "
               "taourl.com/read-2485436.html (binary CNN, BCELoss vs CrossEntropyLoss confusion)",
               "CrossEntropyLoss on one logit with (B, 1) float targets: softmax over one class is 1, the loss "
               "is 0 and no gradient flows.", cross_entropy_on_single_logit,
               frozenset({"param_grads", "step_updates", "loss_at_init"})),
    HeldOutBug("class_weights_in_counter_order", HUMBATOVA + " (training: loss function, class weights); "
               "Python docs (Counter keeps first-insertion order)", "inverse-frequency weights built from "
               "Counter(labels).values(): the weights are in first-seen order, not class order.",
               class_weights_in_counter_order, frozenset({"loss_classes"})),
    HeldOutBug("softmax_for_multilabel", HUMBATOVA + " (model: wrong activation function of the last layer); "
               "Islam et al. 2019 (model: activation)", "Softmax then BCELoss on 4 multi-hot attributes: the "
               "outputs sum to 1, so 3 true attributes can't all be predicted.", softmax_for_multilabel,
               frozenset({"output_activation", "loss_at_init"})),
    HeldOutBug("partial_mask_loss_mean", "fairseq / Transformer practice (normalize a masked loss by the count "
               "of real tokens, not of positions); " + HUMBATOVA + " (training: loss function)", "sparse per-pixel "
               "labels (5%) with a masked loss averaged over ALL pixels under SGD: 20x too small.",
               partial_mask_loss_mean, frozenset({"loss_reduction", "step_updates"})),
    HeldOutBug("label_smoothing_as_confidence", "NVIDIA DeepLearningExamples LabelSmoothing (confidence = 1 - "
               "smoothing) vs torch CrossEntropyLoss(label_smoothing=eps); " + HUMBATOVA +
               " (training: regularisation)", "CrossEntropyLoss(label_smoothing=0.9): the true class's target is "
               "0.19, the others 0.09.", label_smoothing_as_confidence,
               frozenset({"regularization_strength", "overfit_batch"})),
    # targets
    HeldOutBug("mask_resized_bilinear", "torchvision Resize docs (use NEAREST for masks); " + HUMBATOVA +
               " (training data: preprocessing of labels)", "3-class masks downsized with bilinear interpolation "
               "then .long(): class ids averaged and truncated, most bright pixels become class 1.",
               mask_resized_bilinear, frozenset({"target_resampling"})),
    HeldOutBug("target_integer_division", "Zhang et al. 2018 (type confusion); Islam et al. 2019 (data type)",
               "the regression target bright_pixels // 784: integer division, every target is 0.",
               target_integer_division, frozenset({"beats_baseline", "loss_at_init"})),
    # learning rate
    HeldOutBug("lr_compounding_decay", "discuss.pytorch.org/t/adaptive-learning-rate/320 (decay from the base lr, "
               "not the current one); " + HUMBATOVA + " (training: learning rate)", "group['lr'] *= 0.999**n "
               "each step on 8x8 digits: lr = base * 0.999**(n(n+1)/2), 0.6% of base after 100 steps.",
               lr_compounding_decay, frozenset({"lr_schedule"})),
    HeldOutBug("lambda_lr_absolute", "torch.optim.lr_scheduler.LambdaLR docs (lr_lambda computes a "
               "multiplicative factor); " + HUMBATOVA + " (training: learning rate)", "LambdaLR's lambda returns "
               "an absolute lr 1e-3: the lr is 1e-6 from the first step.", lambda_lr_absolute,
               frozenset({"step_updates", "lr_schedule"})),
    # what is trained
    HeldOutBug("param_iterator_spent", "Python docs (filter() returns a one-pass iterator); nanoGPT's "
               "configure_optimizers (decay / no-decay groups); Islam et al. 2019 (API misuse)",
               "decay and no-decay groups built from one filter() iterator: the second list is empty, biases "
               "and BatchNorm are in no group.", param_iterator_spent, frozenset({"optimizer_params"})),
    HeldOutBug("dataparallel_checkpoint_strict_false", "discuss.pytorch.org/t/solved-keyerror-unexpected-key-"
               "module-encoder-embedding-weight-in-state-dict/1686 ('module.' prefix of DataParallel); "
               "load_state_dict(strict=False) docs", "a 'module.'-prefixed checkpoint loaded with strict=False: "
               "nothing loads, the frozen backbone stays random.", dataparallel_checkpoint_strict_false,
               frozenset({"pretrained_weights"})),
    HeldOutBug("optimizer_state_overrides_lr", "torch.optim.Optimizer.state_dict docs (param_groups hold lr); "
               "discuss.pytorch.org/t/adaptive-learning-rate/320; " + HUMBATOVA + " (training: learning rate)",
               "fine-tuning at lr 0.01, then optimizer.load_state_dict(checkpoint): the pretraining lr 0.5 is "
               "back.", optimizer_state_overrides_lr, frozenset({"step_updates", "overfit_batch"})),
    # gradients and regularization
    HeldOutBug("hook_registered_every_step", "torch.Tensor.register_hook docs; github.com/pytorch/pytorch/issues/"
               "65194 (hooks registered every iteration); github.com/dotnet/TorchSharp/issues/1483 (grad * 0.5 "
               "hooks in a loop)", "a 0.1x gradient hook registered on the body at every step: its gradient is "
               "scaled by 0.1**step.", hook_registered_every_step, frozenset({"step_updates", "lr_schedule"})),
    HeldOutBug("l2_penalty_without_coefficient", "discuss.pytorch.org/t/simple-l2-regularization/139; " +
               HUMBATOVA + " (training: regularisation)", "loss + sum of squared weights with coefficient 1 "
               "(meant 5e-4).", l2_penalty_without_coefficient, frozenset({"weight_decay"})),
    # data (audit_data)
    HeldOutBug("test_channels_bgr", "OpenCV imread docs (channels in BGR order); " + HUMBATOVA +
               " (training data: preprocessing mismatch)", "colour 3x32x32 images: test channels reversed "
               "(BGR), train RGB.", test_channels_bgr, frozenset({"value_range", "train_vs_test"}), "data"),
    HeldOutBug("test_inverted_polarity", HUMBATOVA + " (training data: preprocessing); MNIST models on one's own "
               "scans (dark ink on white paper)", "test images inverted (255 - x), train not.",
               test_inverted_polarity, frozenset({"value_range", "train_vs_test"}), "data"),
    HeldOutBug("crowd_label_noise", "Northcutt, Athalye & Mueller 2021 (pervasive label errors); " + HUMBATOVA +
               " (training data: wrong labels)", "35% of the train labels replaced by random classes.",
               crowd_label_noise, frozenset({"label_issues", "label_signal"}), "data"),
    HeldOutBug("conflicting_duplicate_annotations", "Northcutt et al. 2021; Kapoor & Narayanan 2023 (duplicates)",
               "a quarter of train repeated byte for byte with a different label (a second annotation round).",
               conflicting_duplicate_annotations, frozenset({"duplicates", "label_issues"}), "data"),
    HeldOutBug("alphabetical_class_order_in_test", "torchvision ImageFolder / DatasetFolder.find_classes docs "
               "(classes sorted by folder name)", "test ids from alphabetically sorted class folders, train ids "
               "in the canonical order: 6 of 10 classes renumbered.", alphabetical_class_order_in_test,
               frozenset({"label_map"}), "data"),
    HeldOutBug("class_dependent_position", "DeGrave et al. 2021 (patient positioning predicts the label); Zech et "
               "al. 2018", "trousers and bags shifted 3 pixels in train; a fifth of all test images shifted at "
               "random.", class_dependent_position, frozenset({"shortcuts"}), "data"),
    HeldOutBug("train_sources_in_two_scales", HUMBATOVA + " (training data: preprocessing, inconsistent "
               "scaling); torchvision ToTensor docs (scales to 0..1)", "half the train images as 0..255 floats, "
               "half as 0..1 floats; test 0..255.", train_sources_in_two_scales,
               frozenset({"value_range", "train_vs_test"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind3.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND3
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

def cosine_warm_restarts(images, labels):
    """SGD nesterov with CosineAnnealingWarmRestarts(T_0=100 steps, T_mult=2) stepped per batch: the lr
    falls to eta_min at the end of each cycle and jumps back (on purpose)."""
    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        opt.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=100, T_mult=2, eta_min=1e-4)
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()
        return loss
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def mixup_smoothed_step(model, batch, loss_fn, optimizer, alpha=0.4, eps=0.1):
    """Mixup of inputs and of label-smoothed one-hot targets (soft targets into CrossEntropyLoss)."""
    x, y = batch
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    soft = F.one_hot(y, 10).float() * (1 - eps) + eps / 10
    optimizer.zero_grad()
    loss = loss_fn(model(lam * x + (1 - lam) * x[perm]), lam * soft + (1 - lam) * soft[perm])
    loss.backward()
    optimizer.step()
    return loss.item()


def mixup_label_smoothing(images, labels):
    return mlp(hidden=128), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), mixup_smoothed_step


def scaler_accumulation(images, labels, every=2):
    """A GradScaler (the AMP recipe: scale, unscale_, clip, step, update) around float32 compute on the
    batch's device, 2 micro-batches accumulated, a StepLR stepped per optimizer step."""
    state = per_model()

    def make(params):
        opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
        opt.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=200, gamma=0.5)
        return opt

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        if optimizer not in state:
            state[optimizer] = [0, torch.amp.GradScaler(x.device.type, init_scale=2.0 ** 10)]
        state[optimizer][0] += 1
        n, scaler = state[optimizer]
        loss = loss_fn(model(x), y)
        scaler.scale(loss / every).backward()
        if n % every == 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            optimizer.scheduler.step()
        return loss.item()
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def mean_teacher(images, labels, decay=0.99, weight=1.0):
    """Mean teacher (Tarvainen & Valpola 2017): an EMA copy of the student (kept per model) gives targets
    for a consistency loss on differently noised inputs, added to cross-entropy."""
    import copy
    teachers = per_model()

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        if model not in teachers:
            teachers[model] = copy.deepcopy(model).requires_grad_(False)
        teacher = teachers[model]
        optimizer.zero_grad()
        out = model(x + 0.1 * torch.randn_like(x))
        with torch.no_grad():
            target = F.softmax(teacher(x + 0.1 * torch.randn_like(x)), 1)
        loss = loss_fn(out, y)
        (loss + weight * F.mse_loss(F.softmax(out, 1), target)).backward()
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), model.parameters()):
                t.lerp_(s, 1 - decay)
        return loss.item()
    return mlp(hidden=128, dropout=0.2), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def sigmoid_focal(logits, target, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss (Lin et al. 2017), mean-reduced."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean()


def binary_sigmoid_focal(images, labels):
    """Footwear or not (30% positive), one logit, sigmoid focal loss with alpha 0.25: its loss at init is
    far below log 2 by design."""
    return Squeezed(mlp_out(1)), (standardize(images), footwear(labels)), sigmoid_focal, adam(), standard_step


class UncertaintyHeads(nn.Module):
    """A shared trunk, class and attribute heads, and one learned log-variance per task (Kendall et al. 2018)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU())
        self.classes, self.attributes = nn.Linear(128, 10), nn.Linear(128, 4)
        self.log_vars = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        h = self.trunk(x)
        return self.classes(h), self.attributes(h), self.log_vars


def uncertainty_loss(out, y):
    logits, attrs, s = out
    ce = F.cross_entropy(logits, y)
    bce = F.binary_cross_entropy_with_logits(attrs, ATTRIBUTES.to(y.device)[y])
    return torch.exp(-s[0]) * ce + s[0] / 2 + torch.exp(-s[1]) * bce + s[1] / 2


def uncertainty_multitask(images, labels):
    return UncertaintyHeads(), (standardize(images), labels), uncertainty_loss, adam(), standard_step


def sam_step(model, batch, loss_fn, optimizer, rho=0.05):
    """Sharpness-aware minimization (Foret et al. 2021): climb to w + rho g/|g|, take the gradient there,
    come back to w, and let the base optimizer step with that gradient."""
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.norm(torch.stack([p.grad.norm() for p in params])) + 1e-12
        moves = [p.grad * (rho / norm) for p in params]
        for p, e in zip(params, moves):
            p.add_(e)
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    with torch.no_grad():
        for p, e in zip(params, moves):
            p.sub_(e)
    optimizer.step()
    return loss.item()


def sam(images, labels):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, sam_step


class Denoiser(nn.Module):
    """A fully convolutional denoiser with a residual connection: (B, 1, 28, 28) in and out."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


def denoising_regression(images, labels):
    """Per-pixel regression: standardized images with fixed gaussian noise in, the clean images out, MSE."""
    clean = standardize(images)
    g = torch.Generator().manual_seed(4)
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=g)
    return Denoiser(), (noisy, clean), nn.MSELoss(), adam(), standard_step


class TiedDilations(nn.Module):
    """One 3x3 kernel applied at dilation 1 and 2 (weights tied on purpose, as in multi-scale shared
    convolutions), the two maps concatenated, then a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(24 * 7 * 7, 10))

    def forward(self, x):
        a = self.conv(x)
        b = F.conv2d(x, self.conv.weight, self.conv.bias, padding=2, dilation=2)
        return self.head(torch.cat([a, b], 1))


def tied_dilations(images, labels):
    return TiedDilations(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


CORRECT_BLIND3 = [
    Pipeline("cosine_warm_restarts_per_step", "SGD nesterov, CosineAnnealingWarmRestarts(T_0=100, T_mult=2) "
             "stepped per batch: the lr drops to 1e-4 at step 100 and restarts at 0.05.", cosine_warm_restarts),
    Pipeline("mixup_label_smoothing", "mixup of inputs and of label-smoothed one-hot targets.",
             mixup_label_smoothing),
    Pipeline("grad_scaler_accumulation", "GradScaler scale/unscale_/clip/step/update, 2 micro-batches "
             "accumulated, StepLR per optimizer step.", scaler_accumulation),
    Pipeline("mean_teacher", "an EMA teacher's softmax as consistency target on noised inputs, plus CE.",
             mean_teacher),
    Pipeline("binary_sigmoid_focal", "one logit, footwear vs the rest, sigmoid focal loss (alpha 0.25, gamma 2).",
             binary_sigmoid_focal),
    Pipeline("uncertainty_weighted_multitask", "CE + attribute BCE weighted by learned log-variances returned "
             "in the output tuple.", uncertainty_multitask),
    Pipeline("sharpness_aware_minimization", "SAM: two forward/backward passes per step, the weights moved "
             "and restored inside the step.", sam),
    Pipeline("denoising_per_pixel_regression", "noisy images in, clean images out, a residual conv net, MSE.",
             denoising_regression),
    Pipeline("tied_dilated_kernels", "one conv kernel applied at dilations 1 and 2 (tied on purpose).",
             tied_dilations),
]


def clean_splits3(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: the colour version of a train/test pair, and a
    3-class footwear subset of another."""
    foot = lambda y: (y == 5) | (y == 7) | (y == 9)
    relabel = lambda y: (y[foot(y)] - 5) // 2                     # 5, 7, 9 -> 0, 1, 2
    half, quarter = len(labels) // 2, len(test_labels) // 2
    x, y, xt, yt = images[:half], labels[:half], test_images[:quarter], test_labels[:quarter]
    fx, fy, fxt, fyt = images[half:], labels[half:], test_images[quarter:], test_labels[quarter:]
    return [("fashion-mnist tinted 3x32x32 train vs test", (tinted(x), y), (tinted(xt), yt), 10),
            ("fashion-mnist footwear 3 classes train vs test", (fx[foot(fy)], relabel(fy)),
             (fxt[foot(fyt)], relabel(fyt)), 3)]


BY_NAME = {b.name: b for b in BLIND3} | {p.name: p for p in CORRECT_BLIND3}
