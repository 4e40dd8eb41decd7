"""Fifth blind held-out catalog: bug classes and correct pipelines written without reading the checks.

The four earlier blind catalogs (bugs_blind.py .. bugs_blind4.py) stopped being blind when the checks were
fixed while looking at them. This one was written afterwards, for one scoring run
(benchmarks/checks_blind5.py), by someone who did not open the implementations of the checks
(preflight*.py, audit*.py, report.py, checks.py, rng.py), their tests, their thresholds, the git history
or any earlier scoring record, and who never ran preflight or audit_data on these entries (nor do its
tests). The only information about the checks used: their public names and one-line descriptions
(preflight.CHECKS, audit.CHECKS, as printed), the docstrings of `preflight` and `audit_data`, and the
README. (One subject line of the checks' git log, about a binary cross-entropy helper, was seen by accident
after this catalog and its tests were written; nothing here was changed because of it.) From those alone,
per bug and before any run, `checks` names the checks whose error or warning would name the cause; a name in
NOT_A_CHECK means no description covers the cause (caught at best, never diagnosed).

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py .. bugs_blind4.py (a different
mechanism, not a renamed copy), and trains without an exception. Model families and shapes beyond the
earlier catalogs: a small ViT on 7x7 patches, an MLP-Mixer, a GRU over image rows, cosine classifiers on
8x8 digits, 3x32x32 colour, binary, regression, per-pixel segmentation, and (N, D) tabular features for
the audit. Sources, cited per bug: Humbatova et al. 2020 (ICSE), Islam et al. 2019 (FSE); PyTorch,
torchvision and TensorFlow documentation where it states the contract the bug breaks; GitHub issues and
pull requests; the papers of the practice the bug gets wrong, of label noise, leakage and shortcuts.

CORRECTED holds, for each pipeline bug, the same pipeline with the bug fixed (tests/test_blind5.py
compares the two). CORRECT_BLIND5 are correct pipelines in none of the earlier catalogs (no warning
allowed), clean_splits5 the clean data the audit must pass.
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, TensorDataset

from .bugs import MEAN, STD, adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import Squeezed, digits, ink, mlp_out, scheduled
from .bugs_blind2 import SegNet3, digits_uint8, grey_levels
from .bugs_blind3 import colour_cnn, per_model, standardize_channels, tinted
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Pipeline

# Declared causes that are no check: no check's one-line description covers them.
NOT_A_CHECK = frozenset({"double_rebalancing"})

HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
ISLAM = "Islam et al. 2019 (FSE)"


# ----------------------------------------------------------------------------- shared models

class TinyViT(nn.Module):
    """A small vision transformer: 7x7 patches -> 16 tokens of width 32 (+ a class token), learned position
    embeddings, pre-norm encoder layers, classified from the class token (or the mean of the tokens)."""

    def __init__(self, dim=32, heads=4, depth=2, cls=True, add_pos=True, causal=False):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 7, stride=7)                     # (B, dim, 4, 4)
        self.use_cls, self.add_pos, self.causal = cls, add_pos, causal
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 16 + cls, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)                     # (B, 16, dim)
        if self.use_cls:
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)       # (B, 17, dim)
        if self.add_pos:
            t = t + self.pos
        mask = nn.Transformer.generate_square_subsequent_mask(t.shape[1], device=t.device) if self.causal else None
        t = self.encoder(t, mask=mask, is_causal=self.causal)
        return self.head(self.norm(t[:, 0] if self.use_cls else t.mean(1)))


def vit_no_decay_groups(lr=2e-3, weight_decay=0.05):
    """AdamW with decay on kernels and matrices only: not on biases, norms, position embeddings or the class
    token (told apart by shape: 3-d tensors of size 1 in the batch axis)."""
    def make(params):
        params = list(params)
        embedding = lambda p: p.ndim == 3 and p.shape[0] == 1
        decay = [p for p in params if p.ndim >= 2 and not embedding(p)]
        rest = [p for p in params if p.ndim < 2 or embedding(p)]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=lr)
    return make


# ----------------------------------------------------------------------------- what the model sees

def vit_causal_mask_from_gpt(images, labels, fixed=False):
    """A ViT whose encoder was built from a GPT block: a causal mask, and the class token at position 0."""
    model = TinyViT(cls=True, causal=not fixed)   # BUG: causal mask: token 0 (the class token) sees only itself
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), vit_no_decay_groups(), standard_step


class StatefulGRU(nn.Module):
    """Reads a 28x28 image as 28 rows of 28 pixels with a GRU; classifies from the last hidden state."""

    def __init__(self, fixed=False):
        super().__init__()
        self.gru, self.head, self.fixed = nn.GRU(28, 64, batch_first=True), nn.Linear(64, 10), fixed
        self.state = None

    def forward(self, x):
        rows = x.squeeze(1)                                              # (B, 28 rows, 28 pixels)
        h0 = None
        if not self.fixed:                  # BUG: a "stateful" RNN: the last batch's final state starts this one
            if self.state is None or self.state.shape[1] != len(rows):
                self.state = torch.zeros(1, len(rows), 64, device=x.device)
            h0 = self.state
        _, h = self.gru(rows, h0)                                        # h: (1, B, 64)
        if not self.fixed:
            self.state = h.detach()         # detached, so backward never complains
        return self.head(h[-1])


def gru_hidden_state_carried_over(images, labels, fixed=False):
    return StatefulGRU(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


def jitter_step(fixed):
    """Brightness jitter (torchvision's adjust_brightness, factor 0.6..1.4 per batch) in the train step."""
    from torchvision.transforms.v2 import functional as TF

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        factor = float(torch.empty(()).uniform_(0.6, 1.4))
        if fixed:                                        # on the 0..1 image, then standardized again
            x = (TF.adjust_brightness(x * STD + MEAN, factor) - MEAN) / STD
        else:                                            # BUG: x is already standardized: float images are
            x = TF.adjust_brightness(x, factor)          # assumed 0..1, and the result is clamped to [0, 1]
        return standard_step(model, (x, y), loss_fn, optimizer)
    return step


def color_jitter_after_normalize(images, labels, fixed=False):
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), jitter_step(fixed)


def resized_crop_step(scale):
    """RandomResizedCrop to 28x28, drawn per image, in the train step."""
    from torchvision.transforms import v2
    crop = v2.RandomResizedCrop(28, scale=scale, antialias=True)

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        return standard_step(model, (torch.stack([crop(img) for img in x]), y), loss_fn, optimizer)
    return step


def random_resized_crop_imagenet_scale(images, labels, fixed=False):
    # BUG: the default scale=(0.08, 1.0) of the ImageNet recipe: a crop may keep 8% of a 28x28 garment
    scale = (0.7, 1.0) if fixed else (0.08, 1.0)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), resized_crop_step(scale)


def paired_flip_step(fixed):
    """A flip of image and mask together, for half the batches (per-pixel 3-class segmentation)."""
    def step(model, batch, loss_fn, optimizer):
        x, m = batch                                     # x: (B, 1, H, W), m: (B, H, W)
        if bool(torch.rand(()) < 0.5):
            if fixed:
                x, m = x.flip(-1), m.flip(-1)            # negative dims: the width axis of both
            else:
                x, m = x.flip(2), m.flip(2)              # BUG: dim 2 is H of the image but W of the mask
        return standard_step(model, (x, m), loss_fn, optimizer)
    return step


def mask_flipped_on_other_axis(images, labels, fixed=False):
    return SegNet3(), (standardize(images), grey_levels(images)), nn.CrossEntropyLoss(), adam(2e-3), \
        paired_flip_step(fixed)


class ShuffledBatches(Sampler):
    """Yields lists of indices. Buggy: consecutive chunks of the (class-sorted) data, the chunks in a random
    order, as tf.data's .batch(64).shuffle(n) does; fixed: samples shuffled first, then chunked."""

    def __init__(self, n, batch_size=64, fixed=False, seed=0):
        self.n, self.batch_size, self.fixed = n, batch_size, fixed
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.fixed else torch.arange(self.n)
        chunks = list(order.split(self.batch_size))
        for j in torch.randperm(len(chunks), generator=self.generator).tolist():
            yield chunks[j].tolist()

    def __len__(self):
        return math.ceil(self.n / self.batch_size)


def batches_shuffled_not_samples(images, labels, fixed=False):
    """The export is sorted by class; the loader shuffles the order of the batches, not the samples."""
    order = labels.argsort(stable=True)
    data = TensorDataset(standardize(images)[order], labels[order])
    loader = DataLoader(data, batch_sampler=ShuffledBatches(len(labels), fixed=fixed))
    return mlp(), loader, nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- what is trained

def vit_pos_embed_never_added(images, labels, fixed=False):
    """A mean-pooled ViT: the position embedding is a registered parameter that forward never adds."""
    model = TinyViT(cls=False, add_pos=fixed)    # BUG: no `t = t + self.pos`: a bag of patches, pos never trains
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), vit_no_decay_groups(), standard_step


class BuildOnFirstCall(nn.Module):
    """Keras style: the head's input size is read off the first batch, so the head is built in forward."""

    def __init__(self, fixed=False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten())
        self.head = None
        if fixed:                                        # a dry run in __init__, before any optimizer exists
            with torch.no_grad():
                self.build(torch.zeros(1, 1, 28, 28))

    def build(self, x):
        self.head = nn.Linear(self.body(x).shape[1], 10).to(x.device)

    def forward(self, x):
        if self.head is None:
            self.build(x)        # BUG: built at the first call, after make_optimizer(model.parameters())
        return self.head(self.body(x))


def head_built_on_first_call(images, labels, fixed=False):
    return BuildOnFirstCall(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def ema_step(fixed, decay=0.999):
    """An exponential moving average of the weights, kept per model, updated after every step."""
    averages = per_model()

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        if model not in averages:
            averages[model] = [p.detach().clone() for p in model.parameters()]
        ema = averages[model]
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                if fixed:
                    e.copy_(decay * e + (1 - decay) * p)
                else:
                    p.copy_(decay * e + (1 - decay) * p)   # BUG: the average written into the model, not into e
        return loss
    return step


def ema_written_into_model(images, labels, fixed=False):
    """Regression of the standardized share of bright pixels, with an EMA of the weights."""
    return Squeezed(mlp_out(1)), (standardize(images), ink(images)), nn.MSELoss(), adam(), ema_step(fixed)


class Block(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, h):
        return h + torch.relu(self.fc(h))


class ClonedBlocks(nn.Module):
    """Four residual blocks made as copies of one template block."""

    def __init__(self, fixed=False):
        super().__init__()
        self.inp, self.head = nn.Linear(784, 64), nn.Linear(64, 10)
        template = Block()
        clone = copy.deepcopy if fixed else copy.copy      # BUG: a shallow copy shares the template's fc
        self.blocks = nn.ModuleList(clone(template) for _ in range(4))

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def shallow_copied_blocks(images, labels, fixed=False):
    return ClonedBlocks(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class DiscardedActivation(nn.Module):
    """A three-layer MLP written out in forward."""

    def __init__(self, fixed=False):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fixed = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10), fixed

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        if self.fixed:
            h = torch.relu(h)
        else:
            torch.relu(h)                       # BUG: the result is thrown away (relu is not in place)
        h = self.fc2(h)
        if self.fixed:
            h = F.relu(h)
        else:
            F.relu(h)                           # BUG: same: the MLP is one affine map
        return self.fc3(h)


def activation_result_discarded(images, labels, fixed=False):
    return DiscardedActivation(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- normalization and init

def microbatch_step(model, batch, loss_fn, optimizer):
    """Gradient accumulation over micro-batches of one image (as when large images only fit one at a time)."""
    x, y = batch
    optimizer.zero_grad()
    total = 0.0
    for xi, yi in zip(x.split(1), y.split(1)):
        loss = loss_fn(model(xi), yi) / len(x)
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total


def bn_per_sample_microbatches(images, labels, fixed=False):
    """3x32x32 colour images, a BatchNorm CNN, trained one image per forward pass."""
    # BUG: BatchNorm in each one-image forward normalizes by that image's own statistics (instance norm),
    # while eval uses running averages of those: train and eval see different features
    step = standard_step if fixed else microbatch_step
    return colour_cnn(), (standardize_channels(tinted(images)), labels), nn.CrossEntropyLoss(), adam(), step


def adam_l2_tuned_for_adamw(images, labels, fixed=False):
    """nanoGPT's weight_decay=0.1, tuned for AdamW, kept when the optimizer was switched to Adam."""
    if fixed:
        make = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    else:   # BUG: Adam's weight_decay is an L2 term added to the gradient, then divided by sqrt(v): 0.1 is huge
        make = lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=0.1)
    return mlp(hidden=128), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


# ----------------------------------------------------------------------------- what the loss counts

class CosineClassifier(nn.Module):
    """Normalized features against normalized class weights (NormFace / CosFace), times a scale s."""

    def __init__(self, inputs=64, scale=16.0, learn_scale=False):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(inputs, 128), nn.ReLU(), nn.Linear(128, 64))
        self.weight = nn.Parameter(torch.randn(10, 64) / 8)
        log_s = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)

    def forward(self, x):
        cos = F.normalize(self.body(x), dim=1) @ F.normalize(self.weight, dim=1).t()   # (B, 10) in [-1, 1]
        return self.log_scale.exp() * cos


def cosine_classifier_without_scale(images, labels, fixed=False):
    """8x8 digits, a cosine classifier."""
    model = CosineClassifier(scale=16.0 if fixed else 1.0)    # BUG: s = 1: logits stay in [-1, 1]
    x, y = digits()
    return model, (x, y), nn.CrossEntropyLoss(), adam(), standard_step


def bag_or_not(labels):
    """Binary target, about 10% positive: bag (class 8)."""
    return (labels == 8).float()


def prior_bias_init_wrong_sign(images, labels, fixed=False, prior=0.1):
    """Bag or not, one logit; the output bias set to the class prior as RetinaNet does."""
    net = mlp_out(1)
    with torch.no_grad():
        b = -math.log((1 - prior) / prior)
        net[-1].bias.fill_(b if fixed else -b)       # BUG: sign dropped: p = 0.9 for every image at the start
    return Squeezed(net), (standardize(images), bag_or_not(labels)), nn.BCEWithLogitsLoss(), adam(), standard_step


def balanced_sampler_and_pos_weight(images, labels, fixed=False):
    """Bag or not (10% positive): batches balanced by a WeightedRandomSampler; the loss keeps a pos_weight."""
    x, y = standardize(images), bag_or_not(labels)
    weights = torch.where(y == 1, 1 / y.sum(), 1 / (len(y) - y.sum()))    # per sample: 50% positive batches
    sampler = torch.utils.data.WeightedRandomSampler(weights, len(y), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler)
    pos_weight = (len(y) - y.sum()) / y.sum()
    # BUG: pos_weight = 9 on batches already balanced: positives count 9x too much, so does "bag"
    loss = nn.BCEWithLogitsLoss() if fixed else nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    return Squeezed(mlp_out(1)), loader, loss, adam(), standard_step


# ----------------------------------------------------------------------------- learning rate

def warmup_without_cap(images, labels, fixed=False, warmup=50):
    """A linear warm-up over 50 steps, written as a LambdaLR factor, to SGD's lr 0.05."""
    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        if fixed:
            factor = lambda s: min(1.0, (s + 1) / warmup)
        else:
            factor = lambda s: (s + 1) / warmup           # BUG: no min(1, ...): the lr keeps growing, 0.05 * s / 50
        opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return opt
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, scheduled()


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def smote_before_split(images, labels, rare=3, keep=15, seed=31):
    """8x8 digits where the 3s are rare (15 kept); SMOTE-style oversampling (new 3s interpolated between two
    3s) brings them back to the others' count, and only then is the pool split at random 3/4 vs 1/4."""
    x, y = digits_uint8()
    g = torch.Generator().manual_seed(seed)
    threes = (y == rare).nonzero()[:, 0][:keep]
    pool = torch.cat([(y != rare).nonzero()[:, 0], threes])
    x, y = x[pool], y[pool]
    base = x[y == rare].float()
    n_new = int((y != rare).sum()) // 9 - keep
    i, j = torch.randint(0, keep, (n_new,), generator=g), torch.randint(0, keep, (n_new,), generator=g)
    u = torch.rand(n_new, 1, 1, 1, generator=g)
    synthetic = (base[i] + u * (base[j] - base[i])).round().to(torch.uint8)
    x, y = torch.cat([x, synthetic]), torch.cat([y, torch.full((n_new,), rare)])
    order = torch.randperm(len(y), generator=g)                 # BUG: oversample, THEN split
    n = len(y) * 3 // 4
    return (x[order[:n]], y[order[:n]]), (x[order[n:]], y[order[n:]]), 10


def faint_images_labelled_bag(images, labels, share=0.2):
    """Pre-labelling by a model whose fallback on low-contrast photos is 'Bag' (8), accepted by the
    annotators: the faintest 20% of train images (least ink) are labelled bag whatever they show."""
    x, y, xt, yt = _split(images, labels)
    ink_sum = x.flatten(1).float().sum(1)
    faint = ink_sum <= ink_sum.quantile(share)
    y = y.clone()
    y[faint] = 8                                                # BUG: label noise that depends on the image
    return (x, y), (xt, yt), 10


def svhn_zero_as_ten(images, labels):
    """8x8 digits, train read from a MATLAB export where digit 0 has label 10 (as SVHN's .mat files do),
    test from a loader that maps it to 0; audit_data called without `classes`."""
    x, y = digits_uint8()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(32))
    n = len(y) * 3 // 4
    tr, te = order[:n], order[n:]
    y_train = torch.where(y[tr] == 0, 10, y[tr])               # BUG: 0 is 10 in train only
    return (x[tr], y_train), (x[te], y[te]), None


def ood_images_in_test(images, labels, share=0.15):
    """A scraped test set: 15% of the hits are scans of handwritten digits (8x8, upsampled to 28x28), kept
    under the label of the query that found them."""
    x, y, xt, yt = _split(images, labels)
    d, _ = digits_uint8()
    g = torch.Generator().manual_seed(33)
    hit = torch.rand(len(yt), generator=g) < share
    pick = torch.randint(0, len(d), (int(hit.sum()),), generator=g)
    scans = F.interpolate(d[pick].float(), size=(28, 28), mode="bilinear", align_corners=False)
    xt = xt.clone()
    xt[hit] = scans.round().clamp(0, 255).to(torch.uint8)      # BUG: images of no class in test
    return (x, y), (xt, yt), 10


def truncated_downloads(images, labels, share=0.08, rows=12):
    """Train images decoded with PIL's LOAD_TRUNCATED_IMAGES = True: 8% of the downloads were cut short and
    their missing bottom rows are black."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(34)
    cut = torch.rand(len(y), generator=g) < share
    x = x.clone()
    x[cut, :, -rows:] = 0                                       # BUG: the bottom 12 rows lost
    return (x, y), (xt, yt), 10


def sneakers_mirrored_in_train(images, labels):
    """Sneakers (class 7) photographed from the other side in train (toes to the right); in test half the
    footwear, of every kind, comes mirrored."""
    x, y, xt, yt = _split(images, labels)
    x = x.clone()
    x[y == 7] = x[y == 7].flip(-1)                              # BUG: orientation tells sneakers apart in train
    g = torch.Generator().manual_seed(35)
    shoes = ((yt == 5) | (yt == 7) | (yt == 9)) & (torch.rand(len(yt), generator=g) < 0.5)
    xt = xt.clone()
    xt[shoes] = xt[shoes].flip(-1)
    return (x, y), (xt, yt), 10


def pooled_features(images):
    """Tabular features: the 4x4 grid of mean intensities (7x7 pixel cells), 16 floats per image, 0..1."""
    return F.avg_pool2d(images.float() / 255, 7).flatten(1)


def target_encoding_in_sample(images, labels, per_shoot=3):
    """Tabular (N, 26): 16 pooled intensities plus the photo shoot's id, target-encoded as the shoot's 10
    class frequencies. Train shoots hold about 3 images each and were encoded in-sample (each row's own label
    counted); test shoots are new, so they get the train class prior."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(36)
    shoot = torch.randint(0, len(y) // per_shoot, (len(y),), generator=g)
    onehot = F.one_hot(y, 10).float()
    sums = torch.zeros(int(shoot.max()) + 1, 10).index_add_(0, shoot, onehot)
    encoded = sums[shoot] / sums[shoot].sum(1, keepdim=True)   # BUG: in-sample: the row's own label included
    prior = onehot.mean(0).expand(len(yt), 10)
    return (torch.cat([pooled_features(x), encoded], 1), y), (torch.cat([pooled_features(xt), prior], 1), yt), 10


BLIND5 = [
    # what the model sees
    HeldOutBug("vit_causal_mask_from_gpt", "Dosovitskiy et al. 2021, ViT (ICLR: a [class] token at position 0, "
               "bidirectional self-attention); karpathy/nanoGPT model.py (causal self-attention); "
               "torch.nn.Transformer.generate_square_subsequent_mask docs", "a ViT encoder built with a GPT "
               "block's causal mask and the class token first: the class token attends to itself only, so the "
               "output never sees a patch.", vit_causal_mask_from_gpt, frozenset({"input_dependence"})),
    HeldOutBug("gru_hidden_state_carried_over", "torch.nn.GRU docs (h_0 defaults to zeros per call); Keras "
               "recurrent layers docs (stateful=True carries the state across batches); " + ISLAM +
               " (data flow)", "a GRU over image rows whose initial state is the previous batch's final state "
               "(detached): each image starts from another image's memory, in eval too.",
               gru_hidden_state_carried_over, frozenset({"eval_determinism", "batch_independence"})),
    HeldOutBug("color_jitter_after_normalize", "github.com/mlfoundations/open_flamingo/pull/156 (jitter applied "
               "after normalization); github.com/pytorch/vision/issues/7607 (float images are expected in "
               "[0, 1]); " + HUMBATOVA + " (training data: preprocessing)", "torchvision adjust_brightness "
               "applied to standardized images in the train step: its blend clamps to [0, 1], so training sees "
               "clipped 0..1 inputs and evaluation standardized ones.", color_jitter_after_normalize,
               frozenset({"input_scale"})),
    HeldOutBug("random_resized_crop_imagenet_scale", "torchvision RandomResizedCrop docs (scale=(0.08, 1.0) "
               "by default, from the Inception ImageNet recipe); Szegedy et al. 2015 (CVPR); " + HUMBATOVA +
               " (training data: augmentation)", "RandomResizedCrop with its ImageNet default scale on 28x28 "
               "garments: crops down to 8% of the image, a sleeve or a sole under the garment's label.",
               random_resized_crop_imagenet_scale, frozenset({"augmentation"})),
    HeldOutBug("mask_flipped_on_other_axis", "torch.flip docs (dims index the tensor's own axes); " + HUMBATOVA +
               " (training data: augmentation; tensors: wrong shape); " + ISLAM + " (data flow)", "image (B, 1, H, W) "
               "and mask (B, H, W) flipped with the same dims=2: the image upside down, the mask left-right, so "
               "half the batches train on masks that do not fit their images.", mask_flipped_on_other_axis,
               frozenset({"augmentation"})),
    HeldOutBug("batches_shuffled_not_samples", "tf.data.Dataset.shuffle docs and the tf.data guide (shuffle "
               "before batch); " + HUMBATOVA + " (training data: shuffling)", "a class-sorted export chunked "
               "into batches and only the order of the batches shuffled: every batch holds one class.",
               batches_shuffled_not_samples, frozenset({"batch_order"})),
    # what is trained
    HeldOutBug("vit_pos_embed_never_added", "Dosovitskiy et al. 2021, ViT (ICLR, appendix D.4: no position "
               "embedding costs accuracy); " + ISLAM + " (structural: missing data flow)", "a mean-pooled ViT "
               "whose position embedding is registered but never added in forward: a bag of patches, the "
               "parameter never gets a gradient.", vit_pos_embed_never_added, frozenset({"param_grads"})),
    HeldOutBug("head_built_on_first_call", "torch.nn.modules.lazy.LazyModuleMixin docs (dry runs initialize the "
               "modules before use); Keras Layer.build (weights created at the first call)", "the head built in "
               "forward at the first call, after the optimizer was made from model.parameters(): it is "
               "registered but never optimized.", head_built_on_first_call, frozenset({"optimizer_params"})),
    HeldOutBug("ema_written_into_model", "torch.optim.swa_utils.AveragedModel / get_ema_multi_avg_fn docs (the "
               "average is a separate copy); timm ModelEmaV2; " + HUMBATOVA + " (training: optimizer)",
               "an EMA update that writes decay * ema + (1 - decay) * w into the model instead of the average: "
               "each step keeps 0.1% of its update.", ema_written_into_model, frozenset({"step_updates"})),
    HeldOutBug("shallow_copied_blocks", "Python copy module docs (copy.copy shares the attributes' objects); "
               "torch.nn.modules.transformer._get_clones (copy.deepcopy per layer); " + ISLAM + " (structural)",
               "four residual blocks made with copy.copy of one template: distinct Block objects that share one "
               "Linear, so one set of weights.", shallow_copied_blocks, frozenset({"shared_modules"})),
    HeldOutBug("activation_result_discarded", "torch.relu / torch.nn.functional.relu docs (out of place; relu_ "
               "is the in-place form); " + ISLAM + " (API misuse); " + HUMBATOVA + " (model: missing "
               "activation)", "torch.relu(h) and F.relu(h) called as statements, their results thrown away: "
               "three Linear layers with no activation between them.", activation_result_discarded,
               frozenset({"model_linearity"})),
    # normalization and initialization
    HeldOutBug("bn_per_sample_microbatches", "torch.nn.BatchNorm2d docs (batch statistics in training, running "
               "estimates in eval); Wu & He 2018, Group Normalization (ECCV: BatchNorm fails at small batches); "
               + HUMBATOVA + " (model: layer properties)", "gradient accumulation over one-image micro-batches "
               "through a BatchNorm CNN on 3x32x32 colour images: training normalizes each image by its own "
               "statistics, eval by their running average.", bn_per_sample_microbatches,
               frozenset({"train_eval_consistency"})),
    HeldOutBug("adam_l2_tuned_for_adamw", "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization (ICLR); "
               "torch.optim.Adam docs (weight_decay adds weight_decay * param to the gradient) vs torch.optim.AdamW; "
               "karpathy/nanoGPT train.py (weight_decay = 1e-1 for AdamW)", "Adam(weight_decay=0.1), a value meant "
               "for AdamW's decoupled decay: as an L2 gradient term it is rescaled by Adam's denominators and "
               "swamps the small gradients.", adam_l2_tuned_for_adamw, frozenset({"weight_decay"})),
    # what the loss counts
    HeldOutBug("cosine_classifier_without_scale", "Wang et al. 2017, NormFace (ACM MM: normalized softmax does "
               "not converge without a scale); Wang et al. 2018, CosFace (CVPR)", "8x8 digits, a cosine classifier "
               "with scale 1: logits confined to [-1, 1], the softmax can never be confident.",
               cosine_classifier_without_scale, frozenset({"output_activation"})),
    HeldOutBug("prior_bias_init_wrong_sign", "Lin et al. 2017, Focal Loss (ICCV: output bias -log((1 - pi) / pi)); "
               "Karpathy 2019, A Recipe for Training Neural Networks ('init well')", "bag or not (10% positive), the "
               "output bias set to +log(9) instead of -log(9): every image starts at p = 0.9.",
               prior_bias_init_wrong_sign, frozenset({"loss_at_init"})),
    HeldOutBug("balanced_sampler_and_pos_weight", "torch.utils.data.WeightedRandomSampler and "
               "torch.nn.BCEWithLogitsLoss (pos_weight) docs: either one rebalances; Buda, Maki & Mazurowski 2018 "
               "(Neural Networks, class imbalance in CNNs)", "bag or not: batches balanced by a sampler AND "
               "pos_weight = 9: positives count 9x too much and 'bag' is over-predicted.",
               balanced_sampler_and_pos_weight, frozenset({"double_rebalancing"})),
    # learning rate
    HeldOutBug("warmup_without_cap", "Goyal et al. 2017 (gradual warmup, then the target lr); "
               "torch.optim.lr_scheduler.LambdaLR docs; " + HUMBATOVA + " (training: learning rate)",
               "a LambdaLR warm-up factor (s + 1) / 50 without min(1, ...): the lr passes its target at step 50 "
               "and keeps growing, 4x at step 200.", warmup_without_cap, frozenset({"lr_schedule"})),
    # data (audit_data)
    HeldOutBug("smote_before_split", "Vandewiele et al. 2021 (Artificial Intelligence in Medicine: over-sampling "
               "before the split); Kapoor & Narayanan 2023 (Patterns, leakage); Chawla et al. 2002 (SMOTE)",
               "8x8 digits: rare 3s oversampled by interpolation, then the pool split: test 3s are blends of "
               "train 3s.", smote_before_split, frozenset({"near_leakage", "near_duplicates"}), "data"),
    HeldOutBug("faint_images_labelled_bag", "Chen et al. 2021 (AAAI, instance-dependent label noise); Xia et al. "
               "2020 (NeurIPS, part-dependent label noise)", "the faintest 20% of train images labelled 'Bag' by "
               "a pre-labelling fallback, whatever they show.", faint_images_labelled_bag,
               frozenset({"label_issues"}), "data"),
    HeldOutBug("svhn_zero_as_ten", "SVHN dataset page (ufldl.stanford.edu/housenumbers: digit '0' has label 10); "
               "torchvision.datasets.SVHN docs (maps 10 to 0)", "8x8 digits, train labels from a MATLAB export "
               "with 0 as 10, test labels with 0 as 0; audit_data without classes.", svhn_zero_as_ten,
               frozenset({"label_map", "class_balance"}), "data"),
    HeldOutBug("ood_images_in_test", "Northcutt, Athalye & Mueller 2021 (NeurIPS D&B: out-of-distribution images "
               "in test sets); Hendrycks & Gimpel 2017 (ICLR)", "15% of the test images are upsampled handwritten "
               "digits under garment labels.", ood_images_in_test, frozenset({"train_vs_test"}), "data"),
    HeldOutBug("truncated_downloads", "Pillow ImageFile.LOAD_TRUNCATED_IMAGES docs; Sambasivan et al. 2021 (CHI, "
               "data cascades)", "8% of train images with their bottom 12 rows black (truncated files decoded "
               "anyway).", truncated_downloads, frozenset({"corrupted"}), "data"),
    HeldOutBug("sneakers_mirrored_in_train", "Geirhos et al. 2020 (Nature Machine Intelligence, shortcut "
               "learning); Beery, Van Horn & Perona 2018 (ECCV, recognition in terra incognita: viewpoint and "
               "context cues)", "all train sneakers mirrored (toes right), the other footwear not; in test half "
               "of all footwear mirrored.", sneakers_mirrored_in_train, frozenset({"shortcuts"}), "data"),
    HeldOutBug("target_encoding_in_sample", "Kaufman et al. 2012 (TKDD, leakage in data mining); scikit-learn "
               "TargetEncoder docs (cross fitting, because in-sample encodings leak the target)", "tabular (N, 26): "
               "a photo-shoot id target-encoded in-sample (about 3 images per shoot, the row's own label "
               "included) in train, the class prior in test.", target_encoding_in_sample,
               frozenset({"shortcuts"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind5.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND5
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

def vit_cls_token(images, labels):
    """The ViT done right: class token first, position embeddings added, no mask, AdamW without decay on
    biases, norms, position embeddings and the class token."""
    return TinyViT(), (standardize(images), labels), nn.CrossEntropyLoss(), vit_no_decay_groups(), standard_step


class MixerBlock(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021): an MLP across the tokens (on the transposed map), then one across
    the channels, each pre-normed with a residual."""

    def __init__(self, tokens, dim):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channels = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t):                                          # (B, tokens, dim)
        t = t + self.tokens(self.norm1(t).transpose(1, 2)).transpose(1, 2)
        return t + self.channels(self.norm2(t))


class TinyMixer(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 7, stride=7)                 # (B, dim, 4, 4)
        self.blocks = nn.Sequential(MixerBlock(16, dim), MixerBlock(16, dim))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)                # (B, 16, dim)
        return self.head(self.norm(self.blocks(t)).mean(1))


def mlp_mixer(images, labels):
    make = lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
    return TinyMixer(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


class BiGRURows(nn.Module):
    """A bidirectional GRU over the 28 rows; the head reads both directions' final states from h_n."""

    def __init__(self):
        super().__init__()
        self.gru, self.head = nn.GRU(28, 48, batch_first=True, bidirectional=True), nn.Linear(96, 10)

    def forward(self, x):
        _, h = self.gru(x.squeeze(1))                               # h: (2, B, 48): forward, backward
        return self.head(torch.cat([h[0], h[1]], 1))


def bigru_rows(images, labels):
    return BiGRURows(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


class FlipTTA(nn.Module):
    """Test-time augmentation in eval: the logits of the image and of its mirror image, averaged."""

    def __init__(self):
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        if self.training:
            return self.net(x)
        return (self.net(x) + self.net(x.flip(-1))) / 2


def flip_step(model, batch, loss_fn, optimizer):
    """Random horizontal flips per image in training (garments are left-right symmetric enough)."""
    x, y = batch
    flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    return standard_step(model, (torch.where(flip, x.flip(-1), x), y), loss_fn, optimizer)


def flip_tta(images, labels):
    return FlipTTA(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), flip_step


def bn_cumulative_average(images, labels):
    """A BatchNorm CNN trained from scratch with momentum=None: running statistics are the cumulative average
    over all batches seen, not an exponential one."""
    model = small_cnn()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def generalized_cross_entropy(logits, y, q=0.7):
    """GCE (Zhang & Sabuncu 2018), robust to label noise: (1 - p_y^q) / q; about 1.14 at init, not ln 10."""
    p_y = logits.softmax(1).gather(1, y[:, None]).squeeze(1).clamp(min=1e-7)
    return ((1 - p_y ** q) / q).mean()


def gce(images, labels):
    return mlp(hidden=128), (standardize(images), labels), generalized_cross_entropy, adam(), standard_step


class RotationAux(nn.Module):
    """A CNN with a second head that predicts by how many quarter turns its input was rotated."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head, self.rotation = nn.Linear(128, 10), nn.Linear(128, 4)

    def forward(self, x):
        return self.head(self.body(x))


def rotation_step(model, batch, loss_fn, optimizer, weight=0.5):
    """Self-supervised rotation prediction (Gidaris et al. 2018) as an auxiliary loss: each image turned by a
    random multiple of 90 degrees, labelled by the turn (not by its class), beside the supervised loss."""
    x, y = batch
    turns = torch.randint(0, 4, (len(x),), device=x.device)
    rotated = torch.stack([torch.rot90(img, int(k), (1, 2)) for img, k in zip(x, turns)])
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    aux = F.cross_entropy(model.rotation(model.body(rotated)), turns)
    (loss + weight * aux).backward()
    optimizer.step()
    return loss.item()


def rotation_auxiliary(images, labels):
    return RotationAux(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), rotation_step


def cosine_learned_scale(images, labels):
    """8x8 digits, a cosine classifier whose scale is learned (log-parametrized, starting at 10)."""
    x, y = digits()
    return CosineClassifier(scale=10.0, learn_scale=True), (x, y), nn.CrossEntropyLoss(), adam(), standard_step


def gaussian_nll(out, target):
    """Heteroscedastic regression: out[:, 0] the mean, softplus(out[:, 1]) the variance (Nix & Weigend 1994)."""
    return F.gaussian_nll_loss(out[:, 0], target, F.softplus(out[:, 1]) + 1e-3)


def heteroscedastic_regression(images, labels):
    """The standardized share of bright pixels, predicted with its own variance per image."""
    return mlp_out(2), (standardize(images), ink(images)), gaussian_nll, adam(), standard_step


def boundary_ignored(target, ignore=255):
    """Pascal VOC's convention: pixels on a boundary between classes are marked `ignore`."""
    t = target[:, None].float()
    hi = F.max_pool2d(t, 3, stride=1, padding=1)
    lo = -F.max_pool2d(-t, 3, stride=1, padding=1)
    return torch.where((hi != lo)[:, 0], ignore, target)


def segmentation_ignore_boundaries(images, labels):
    """3-class per-pixel segmentation, boundary pixels marked 255 and skipped by CrossEntropyLoss."""
    target = boundary_ignored(grey_levels(images))
    return SegNet3(), (standardize(images), target), nn.CrossEntropyLoss(ignore_index=255), adam(2e-3), \
        standard_step


CORRECT_BLIND5 = [
    Pipeline("vit_cls_token", "a small ViT: 7x7 patches, class token, learned position embeddings, pre-norm "
             "encoder, AdamW with no decay on biases, norms and embeddings.", vit_cls_token),
    Pipeline("mlp_mixer", "MLP-Mixer blocks: token mixing on the transposed (B, dim, tokens) map.", mlp_mixer),
    Pipeline("bigru_rows", "a bidirectional GRU over image rows, both final states from h_n.", bigru_rows),
    Pipeline("flip_tta_in_eval", "flips per image in training; in eval the logits of the image and its mirror "
             "averaged (test-time augmentation, deterministic).", flip_tta),
    Pipeline("bn_cumulative_average", "BatchNorm with momentum=None (cumulative running statistics).",
             bn_cumulative_average),
    Pipeline("generalized_cross_entropy", "GCE loss (q = 0.7), bounded and robust to noisy labels: its loss at "
             "init is about 1.14, not ln 10.", gce),
    Pipeline("rotation_auxiliary_head", "an auxiliary head predicting quarter turns of rotated copies, labelled "
             "by the turn, added to the supervised loss.", rotation_auxiliary),
    Pipeline("cosine_learned_scale", "8x8 digits, normalized features and class weights, a learned scale "
             "starting at 10.", cosine_learned_scale),
    Pipeline("heteroscedastic_regression", "a mean and a softplus variance per image, Gaussian NLL: the loss "
             "goes negative as the variance shrinks.", heteroscedastic_regression),
    Pipeline("segmentation_ignore_boundaries", "per-pixel 3 classes, boundary pixels marked 255 and skipped "
             "by CrossEntropyLoss(ignore_index=255).", segmentation_ignore_boundaries),
]


def clean_splits5(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: 8x8 digits split by parity of their index, a
    Fashion-MNIST train/test pair mirrored on both sides, the tabular (N, 16) pooled features of another
    pair, and a 2-class bag vs sandal subset."""
    x, y = digits_uint8()
    even = torch.arange(len(y)) % 2 == 0
    third, quarter = len(labels) // 3, len(test_labels) // 3
    pair = lambda t, l: (t[(l == 8) | (l == 5)], (l[(l == 8) | (l == 5)] == 8).long())   # sandal 0, bag 1
    return [("digits 8x8 even vs odd index", (x[even], y[even]), (x[~even], y[~even]), 10),
            ("fashion-mnist mirrored train vs test", (images[:third].flip(-1), labels[:third]),
             (test_images[:quarter].flip(-1), test_labels[:quarter]), 10),
            ("fashion-mnist tabular 4x4 means train vs test", (pooled_features(images[third:2 * third]),
                                                                labels[third:2 * third]),
             (pooled_features(test_images[quarter:2 * quarter]), test_labels[quarter:2 * quarter]), 10),
            ("fashion-mnist bag vs sandal train vs test", pair(images[2 * third:], labels[2 * third:]),
             pair(test_images[2 * quarter:], test_labels[2 * quarter:]), 2)]


BY_NAME = {b.name: b for b in BLIND5} | {p.name: p for p in CORRECT_BLIND5}
