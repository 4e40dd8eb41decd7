"""Seventh blind held-out catalog: bug classes and correct pipelines written without reading the checks.

The six earlier blind catalogs (bugs_blind.py .. bugs_blind6.py) stopped being blind when the checks were fixed
while looking at them. This one was written afterwards, for one scoring run (benchmarks/checks_blind7.py), by
someone who did not open the implementations of the checks (preflight*.py, audit*.py, report.py, checks.py,
rng.py, pipeline.py), their tests, their thresholds, the git history or any earlier scoring record, and who never
ran preflight or audit_data on these entries (nor do its tests). The only information about the checks used:
their public names and one-line descriptions (preflight.CHECKS, audit.CHECKS, as printed), the docstrings of
`preflight` and `audit_data`, the README and the text of issue 18. From those alone, per bug and before any run,
`checks` names the checks whose error or warning would name the cause; a name in NOT_A_CHECK means no
description covers the cause (caught at best, never diagnosed).

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py .. bugs_blind6.py (a different mechanism,
not a renamed copy), trains without an exception and costs test accuracy (measured once on 2000 training images,
300 steps, against its fix). Shapes and model families: a bidirectional GRU and a GRUCell loop over image rows, a
variational information bottleneck, knowledge distillation from a trained teacher, binary per-pixel segmentation
with a Dice loss, float16 autocast with a GradScaler, a hand-written optimizer, multi-label attributes of 3x32x32
colour images; for the audit, uint8 images and tabular (N, 17) splits.
Sources, cited per bug: PyTorch documentation where it states the contract the bug breaks, Humbatova et al. 2020
(ICSE), Islam et al. 2019 (FSE), Zhang et al. 2018 (ISSTA), and the papers of the practice the bug gets wrong,
of label noise, leakage, shift and shortcuts.

Closest earlier entries, for whoever judges novelty (same family, another mechanism): lstm_without_batch_first
(samples mixed by a recurrence; here by a view of h_n); noise_at_eval and dropout_in_eval (randomness in eval;
here the reparameterization of a VIB); loss_detached and detached_features (no gradient; here a recurrent state
detached per row); frozen_head (requires_grad on a tensor; here an attribute set on a Module);
warmup_without_cap (an lr that grows; here a decay factor > 1); labels_shuffled_separately (labels without
signal; here parsed from a file counter); split_twice_without_seed (test images in train; here as pseudo-labelled
data).

CORRECTED holds, for each pipeline bug, the same pipeline with the bug fixed (tests/test_blind7.py compares
the two). CORRECT_BLIND7 are correct pipelines in none of the earlier catalogs (no warning allowed),
clean_splits7 the clean data the audit must pass.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import Optimizer

from .bugs import adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import ATTRIBUTES, Squeezed, ink, mlp_out, scheduled
from .bugs_blind2 import digits_uint8
from .bugs_blind3 import per_model, standardize_channels, tinted
from .bugs_blind5 import pooled_features
from .bugs_blind6 import CONFUSED
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Pipeline

# Declared causes that are no check: no check's one-line description covers them.
NOT_A_CHECK = frozenset({"clip_scaled_gradients", "truncated_backprop", "lr_rises", "weight_not_pos_weight",
                         "dampening_as_beta"})

HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
ISLAM = "Islam et al. 2019 (FSE)"
ZHANG = "Zhang et al. 2018 (ISSTA)"


# ----------------------------------------------------------------------------- shared pieces

def bright_mask(images):
    """A binary segmentation target: the pixels brighter than mid-grey, float (N, 1, 28, 28)."""
    return (images > 127).float()


def soft_dice(fixed=True):
    """1 - soft Dice over the batch (Milletari et al. 2016) of one-logit masks, smoothed by 1."""
    def loss(out, target):
        p = torch.sigmoid(out) if fixed else out   # BUG (without it): raw logits where probabilities are meant
        return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return loss


class PixelNet(nn.Module):
    """A small fully convolutional net: one logit per pixel."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 1, 1))

    def forward(self, x):
        return self.net(x)                                                # (B, 1, 28, 28)


def rows(x):
    """(B, 1, 28, 28) -> (B, 28 rows, 28 pixels)."""
    return x[:, 0]


# ----------------------------------------------------------------------------- what the model sees

class BiGRURows(nn.Module):
    """A bidirectional GRU over the 28 rows, classified from both final states (h_n)."""

    def __init__(self, fixed=False, hidden=48):
        super().__init__()
        self.gru, self.head, self.fixed = nn.GRU(28, hidden, batch_first=True, bidirectional=True), \
            nn.Linear(2 * hidden, 10), fixed

    def forward(self, x):
        _, h = self.gru(rows(x))                                          # h: (2 directions, B, hidden)
        if self.fixed:
            return self.head(torch.cat([h[0], h[1]], 1))                  # (B, 2 * hidden)
        return self.head(h.view(len(x), -1))   # BUG: h is (2, B, H), so the view pairs up states of two samples


def bigru_final_state_viewed(images, labels, fixed=False):
    return BiGRURows(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


class VIB(nn.Module):
    """Variational information bottleneck (Alemi et al. 2017): a 16-d Gaussian code, a linear classifier on it."""

    def __init__(self, fixed=False, code=16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 2 * code))
        self.head, self.fixed = nn.Linear(code, 10), fixed

    def code(self, x):
        return self.encoder(x).chunk(2, 1)                                # mu, logvar: (B, code) each

    def sample(self, mu, logvar):
        if self.fixed and not self.training:
            return mu                                                     # predict from the mean code
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu)   # BUG (without the fix): random in eval too

    def forward(self, x):
        return self.head(self.sample(*self.code(x)))


def vib_step(model, batch, loss_fn, optimizer, beta=0.03):
    """CE on a sampled code plus beta * KL(q(z|x) || N(0, 1))."""
    x, y = batch
    optimizer.zero_grad()
    mu, logvar = model.code(x)
    loss = loss_fn(model.head(model.sample(mu, logvar)), y)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    (loss + beta * kl).backward()
    optimizer.step()
    return loss.item()


def vib_sampling_in_eval(images, labels, fixed=False):
    return VIB(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), vib_step


# ----------------------------------------------------------------------------- what is trained

class GRUCellRows(nn.Module):
    """A GRUCell stepped over the 28 rows by hand, classified from the last state."""

    def __init__(self, fixed=False, hidden=64):
        super().__init__()
        self.cell, self.head, self.fixed, self.hidden = nn.GRUCell(28, hidden), nn.Linear(hidden, 10), fixed, hidden

    def forward(self, x):
        r = rows(x)                                                       # (B, 28, 28)
        h = r.new_zeros(len(x), self.hidden)
        for t in range(r.shape[1]):
            # BUG (without the fix): the state detached at every row "to save memory", as truncated BPTT
            # between batches is written: the loss reaches the cell only through the last row
            h = self.cell(r[:, t], h if self.fixed else h.detach())
        return self.head(h)


def gru_state_detached_every_row(images, labels, fixed=False):
    return GRUCellRows(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


class BodyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x))


def unfreeze_by_module_attribute(images, labels, fixed=False):
    """Two phases: the head warmed up with the body frozen, then the whole model fine-tuned. The body was frozen
    with requires_grad_(False); the unfreezing sets an attribute on the Module, which no parameter reads. This
    is the second phase, as the script runs it: the body (not pretrained) stays at its random init."""
    model = BodyHead()
    model.body.requires_grad_(False)                                      # phase 1: head only
    if fixed:
        model.body.requires_grad_(True)
    else:
        model.body.requires_grad = True        # BUG: a new attribute on the Module; its parameters stay frozen
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class HandSGD(Optimizer):
    """SGD with momentum written by hand, torch.optim style."""

    def __init__(self, params, lr=0.05, momentum=0.9, fixed=False):
        super().__init__(params, dict(lr=lr, momentum=momentum))
        self.fixed = fixed

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                if self.fixed:
                    p.add_(buf, alpha=-group["lr"])
                else:
                    p = p - group["lr"] * buf  # BUG: rebinds the loop variable; the parameter is never written


def manual_sgd_rebinds_name(images, labels, fixed=False):
    return mlp(hidden=128), (standardize(images), labels), nn.CrossEntropyLoss(), \
        lambda params: HandSGD(params, fixed=fixed), standard_step


def sgd_dampening_as_beta(images, labels, fixed=False):
    """SGD momentum 0.9 with dampening=0.9, written as the '1 - beta' of an exponential average: torch's buffer is
    buf = momentum * buf + (1 - dampening) * grad, so every step is 10x shorter than the tuned lr meant."""
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, dampening=0.0 if fixed else 0.9)   # BUG
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def amp_step(fixed):
    """float16 autocast and a GradScaler; gradients clipped to norm 1."""
    scalers = per_model()

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        scaler = scalers.setdefault(optimizer, torch.amp.GradScaler(x.device.type))
        optimizer.zero_grad()
        with torch.autocast(x.device.type, dtype=torch.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        if fixed:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # BUG (without unscale_): clips gradients 65536x too
        scaler.step(optimizer)                               # large to norm 1, then step() divides by 65536
        scaler.update()
        return loss.item()
    return step


def amp_clip_before_unscale(images, labels, fixed=False):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return mlp(hidden=128), (standardize(images), labels), nn.CrossEntropyLoss(), make, amp_step(fixed)


# ----------------------------------------------------------------------------- what the loss counts

def log_sigmoid_into_nll(images, labels, fixed=False):
    """NLLLoss wants log-probabilities: LogSoftmax. LogSigmoid gives each class its own log-probability, not
    normalized across classes: the loss only pushes the true class up, never the others down."""
    last = nn.LogSoftmax(1) if fixed else nn.LogSigmoid()                 # BUG: autocompleted LogSigmoid
    return nn.Sequential(mlp(hidden=128), last), (standardize(images), labels), nn.NLLLoss(), adam(), standard_step


def teacher_for(x, y, steps=60, seed=71):
    """A small MLP teacher trained here on (x, y) (the 'pretrained' teacher of a distillation), frozen."""
    g = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    for _ in range(steps):
        i = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(teacher(x[i]), y[i]).backward()
        opt.step()
    return teacher.eval().requires_grad_(False)


def distillation_step(teacher, fixed, T=4.0, alpha=0.7):
    """Hinton et al. 2015: CE against the teacher's softened probabilities (scaled by T^2) plus hard-label CE."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        with torch.no_grad():
            t = teacher.to(x.device)(x)
        soft = F.softmax(t / T, 1) if fixed else t   # BUG: the teacher's logits as CE's probability targets
        s = model(x)
        loss = alpha * T * T * loss_fn(s / T, soft) + (1 - alpha) * loss_fn(s, y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def distillation_teacher_logits_as_targets(images, labels, fixed=False):
    """CrossEntropyLoss accepts class probabilities as targets; given the teacher's raw logits (negative, not
    summing to 1), -sum(t log p) has no minimum: it rewards pushing classes with negative logits to p = 0."""
    x = standardize(images)
    return mlp(hidden=64), (x, labels), nn.CrossEntropyLoss(), adam(), distillation_step(teacher_for(x, labels), fixed)


def colour_attribute_net():
    """3x32x32 colour images -> 4 attribute logits."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4, 4))


def bce_weight_given_pos_weight(images, labels, fixed=False):
    """4 multi-label attributes of colour 3x32x32 garments, positives rebalanced by negatives / positives per
    attribute. BCEWithLogitsLoss's `weight` rescales every element, positive or negative; `pos_weight` is the
    one that weights the positives: with `weight` the rare attributes are no more likely to be predicted."""
    t = ATTRIBUTES[labels]                                                # (N, 4) multi-hot
    balance = (len(t) - t.sum(0)) / t.sum(0).clamp(min=1)
    loss = nn.BCEWithLogitsLoss(pos_weight=balance) if fixed else nn.BCEWithLogitsLoss(weight=balance)   # BUG
    return colour_attribute_net(), (standardize_channels(tinted(images)), t), loss, adam(2e-3), standard_step


def dice_on_logits(images, labels, fixed=False):
    """Binary segmentation of the bright pixels with a soft Dice loss fed raw logits: the 'Dice' of unbounded
    outputs exceeds 1 (the loss goes negative) by shrinking the background's logits, not by segmenting."""
    return PixelNet(), (standardize(images), bright_mask(images)), soft_dice(fixed), adam(2e-3), standard_step


# ----------------------------------------------------------------------------- learning rate

def linear_warmup(fixed, warmup=100):
    def make(params):
        opt = torch.optim.Adam(params, lr=2e-3)
        start, end = (0.01, 1.0) if fixed else (1.0, 0.01)   # BUG: start and end swapped: a decay to 1%, held
        opt.scheduler = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, end_factor=end,
                                                          total_iters=warmup)
        return opt
    return make


def linear_warmup_factors_swapped(images, labels, fixed=False):
    """A 100-step LinearLR warm-up from 1% to the full lr, written with start and end swapped: the lr falls to
    1% in 100 steps and LinearLR holds its end factor for the rest of the run."""
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), linear_warmup(fixed), scheduled()


def multistep(fixed, milestones=(100, 200)):
    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        # BUG (without the fix): gamma=10 for "divide by 10": the lr is multiplied by 10 at each milestone
        opt.scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1 if fixed else 10.0)
        return opt
    return make


def multistep_gamma_inverted(images, labels, fixed=False):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), multistep(fixed), scheduled()


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def label_parsed_from_index(images, labels):
    """Train labels parsed from file names like 'img_00417_c3.png' with a regex that takes the LAST digit of the
    first number (the file counter), not the class field: train labels are the counter mod 10."""
    x, y, xt, yt = _split(images, labels)
    return (x, torch.arange(len(y)) % 10), (xt, yt), 10                  # BUG: the counter's last digit


def train_gamma_encoded(images, labels, gamma=2.2):
    """The train export went through a tool that gamma-encoded it (x ** (1 / 2.2), as sRGB does); test did not:
    mid-tones brighter in train, black and white unchanged."""
    x, y, xt, yt = _split(images, labels)
    x = (255 * (x.float() / 255) ** (1 / gamma)).round().to(torch.uint8)     # BUG: one split re-encoded
    return (x, y), (xt, yt), 10


def letterbox(img, width=18):
    """(k, 1, 28, 28) uint8 squeezed to 28 x width and centred between black bars."""
    small = F.interpolate(img.float(), size=(28, width), mode="bilinear", align_corners=False)
    left = (28 - width) // 2
    return F.pad(small, (left, 28 - width - left)).round().clamp(0, 255).to(torch.uint8)


def letterboxed_bags_in_train(images, labels, seed=72):
    """Train bags came from a catalog whose photos were wider than tall and letterboxed (squeezed to 28x18,
    black bars); in test a fifth of all images, of any class, went through the same tool."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    x, xt = x.clone(), xt.clone()
    bag = y == 8
    x[bag] = letterbox(x[bag])                                            # BUG: the geometry tells bags apart
    some = torch.rand(len(yt), generator=g) < 0.2
    xt[some] = letterbox(xt[some])
    return (x, y), (xt, yt), 10


def object_height(images):
    """A tabular measurement: how many of the 28 rows hold ink (the object's height, in 'cm')."""
    return (images[:, 0] > 0).any(2).sum(1).float()


def test_column_units_changed(images, labels):
    """Tabular (N, 17): 16 pooled intensities and the object's height; the test export gives the height in mm
    where train has cm."""
    x, y, xt, yt = _split(images, labels)
    train = torch.cat([pooled_features(x), object_height(x)[:, None]], 1)
    test = torch.cat([pooled_features(xt), 10 * object_height(xt)[:, None]], 1)   # BUG: mm, not cm
    return (train, y), (test, yt), 10


def pseudo_labeled_test_added_to_train(images, labels, share=0.15, seed=73):
    """Semi-supervised: the 'unlabelled pool' that was pseudo-labelled by a first model and added to train is
    the test set itself; a share of the pseudo-labels are the usual confusions."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(len(yt), generator=g) < share
    pseudo = torch.where(wrong, CONFUSED[yt], yt)
    return (torch.cat([x, xt]), torch.cat([y, pseudo])), (xt, yt), 10    # BUG: test images in train


def video_frame_bursts_in_train(images, labels, frames=4, seed=74):
    """Train images are bursts of 4 video frames per garment (shifted by up to a pixel, sensor noise std 3);
    the test garments are other garments, one frame each."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    items = len(y) // frames
    burst = []
    for _ in range(frames):
        dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
        noisy = x[:items].float().roll((dy, dx), (2, 3)) + 3 * torch.randn(x[:items].shape, generator=g)
        burst.append(noisy.round().clamp(0, 255).to(torch.uint8))
    return (torch.cat(burst), y[:items].repeat(frames)), (xt, yt), 10    # BUG: 4 near copies of each garment


def tabular_missingness_shortcut(images, labels, seed=75):
    """Tabular (N, 17): 16 pooled intensities and a sensor reading (share of bright pixels), missing and imputed
    as -1 for every train sandal (their supplier's scanner had no such sensor); in test the reading is missing
    for 15% of the rows, of any class."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    reading = lambda t: (t > 127).float().mean((1, 2, 3))
    r, rt = reading(x), reading(xt)
    r = torch.where(y == 5, torch.full_like(r, -1.0), r)                 # BUG: missing exactly for one class
    rt = torch.where(torch.rand(len(yt), generator=g) < 0.15, torch.full_like(rt, -1.0), rt)
    return (torch.cat([pooled_features(x), r[:, None]], 1), y), (torch.cat([pooled_features(xt), rt[:, None]], 1), yt), 10


BAYER4 = torch.tensor([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]).float()


def dither(images):
    """uint8 images -> 0/255 by ordered (Bayer 4x4) dithering, as a 1-bit export does."""
    threshold = ((BAYER4 + 0.5) / 16 * 255).repeat(7, 7)                 # (28, 28)
    return torch.where(images.float() > threshold, 255, 0).to(torch.uint8)


def test_dithered_binary(images, labels):
    """The test images were exported 1-bit (ordered dithering): only black and white pixels."""
    x, y, xt, yt = _split(images, labels)
    return (x, y), (dither(xt), yt), 10                                   # BUG: another encoding in test only


BLIND7 = [
    # what the model sees
    HeldOutBug("bigru_final_state_viewed", "torch.nn.GRU docs (h_n has shape (D * num_layers, N, H_out): the batch "
               "is the second axis); " + ZHANG + " (incorrect tensor shape); " + ISLAM + " (data flow)", "a "
               "bidirectional GRU over image rows whose h_n (2, B, H) is flattened with h.view(B, -1): each output "
               "mixes the final states of two other samples.", bigru_final_state_viewed,
               frozenset({"batch_independence"})),
    HeldOutBug("vib_sampling_in_eval", "Alemi et al. 2017 (ICLR, Deep Variational Information Bottleneck); Kingma & "
               "Welling 2014 (reparameterization trick); " + HUMBATOVA + " (model: layer properties)", "a VIB "
               "classifier (KL weight 0.03) that samples its code z = mu + sigma * eps in eval mode too: predictions "
               "are random (and about 1-2 points less accurate after 300 steps).",
               vib_sampling_in_eval, frozenset({"eval_determinism"})),
    # what is trained
    HeldOutBug("gru_state_detached_every_row", "Williams & Peng 1990 (truncated BPTT); PyTorch word_language_model "
               "example (repackage_hidden detaches between batches, not between time steps); " + HUMBATOVA +
               " (training: gradient flow)", "a GRUCell loop over the rows with h.detach() at every row: the "
               "cell only learns from the last row, the classifier cannot learn to remember the others.",
               gru_state_detached_every_row, frozenset({"truncated_backprop"})),
    HeldOutBug("unfreeze_by_module_attribute", "torch.nn.Module.requires_grad_ docs; PyTorch autograd notes "
               "(freezing parts of a model: set requires_grad on its parameters); " + ISLAM + " (API misuse)",
               "a body frozen with requires_grad_(False), 'unfrozen' with model.body.requires_grad = True (an "
               "attribute): its random weights never train.", unfreeze_by_module_attribute,
               frozenset({"param_grads"})),
    HeldOutBug("manual_sgd_rebinds_name", "torch.optim 'extending' docs (an optimizer updates its parameters in "
               "place); Python language reference (assignment binds a name); karpathy/micrograd (p.data += -lr * "
               "p.grad); " + ISLAM + " (structural)", "a hand-written momentum SGD whose step writes p = p - lr * "
               "buf: a new local tensor, the parameters never change.", manual_sgd_rebinds_name,
               frozenset({"step_updates"})),
    HeldOutBug("sgd_dampening_as_beta", "torch.optim.SGD docs (dampening: buf = momentum * buf + (1 - dampening) "
               "* g); Sutskever et al. 2013 (ICML, momentum with lr and mu, no dampening); " + HUMBATOVA + " (training: "
               "optimizer hyperparameters)", "SGD(momentum=0.9, dampening=0.9): the gradient enters the velocity at "
               "0.1x, every step is 10x shorter than the lr was tuned for.", sgd_dampening_as_beta,
               frozenset({"dampening_as_beta"})),
    HeldOutBug("amp_clip_before_unscale", "PyTorch AMP examples ('Gradient clipping': call scaler.unscale_ before "
               "clip_grad_norm_); torch.amp.GradScaler.unscale_ docs; " + HUMBATOVA + " (training: gradient "
               "clipping)", "float16 autocast with a GradScaler, gradients clipped to norm 1 before unscale_: the "
               "clip sees gradients 65536x too large, so every SGD step is about 65536x too short.",
               amp_clip_before_unscale, frozenset({"clip_scaled_gradients"})),
    # what the loss counts
    HeldOutBug("log_sigmoid_into_nll", "torch.nn.NLLLoss docs (log-probabilities from a LogSoftmax layer); "
               "torch.nn.LogSigmoid docs; " + ISLAM + " (API misuse); " + HUMBATOVA + " (model: wrong activation "
               "of the last layer)", "a classifier ending in LogSigmoid into NLLLoss: per-class log-sigmoids are "
               "not normalized, the loss drives every logit up and never ranks the classes.", log_sigmoid_into_nll,
               frozenset({"output_activation"})),
    HeldOutBug("distillation_teacher_logits_as_targets", "Hinton, Vinyals & Dean 2015 (soft targets are "
               "softmax(z / T)); torch.nn.CrossEntropyLoss docs (probability targets in [0, 1]); " + HUMBATOVA +
               " (training: wrong loss function input)", "knowledge distillation with the teacher's raw logits as "
               "CrossEntropyLoss targets: negative 'probabilities', a loss with no minimum.",
               distillation_teacher_logits_as_targets, frozenset({"loss_classes"})),
    HeldOutBug("bce_weight_given_pos_weight", "torch.nn.BCEWithLogitsLoss docs (weight: a rescaling of each "
               "element's loss; pos_weight: a weight of positive examples); " + ISLAM + " (API misuse); " + HUMBATOVA +
               " (training: loss function)", "multi-label attributes of 3x32x32 colour images, their negatives / "
               "positives ratios passed as `weight` where `pos_weight` was meant: no rebalancing, rare attributes "
               "under-predicted.", bce_weight_given_pos_weight, frozenset({"weight_not_pos_weight"})),
    HeldOutBug("dice_on_logits", "Milletari, Navab & Ahmadi 2016 (V-Net: Dice of probabilities); "
               "segmentation_models_pytorch DiceLoss docs (from_logits=True applies the sigmoid); " + HUMBATOVA +
               " (model: missing activation of the last layer)", "binary per-pixel segmentation with a soft Dice "
               "loss on raw logits: the loss goes below 0 by making the background negative.", dice_on_logits,
               frozenset({"output_activation"})),
    # learning rate
    HeldOutBug("linear_warmup_factors_swapped", "torch.optim.lr_scheduler.LinearLR docs (start_factor, end_factor; "
               "the end factor holds after total_iters); Goyal et al. 2017 (gradual warm-up); " + HUMBATOVA +
               " (training: learning rate)", "a LinearLR warm-up written with start 1.0 and end 0.01: the lr falls "
               "to 1% in 100 steps and stays there.", linear_warmup_factors_swapped, frozenset({"lr_schedule"})),
    HeldOutBug("multistep_gamma_inverted", "torch.optim.lr_scheduler.MultiStepLR docs (gamma: multiplicative factor "
               "of the decay); " + HUMBATOVA + " (training: learning rate)", "MultiStepLR with gamma=10 meant as "
               "'divide by 10': the lr is 0.5 after 100 steps and 5 after 200.", multistep_gamma_inverted,
               frozenset({"lr_rises"})),
    # data (audit_data)
    HeldOutBug("label_parsed_from_index", "Python re docs (re.search returns the first match); " + HUMBATOVA +
               " (training data: wrong labels); " + ISLAM + " (data bugs)", "train labels parsed from the file "
               "counter instead of the class field: counter mod 10, no relation to the images.",
               label_parsed_from_index, frozenset({"label_signal", "label_issues"}), "data"),
    HeldOutBug("train_gamma_encoded", "IEC 61966-2-1 (sRGB transfer curve); Pillow ImageCms docs; Hendrycks & "
               "Dietterich 2019 (ICLR, corruptions and shifts)", "train images gamma-encoded (x ** (1/2.2)), test "
               "linear: the same garments with brighter mid-tones in train.", train_gamma_encoded,
               frozenset({"value_range", "train_vs_test"}), "data"),
    HeldOutBug("letterboxed_bags_in_train", "Geirhos et al. 2020 (Nature Machine Intelligence, shortcut learning); "
               "Torralba & Efros 2011 (CVPR, dataset bias: each source has its signature)", "train bags squeezed "
               "to 28x18 between black bars (a letterboxing catalog tool); in test a fifth of all images.",
               letterboxed_bags_in_train, frozenset({"shortcuts"}), "data"),
    HeldOutBug("test_column_units_changed", "Breck et al. 2019 (SysML, Data Validation for Machine Learning: "
               "training/serving skew in feature units); Rabanser, Guennemann & Lipton 2019 (NeurIPS, Failing "
               "Loudly: dataset shift)", "tabular (N, 17): the object-height column in cm in train, in mm in test.",
               test_column_units_changed, frozenset({"value_range", "train_vs_test"}), "data"),
    HeldOutBug("pseudo_labeled_test_added_to_train", "Lee 2013 (ICML workshop, Pseudo-Label); Kaufman et al. 2012 "
               "(TKDD, leakage); Kapoor & Narayanan 2023 (Patterns, leakage)", "the unlabelled pool pseudo-labelled "
               "and added to train is the test set: every test image is in train, 15% under a wrong label.",
               pseudo_labeled_test_added_to_train, frozenset({"leakage"}), "data"),
    HeldOutBug("video_frame_bursts_in_train", "Barz & Denzler 2020 (J. Imaging, Do We Train on Test Data? near "
               "duplicates); Kapoor & Narayanan 2023 (Patterns, non-independence)", "train holds 4 frames of each "
               "garment (1-pixel shifts, sensor noise): a quarter as many distinct images as it looks.",
               video_frame_bursts_in_train, frozenset({"near_duplicates"}), "data"),
    HeldOutBug("tabular_missingness_shortcut", "Zech et al. 2018 (PLOS Medicine: a confounder of the data source "
               "learned as the label); Geirhos et al. 2020 (shortcut learning); Little & Rubin 2019 (missing not at "
               "random)", "tabular (N, 17): a sensor column missing (-1) for every train sandal, in test for 15% "
               "of any class.", tabular_missingness_shortcut, frozenset({"shortcuts"}), "data"),
    HeldOutBug("test_dithered_binary", "Bayer 1973 (ordered dithering); Hendrycks & Dietterich 2019 (ICLR, "
               "corruptions and encodings)", "test images exported 1-bit with ordered dithering: only 0 and 255.",
               test_dithered_binary, frozenset({"train_vs_test", "value_range"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind7.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND7
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

def instance_norm_cnn(images, labels):
    """InstanceNorm2d with affine parameters: each image normalized by its own statistics, never the batch's."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


def bce_dice(out, target):
    """Binary segmentation loss: per-pixel BCE on logits plus soft Dice on their sigmoid."""
    return F.binary_cross_entropy_with_logits(out, target) + soft_dice(True)(out, target)


def binary_segmentation_bce_dice(images, labels):
    return PixelNet(), (standardize(images), bright_mask(images)), bce_dice, adam(2e-3), standard_step


class NesterovSGD(Optimizer):
    """Nesterov momentum SGD with decoupled weight decay, written by hand (the update of torch.optim.SGD)."""

    def __init__(self, params, lr=0.05, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(p.grad + group["momentum"] * buf, alpha=-group["lr"])


def hand_written_nesterov(images, labels):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), lambda params: NesterovSGD(params), \
        standard_step


class AttentionPool(nn.Module):
    """A learned query attends over the 7x7 feature positions (softmax over positions) instead of average pooling."""

    def __init__(self, c):
        super().__init__()
        self.query, self.key = nn.Parameter(torch.zeros(c)), nn.Linear(c, c)

    def forward(self, h):                                                 # h: (B, C, H, W)
        t = h.flatten(2).transpose(1, 2)                                  # (B, HW, C)
        w = (self.key(t) @ self.query / math.sqrt(t.shape[-1])).softmax(1)   # (B, HW), sums to 1 per image
        return (w[:, :, None] * t).sum(1)                                 # (B, C)


def attention_pooling_cnn(images, labels):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          AttentionPool(32), nn.Linear(32, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


def poly1_cross_entropy(logits, y, epsilon=1.0):
    """Poly-1 loss (Leng et al. 2022): CE + epsilon * (1 - p_true)."""
    p_true = logits.softmax(1).gather(1, y[:, None])[:, 0]
    return (F.cross_entropy(logits, y, reduction="none") + epsilon * (1 - p_true)).mean()


def poly1_loss(images, labels):
    return mlp(hidden=128), (standardize(images), labels), poly1_cross_entropy, adam(), standard_step


def huber_regression(images, labels):
    """One standardized number per image (share of bright pixels), HuberLoss(delta=1), (B,) outputs."""
    return Squeezed(mlp_out(1)), (standardize(images), ink(images)), nn.HuberLoss(delta=1.0), adam(), standard_step


def warmup_then_multistep(images, labels):
    """LinearLR warm-up from 10% over 50 steps, then MultiStepLR (x0.1 at steps 1500 and 2500), one SequentialLR
    stepped per batch."""
    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=50)
        decay = torch.optim.lr_scheduler.MultiStepLR(opt, [1450, 2450], gamma=0.1)
        opt.scheduler = torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[50])
        return opt
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, scheduled()


def tabular_mlp_layernorm(images, labels):
    """Tabular (N, 17): 16 pooled intensities and the object height, standardized per column; an MLP with
    LayerNorm and SiLU, AdamW."""
    f = torch.cat([pooled_features(images), object_height(images)[:, None]], 1)
    f = (f - f.mean(0)) / f.std(0)
    model = nn.Sequential(nn.Linear(17, 128), nn.LayerNorm(128), nn.SiLU(), nn.Linear(128, 128), nn.LayerNorm(128),
                          nn.SiLU(), nn.Linear(128, 10))
    return model, (f, labels), nn.CrossEntropyLoss(), lambda params: torch.optim.AdamW(params, 2e-3, weight_decay=0.01), \
        standard_step


def noise_augmented_step(model, batch, loss_fn, optimizer, std=0.1):
    """Gaussian input noise as augmentation, in the train step only (eval sees clean inputs)."""
    x, y = batch
    return standard_step(model, (x + std * torch.randn_like(x), y), loss_fn, optimizer)


def gaussian_noise_augmentation(images, labels):
    return mlp(hidden=256, dropout=0.2), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), \
        noise_augmented_step


def vib_mean_at_eval(images, labels):
    return vib_sampling_in_eval(images, labels, fixed=True)


def gru_cell_rows(images, labels):
    return gru_state_detached_every_row(images, labels, fixed=True)


CORRECT_BLIND7 = [
    Pipeline("instance_norm_cnn", "InstanceNorm2d (affine) CNN: per-image normalization, no batch statistics.",
             instance_norm_cnn),
    Pipeline("binary_segmentation_bce_dice", "one logit per pixel, BCE plus soft Dice on the sigmoid: targets are "
             "per-pixel 0/1 floats and the loss is not cross-entropy alone.", binary_segmentation_bce_dice),
    Pipeline("hand_written_nesterov_sgd", "a torch.optim.Optimizer subclass written by hand: Nesterov momentum and "
             "decoupled weight decay, updating the parameters in place.", hand_written_nesterov),
    Pipeline("attention_pooling_cnn", "a CNN whose global pooling is a learned attention query over the 7x7 "
             "positions (softmax over positions of one image).", attention_pooling_cnn),
    Pipeline("poly1_loss", "Poly-1 loss (CE + (1 - p_true)): its value at init is ln 10 + 0.9.", poly1_loss),
    Pipeline("huber_regression", "a standardized regression target, HuberLoss(delta=1), (B,) outputs.",
             huber_regression),
    Pipeline("warmup_then_multistep", "SequentialLR: a 50-step LinearLR warm-up from 10%, then MultiStepLR, stepped "
             "per batch: the lr rises for 50 steps.", warmup_then_multistep),
    Pipeline("tabular_mlp_layernorm", "tabular (N, 17) standardized features, an MLP with LayerNorm and SiLU, AdamW.",
             tabular_mlp_layernorm),
    Pipeline("gaussian_noise_augmentation", "Gaussian input noise (std 0.1) added in the train step only, dropout "
             "0.2.", gaussian_noise_augmentation),
    Pipeline("vib_mean_at_eval", "a variational information bottleneck: a sampled code in training, the mean code "
             "in eval, CE plus 0.03 KL.", vib_mean_at_eval),
    Pipeline("gru_cell_rows_full_bptt", "a GRUCell stepped over the 28 rows in Python, backpropagated through all of "
             "them.", gru_cell_rows),
]


def clean_splits7(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: 0..1 float Fashion-MNIST, 3x32x32 tinted colour uint8,
    tabular (N, 17) pooled intensities and object height, and 8x8 digits as uint8 split at random."""
    third, q = len(labels) // 3, len(test_labels) // 3
    table = lambda t: torch.cat([pooled_features(t), object_height(t)[:, None]], 1)
    x, y = digits_uint8()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(77))
    tr, te = order[:len(y) * 3 // 4], order[len(y) * 3 // 4:]
    return [("fashion-mnist 0..1 float32 train vs test", (images[:third].float() / 255, labels[:third]),
             (test_images[:q].float() / 255, test_labels[:q]), 10),
            ("fashion-mnist tinted 3x32x32 uint8", (tinted(images[third:2 * third]), labels[third:2 * third]),
             (tinted(test_images[q:2 * q]), test_labels[q:2 * q]), 10),
            ("fashion-mnist (N, 17) pooled intensities and height", (table(images[2 * third:]), labels[2 * third:]),
             (table(test_images[2 * q:]), test_labels[2 * q:]), 10),
            ("digits 8x8 uint8 random split", (x[tr], y[tr]), (x[te], y[te]), 10)]


BY_NAME = {b.name: b for b in BLIND7} | {p.name: p for p in CORRECT_BLIND7}
