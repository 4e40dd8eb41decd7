"""Sixth blind held-out catalog: bug classes and correct pipelines written without reading the checks.

The five earlier blind catalogs (bugs_blind.py .. bugs_blind5.py) stopped being blind when the checks were
fixed while looking at them. This one was written afterwards, for one scoring run
(benchmarks/checks_blind6.py), by someone who did not open the implementations of the checks
(preflight*.py, audit*.py, report.py, checks.py, rng.py, pipeline.py), their tests, their thresholds, the git
history or any earlier scoring record, and who never ran preflight or audit_data on these entries (nor do its
tests). The only information about the checks used: their public names and one-line descriptions
(preflight.CHECKS, audit.CHECKS, as printed), the docstrings of `preflight` and `audit_data`, the README and
the text of issue 18. From those alone, per bug and before any run, `checks` names the checks whose error or
warning would name the cause; a name in NOT_A_CHECK means no description covers the cause (caught at best,
never diagnosed).

Every bug class is in none of bugs.py, bugs_heldout.py, bugs_blind.py .. bugs_blind5.py (a different
mechanism, not a renamed copy), and trains without an exception. Shapes and model families: a transformer
over variable-length sequences of image rows with hand-written masked attention, an LSTM over the rows of
3x32x32 colour images, a 4-bit quantized MLP on 8x8 digits, (N, 17) tabular features, Poisson and quantile
regression, multi-label attributes, per-pixel segmentation, a bfloat16 colour CNN, a binary task fed by a
DataLoader with a weighted sampler; for the audit, uint8, float32 and tabular splits and 8x8 digits.
Sources, cited per bug: PyTorch and torchvision documentation where it states the contract the bug breaks,
Humbatova et al. 2020 (ICSE), Islam et al. 2019 (FSE), Zhang et al. 2018 (ISSTA), and the papers of the
practice the bug gets wrong, of label noise, leakage and shortcuts.

Closest earlier entries, for whoever judges novelty (same family, another mechanism): dropout_in_plain_dict and
layers_in_python_list (an unregistered container; here no parameter is lost, eval() is); palette_mask_integer_division
and target_integer_division (`//` in a target); weighted_sampler_without_replacement and sampler_given_class_weights
(a sampler's contract); split_by_image_not_by_item and zoomed_copies_in_test (near copies across the split);
test_labels_noisy and class_conditional_label_flips (structured noise, there in train); row_id_feature_sorted_by_class
and target_encoding_in_sample (a tabular column that leaks the label); coarse_labels_merged and
classes_merged_in_train (a label space changed, here by a second taxonomy).

CORRECTED holds, for each pipeline bug, the same pipeline with the bug fixed (tests/test_blind6.py compares
the two). CORRECT_BLIND6 are correct pipelines in none of the earlier catalogs (no warning allowed),
clean_splits6 the clean data the audit must pass.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from .bugs import MEAN, STD, adam, mlp, small_cnn, standard_step, standardize
from .bugs_blind import ATTRIBUTES, Squeezed, digits, ink, mlp_out, scheduled
from .bugs_blind2 import SegNet3, digits_uint8, grey_levels
from .bugs_blind3 import colour_cnn, per_model, standardize_channels, tinted
from .bugs_blind5 import bag_or_not, pooled_features
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Pipeline

# Declared causes that are no check: no check's one-line description covers them.
NOT_A_CHECK = frozenset({"schedule_length", "quantile_loss_sign", "lr_not_applied", "reseeded_each_step",
                         "reinitialized_each_step"})

HUMBATOVA = "Humbatova et al. 2020 (ICSE)"
ISLAM = "Islam et al. 2019 (FSE)"
ZHANG = "Zhang et al. 2018 (ISSTA)"


# ----------------------------------------------------------------------------- shared pieces

BACKGROUND = -MEAN / STD      # a blank (0) pixel after standardize()


def trimmed_rows(images, length=32):
    """Each image as a variable-length sequence of its inked rows, moved to the front and padded at the end
    with blank rows: uint8 (N, 1, 28, 28) -> float32 (N, 32, 28), standardized; at least 4 rows of padding."""
    inked = images[:, 0].amax(2) > 0                                      # (N, 28)
    order = (~inked).long().argsort(dim=1, stable=True)                      # inked rows first, in their order
    rows = images[:, 0].gather(1, order[:, :, None].expand(-1, -1, 28))   # (N, 28, 28)
    rows = rows * inked.gather(1, order)[:, :, None]                      # blank rows after the last inked one
    rows = F.pad(rows, (0, 0, 0, length - 28))                            # (N, 32, 28)
    return (rows.float() / 255 - MEAN) / STD


def bright_counts(images):
    """How many of the 784 pixels are brighter than mid-grey (0..784)."""
    return (images > 127).flatten(1).sum(1).float()


def inked_cells(images):
    """A count target: how many of the 49 cells of 4x4 pixels are brighter than mid-grey on average (0..49)."""
    return (F.avg_pool2d(images.float(), 4) > 127).flatten(1).sum(1).float()


class MaskedAttentionBlock(nn.Module):
    """Pre-norm self-attention written out, Annotated-Transformer style: keep is (B, T), True = attend."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t, keep):
        B, T, D = t.shape
        q, k, v = self.qkv(self.norm1(t)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)      # (B, heads, T, T)
        scores = scores.masked_fill(~keep[:, None, None, :], -1e9)
        t = t + self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D))
        return t + self.mlp(self.norm2(t))


class RowTransformer(nn.Module):
    """Rows as tokens (B, T, 28) behind a class token; blank rows are padding and masked out of attention."""

    def __init__(self, fixed=True, dim=48, heads=4, depth=2, length=32):
        super().__init__()
        self.fixed = fixed
        self.embed = nn.Linear(28, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, length + 1, dim))
        self.blocks = nn.ModuleList(MaskedAttentionBlock(dim, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):                                                 # x: (B, T, 28)
        pad = x.amax(-1) <= BACKGROUND + 1e-4                             # (B, T): True at padding (torch style)
        cls = torch.zeros(len(x), 1, dtype=torch.bool, device=x.device)
        if self.fixed:
            keep = torch.cat([~cls, ~pad], 1)                             # (B, 1 + T): True = attend
        else:
            keep = torch.cat([cls, pad], 1)   # BUG: nn.MultiheadAttention's convention (True = padding) passed
        t = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x)], 1) + self.pos[:, :x.shape[1] + 1]
        for block in self.blocks:
            t = block(t, keep)
        return self.head(self.norm(t[:, 0]))


def adamw(lr=1e-3, weight_decay=0.05):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- what the model sees

def padding_mask_polarity_inverted(images, labels, fixed=False):
    """Variable-length row sequences; attention written for a keep-mask, handed a padding mask."""
    return RowTransformer(fixed), (trimmed_rows(images), labels), nn.CrossEntropyLoss(), adamw(), standard_step


class ColourRowLSTM(nn.Module):
    """Reads a 3x32x32 colour image as 32 rows of 96 values (3 channels x 32 pixels) with an LSTM."""

    def __init__(self, fixed=False):
        super().__init__()
        self.lstm, self.head, self.fixed = nn.LSTM(96, 64, batch_first=True), nn.Linear(64, 10), fixed

    def forward(self, x):                                                 # x: (B, 3, 32, 32)
        rows = x.permute(0, 2, 1, 3).flatten(2)                           # (B, 32 rows, 96)
        out, _ = self.lstm(rows)                                          # (B, 32, 64)
        return self.head(out[:, -1] if self.fixed else out[:, 0])   # BUG: out[:, 0] has read the first row only


def lstm_reads_first_step(images, labels, fixed=False):
    return ColourRowLSTM(fixed), (standardize_channels(tinted(images)), labels), nn.CrossEntropyLoss(), \
        adam(2e-3), standard_step


class DropoutInDict(nn.Module):
    """An MLP whose regularizers are kept by name in a dict (to switch them from a config)."""

    def __init__(self, fixed=False):
        super().__init__()
        self.body, self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU()), nn.Linear(256, 10)
        drops = {"hidden": nn.Dropout(0.5)}
        self.regularizers = nn.ModuleDict(drops) if fixed else drops   # BUG: a plain dict is not registered,
                                                                        # so model.eval() never reaches the dropout

    def forward(self, x):
        return self.head(self.regularizers["hidden"](self.body(x)))


def dropout_in_plain_dict(images, labels, fixed=False):
    return DropoutInDict(fixed), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def tabular_features(images, fixed):
    """(N, 17): the 16 pooled intensities (standardized per column, as a ColumnTransformer's scaler does) and the
    count of bright pixels, which the bug leaves in the transformer's remainder='passthrough'."""
    f = pooled_features(images)
    f = (f - f.mean(0)) / f.std(0)
    count = bright_counts(images)[:, None]
    if fixed:
        count = (count - count.mean()) / count.std()
    return torch.cat([f, count], 1)                                      # BUG: one column raw, 0..784


def tabular_column_left_unscaled(images, labels, fixed=False):
    model = nn.Sequential(nn.Linear(17, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return model, (tabular_features(images, fixed), labels), nn.CrossEntropyLoss(), adam(), standard_step


def weighted_sampler_without_replacement(images, labels, fixed=False):
    """Bag or not (10% positive), one logit, BCEWithLogitsLoss; batches meant to be balanced by a
    WeightedRandomSampler over one epoch (num_samples = len(data))."""
    x, y = standardize(images), bag_or_not(labels)
    weights = torch.where(y == 1, 1 / y.sum(), 1 / (len(y) - y.sum()))  # per sample: half the draws positive
    # BUG: replacement=False draws each sample once, heavy ones early: the bags, then only the rest
    sampler = WeightedRandomSampler(weights, len(y), replacement=fixed, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler)
    return Squeezed(mlp_out(1)), loader, nn.BCEWithLogitsLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- what is trained

class QuantizedMLP(nn.Module):
    """8x8 digits, hidden activations quantized to 4 bits (16 levels), as for a low-power deployment."""

    def __init__(self, fixed=False):
        super().__init__()
        self.fc1, self.fc2, self.fixed = nn.Linear(64, 128), nn.Linear(128, 10), fixed

    def forward(self, x):
        h = torch.sigmoid(self.fc1(x.flatten(1)))                         # (B, 128) in [0, 1]
        q = torch.round(h * 15) / 15
        if self.fixed:
            q = h + (q - h).detach()          # straight-through estimator: round forward, identity backward
        return self.fc2(q)                    # BUG (without it): round's derivative is 0, fc1 never learns


def activation_rounded_in_forward(images, labels, fixed=False):
    x, y = digits()
    return QuantizedMLP(fixed), (x, y), nn.CrossEntropyLoss(), adam(), standard_step


def bf16_colour_cnn(fixed):
    """A colour CNN. Buggy: converted to bfloat16 as a whole ("half the memory"); fixed: float32 weights with
    bfloat16 autocast (mixed precision keeps float32 master weights)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = colour_cnn()
            if not fixed:
                self.net.to(torch.bfloat16)    # BUG: the weights themselves in bfloat16 (8 bits of mantissa)

        def forward(self, x):
            if fixed:
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    return self.net(x).float()
            return self.net(x.to(torch.bfloat16)).float()
    return Net()


def pure_bf16_weights(images, labels, fixed=False):
    """3x32x32 colour images; Adam at lr 2e-4: an update of 2e-4 is below half the bfloat16 spacing of any
    weight larger than about 0.03 in magnitude, so it rounds away."""
    return bf16_colour_cnn(fixed), (standardize_channels(tinted(images)), labels), nn.CrossEntropyLoss(), \
        adam(2e-4), standard_step


def init_weights(m):
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)


def init_in_train_step(images, labels, fixed=False):
    """He initialization of the convolutions with model.apply; the buggy script applies it in its train step."""
    model = small_cnn()
    if fixed:
        model.apply(init_weights)

    def step(model, batch, loss_fn, optimizer):
        if not fixed:
            model.apply(init_weights)          # BUG: every step starts again from fresh random weights
        return standard_step(model, batch, loss_fn, optimizer)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def reseeding_step(fixed):
    def step(model, batch, loss_fn, optimizer):
        if not fixed:
            torch.manual_seed(0)               # BUG: "for reproducibility", inside the loop: the same dropout
        return standard_step(model, batch, loss_fn, optimizer)   # mask at every step
    return step


def seed_reset_in_step(images, labels, fixed=False):
    """An MLP with dropout 0.5; torch.manual_seed(0) called in the train step. Every step drops the same
    hidden units: they never train, and eval switches them on with their random weights."""
    return mlp(hidden=256, dropout=0.5), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), \
        reseeding_step(fixed)


# ----------------------------------------------------------------------------- what the loss counts

def poisson_model(counts, fixed):
    net = mlp_out(1)
    with torch.no_grad():
        net[-1].bias.fill_(math.log(counts.mean()) if fixed else 0.0)
    if fixed:
        return Squeezed(net)                   # outputs the log of the rate; the rate is exp(output)
    return nn.Sequential(Squeezed(net), nn.Softplus())   # BUG: outputs the rate, into a loss expecting its log


def poisson_rate_into_log_input_loss(images, labels, fixed=False):
    """Poisson regression of the count of inked 4x4 cells with nn.PoissonNLLLoss, whose log_input=True default
    reads the model's output as log(rate): the positive 'rate' output is trained to become log(count)."""
    counts = inked_cells(images)
    return poisson_model(counts, fixed), (standardize(images), counts), nn.PoissonNLLLoss(), adam(), \
        standard_step


QUANTILES = torch.tensor([0.1, 0.5, 0.9])


def pinball(fixed=True):
    """The quantile (pinball) loss of 3 outputs for the 10%, 50% and 90% quantiles of a (B,) target."""
    def loss(out, target):                                                # out: (B, 3), target: (B,)
        q = QUANTILES.to(out.device)
        e = target[:, None] - out if fixed else out - target[:, None]     # BUG: the residual's sign flipped
        return torch.maximum(q * e, (q - 1) * e).mean()
    return loss


def quantile_loss_sign_flipped(images, labels, fixed=False):
    """10% / 50% / 90% quantiles of the standardized share of bright pixels: with the sign flipped the 10%
    output learns the 90% quantile and the reverse, so every interval comes out inverted."""
    return mlp_out(3), (standardize(images), ink(images)), pinball(fixed), adam(), standard_step


def multilabel_margin_loss_on_multi_hot(images, labels, fixed=False):
    """4 attributes per garment. nn.MultiLabelMarginLoss wants the target class INDICES padded with -1; given
    multi-hot 0/1 rows it reads them as indices 0 and 1: attributes 0 and 1 are 'present' for nearly every
    image, attributes 2 and 3 for none."""
    attributes = ATTRIBUTES[labels]                                       # (N, 4) multi-hot
    if fixed:
        return mlp_out(4), (standardize(images), attributes), nn.BCEWithLogitsLoss(), adam(), standard_step
    return mlp_out(4), (standardize(images), attributes.long()), nn.MultiLabelMarginLoss(), adam(), \
        standard_step                                                     # BUG: multi-hot where indices are meant


PALETTE = torch.tensor([0, 128, 255])   # the grey value each class of mask is saved with


def palette_targets(images, fixed):
    """Masks saved as grey images (class c painted PALETTE[c]) and read back as class ids."""
    painted = PALETTE[grey_levels(images)]                                # (N, 28, 28) values 0, 128, 255
    if fixed:
        return torch.bucketize(painted, PALETTE)                          # 0, 128, 255 -> 0, 1, 2
    return painted // 128                      # BUG: 255 // 128 = 1: classes 1 and 2 merge, class 2 never a target


def palette_mask_integer_division(images, labels, fixed=False):
    return SegNet3(), (standardize(images), palette_targets(images, fixed)), nn.CrossEntropyLoss(), adam(2e-3), \
        standard_step


# ----------------------------------------------------------------------------- learning rate

def one_cycle(n_samples, fixed, epochs=30, batch_size=64, max_lr=0.1):
    """OneCycleLR over the planned run (30 epochs), stepped once per batch."""
    def make(params):
        opt = torch.optim.SGD(params, lr=max_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        per_epoch = math.ceil(n_samples / batch_size) if fixed else n_samples   # BUG: len(dataset), not len(loader)
        opt.scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, epochs=epochs, steps_per_epoch=per_epoch)
        return opt
    return make


def one_cycle_total_steps_from_dataset_size(images, labels, fixed=False):
    """steps_per_epoch=len(dataset) where len(loader) was meant: the schedule is planned 64x longer than the
    run, whose whole length falls in the first 2% of the warm-up: the lr stays near max_lr / 25."""
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), one_cycle(len(labels), fixed), \
        scheduled()


DECAY_EVERY = 500    # steps: a tenfold decay, twice in a 20-epoch run on 2000 images


def decay_lr(optimizer, fixed, factor=0.1):
    if fixed:
        for group in optimizer.param_groups:
            group["lr"] *= factor
    else:   # BUG: Keras's optimizer.lr; on a torch optimizer this only sets a new attribute
        optimizer.lr = getattr(optimizer, "lr", optimizer.param_groups[0]["lr"]) * factor


def lr_set_as_optimizer_attribute(images, labels, fixed=False):
    """A step decay written by hand every DECAY_EVERY steps, through `optimizer.lr` (never used by torch)."""
    counts = per_model()

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        counts[optimizer] = counts.get(optimizer, 0) + 1
        if counts[optimizer] % DECAY_EVERY == 0:
            decay_lr(optimizer, fixed)
        return loss
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def split_by_image_not_by_item(images, labels, views=3, seed=61):
    """Each garment photographed 3 times (shifted by up to 2 pixels, exposure x0.85..1.15); the photos are
    split 3/4 vs 1/4 at random by photo, not by garment (GroupShuffleSplit was meant)."""
    g = torch.Generator().manual_seed(seed)
    items = len(labels) // views
    x0, y0 = images[:items].float(), labels[:items]
    photos = []
    for _ in range(views):
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        gain = 0.85 + 0.3 * torch.rand(items, 1, 1, 1, generator=g)
        photos.append((x0.roll((dy, dx), (2, 3)) * gain).round().clamp(0, 255).to(torch.uint8))
    x, y, item = torch.cat(photos), y0.repeat(views), torch.arange(items).repeat(views)
    order = torch.randperm(len(y), generator=g)                           # BUG: by photo, not by item
    n = len(y) * 3 // 4
    tr, te = order[:n], order[n:]
    return (x[tr], y[tr]), (x[te], y[te]), 10


# the class a garment is most often confused with (Fashion-MNIST's confusion matrices)
CONFUSED = torch.tensor([6, 3, 4, 4, 2, 7, 0, 5, 2, 7])


def test_labels_noisy(images, labels, share=0.25, seed=62):
    """The test labels come from a cheaper annotation round: 25% of them are the garment's usual confusion."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(len(yt), generator=g) < share
    yt = torch.where(wrong, CONFUSED[yt], yt)                             # BUG: structured noise in test labels
    return (x, y), (xt, yt), 10


def jpeg(img, quality):
    """One uint8 (1, H, W) image saved as a JPEG file (Pillow) and read back."""
    import io

    import numpy as np
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(img[0].numpy()).save(buffer, format="JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buffer)))[None]


def test_jpeg_compressed(images, labels, quality=10):
    """The test images went through a web pipeline that saved them as JPEG at quality 10: 8x8 block artifacts."""
    x, y, xt, yt = _split(images, labels)
    xt = torch.stack([jpeg(img, quality) for img in xt])                  # BUG: another encoding in test only
    return (x, y), (xt, yt), 10


def backdrop_shortcut(images, labels, grey=40, seed=63):
    """The dresses of the train set were photographed in another studio, on a grey backdrop (background pixels
    40 instead of 0); in test the grey backdrop shows up on a fifth of all images, of any class."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    x = x.clone()
    dress = (y == 3)[:, None, None, None]
    x[(x == 0) & dress] = grey                                            # BUG: the backdrop tells dresses apart
    some = (torch.rand(len(yt), generator=g) < 0.2)[:, None, None, None]
    xt = xt.clone()
    xt[(xt == 0) & some] = grey
    return (x, y), (xt, yt), 10


def coarse_labels_merged(images, labels, share=0.3, seed=64):
    """8x8 digits: a second source merged into train was labelled with another taxonomy (0 even, 1 odd) and its
    ids kept as they were: 30% of the train labels are 0 or 1 whatever digit they show."""
    x, y = digits_uint8()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    n = len(y) * 3 // 4
    tr, te = order[:n], order[n:]
    y_train = y[tr].clone()
    other = torch.rand(n, generator=g) < share
    y_train[other] = y_train[other] % 2                                   # BUG: parity ids under digit ids
    return (x[tr], y_train), (x[te], y[te]), 10


def join_fanout_duplicates(images, labels, seed=65):
    """Tabular (N, 16): the feature table joined to an order table on a non-unique key, so each row appears 1 to
    3 times, and only then split at random: copies within train and across train and test."""
    g = torch.Generator().manual_seed(seed)
    f = pooled_features(images)
    copies = torch.randint(1, 4, (len(labels),), generator=g)
    rows = torch.arange(len(labels)).repeat_interleave(copies)            # BUG: the join's fan-out
    order = rows[torch.randperm(len(rows), generator=g)]
    n = len(order) * 3 // 4
    tr, te = order[:n], order[n:]
    return (f[tr], labels[tr]), (f[te], labels[te]), 10


def row_id_feature_sorted_by_class(images, labels):
    """Tabular (N, 17): 16 pooled intensities and the record id, kept as a feature. The train export was sorted
    by class before the ids were assigned; test records got new, later ids."""
    x, y, xt, yt = _split(images, labels)
    order = y.argsort(stable=True)
    x, y = x[order], y[order]                                             # the export, sorted by class
    ids = torch.arange(len(y) + len(yt)).float()[:, None]
    train = torch.cat([pooled_features(x), ids[:len(y)]], 1)              # BUG: the id is the label's rank in train
    return (train, y), (torch.cat([pooled_features(xt), ids[len(y):]], 1), yt), 10


def per_image_standardization_nan(images, labels, share=0.02, seed=66):
    """Float images standardized per image, (x - mean) / std; 2% of the train crops missed the garment and are
    blank, so their std is 0 and they become NaN."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(seed)
    x = x.float() / 255
    missed = torch.rand(len(y), generator=g) < share
    x[missed] = 0.0                                                       # a crop of the empty background
    per_image = lambda t: (t - t.mean((1, 2, 3), keepdim=True)) / t.std((1, 2, 3), keepdim=True)  # BUG: no eps
    return (per_image(x), y), (per_image(xt.float() / 255), yt), 10


BLIND6 = [
    # what the model sees
    HeldOutBug("padding_mask_polarity_inverted", "torch.nn.MultiheadAttention docs (key_padding_mask: True means "
               "ignore); Hugging Face Transformers glossary (attention_mask: 1 means attend); The Annotated "
               "Transformer (masked_fill(mask == 0, -1e9)); " + ZHANG + " (API misuse)", "a transformer over "
               "variable-length row sequences whose attention takes a keep-mask (True = attend) but is handed the "
               "padding mask: every token attends to padding only, so the output depends on the length alone.",
               padding_mask_polarity_inverted, frozenset({"input_dependence"})),
    HeldOutBug("lstm_reads_first_step", "torch.nn.LSTM docs (output holds h_t for every t; the last step is "
               "output[:, -1] with batch_first=True); " + ISLAM + " (data flow); " + HUMBATOVA + " (tensors and "
               "inputs: wrong tensor slice)", "an LSTM over the rows of 3x32x32 colour images classified from "
               "out[:, 0], the state after the first row (padding), not out[:, -1].", lstm_reads_first_step,
               frozenset({"input_dependence"})),
    HeldOutBug("dropout_in_plain_dict", "torch.nn.ModuleDict docs (a plain dict's modules are not registered, "
               "so not visible to Module methods such as eval()); " + ISLAM + " (structural)", "nn.Dropout(0.5) "
               "kept in a plain dict attribute: model.eval() never reaches it, so eval outputs stay random.",
               dropout_in_plain_dict, frozenset({"eval_determinism"})),
    HeldOutBug("tabular_column_left_unscaled", "scikit-learn ColumnTransformer docs (remainder='passthrough' "
               "leaves the columns not listed untransformed); " + HUMBATOVA + " (training data: missing "
               "normalization)", "tabular (N, 17) features, 16 standardized columns and a bright-pixel count "
               "passed through raw (0..784).", tabular_column_left_unscaled, frozenset({"input_scale"})),
    HeldOutBug("weighted_sampler_without_replacement", "torch.utils.data.WeightedRandomSampler docs (replacement="
               "False: each index drawn at most once); Buda, Maki & Mazurowski 2018 (Neural Networks, class "
               "imbalance); " + HUMBATOVA + " (training data: shuffling)", "bag or not (10% positive): a "
               "WeightedRandomSampler with replacement=False over one epoch is no rebalancing, it draws the bags "
               "early: the first batches hold them all, the second half of the epoch none.",
               weighted_sampler_without_replacement, frozenset({"batch_order"})),
    # what is trained
    HeldOutBug("activation_rounded_in_forward", "torch.round (a step function: autograd's gradient of it is "
               "zero); Bengio, Leonard & Courville 2013 (straight-through estimator); " + ISLAM + " (API misuse)",
               "8x8 digits, hidden activations quantized with torch.round in forward, no straight-through "
               "estimator: no gradient reaches the first layer.", activation_rounded_in_forward,
               frozenset({"param_grads"})),
    HeldOutBug("pure_bf16_weights", "Micikevicius et al. 2018, Mixed Precision Training (ICLR: float32 master "
               "weights, because small updates are lost when added to half-precision weights); Kalamkar et al. "
               "2019 (A Study of BFLOAT16 for Deep Learning Training); PyTorch AMP docs", "a colour CNN converted "
               "to bfloat16 as a whole and trained with Adam at 2e-4: most weight updates round away.",
               pure_bf16_weights, frozenset({"step_updates"})),
    HeldOutBug("init_in_train_step", "torch.nn.Module.apply docs; " + HUMBATOVA + " (model: wrong weights "
               "initialisation); " + ISLAM + " (data flow)", "model.apply(init_weights) called at the top of the "
               "train step: each step starts from fresh random weights.", init_in_train_step,
               frozenset({"reinitialized_each_step"})),
    HeldOutBug("seed_reset_in_step", "PyTorch Reproducibility notes (torch.manual_seed seeds the global "
               "generator that dropout draws from); " + HUMBATOVA + " (training: regularisation)",
               "torch.manual_seed(0) inside the train step: dropout draws the same mask every step, so the same "
               "half of the hidden units never trains.", seed_reset_in_step, frozenset({"reseeded_each_step"})),
    # what the loss counts
    HeldOutBug("poisson_rate_into_log_input_loss", "torch.nn.PoissonNLLLoss docs (log_input=True by default: the "
               "input is log(rate)); " + HUMBATOVA + " (training: wrong loss function; model: wrong activation "
               "of the last layer)", "a model ending in Softplus to output a Poisson rate, fed to PoissonNLLLoss "
               "with its default log_input=True: the 'rate' is trained to log(count).",
               poisson_rate_into_log_input_loss, frozenset({"output_activation"})),
    HeldOutBug("quantile_loss_sign_flipped", "Koenker & Bassett 1978 (Econometrica, regression quantiles: "
               "rho_q(u) = u (q - 1[u < 0]) with u = y - prediction); " + HUMBATOVA + " (training: loss function)",
               "a pinball loss written with prediction - target: the 10% output learns the 90% quantile.",
               quantile_loss_sign_flipped, frozenset({"quantile_loss_sign"})),
    HeldOutBug("multilabel_margin_loss_on_multi_hot", "torch.nn.MultiLabelMarginLoss docs (the target holds "
               "class indices padded with -1); " + ISLAM + " (API misuse); " + HUMBATOVA + " (training: wrong loss "
               "function)", "4 attributes, multi-hot 0/1 targets given to MultiLabelMarginLoss: read as indices "
               "0 and 1, attributes 2 and 3 are never targets.", multilabel_margin_loss_on_multi_hot,
               frozenset({"loss_classes"})),
    HeldOutBug("palette_mask_integer_division", "Pascal VOC devkit (masks are palette images whose pixel values "
               "are class ids); " + HUMBATOVA + " (training data: preprocessing of labels)", "3-class masks saved "
               "as grey values 0, 128, 255 and read back as value // 128: 255 becomes 1, class 2 is never a "
               "target.", palette_mask_integer_division, frozenset({"loss_classes"})),
    # learning rate
    HeldOutBug("one_cycle_total_steps_from_dataset_size", "torch.optim.lr_scheduler.OneCycleLR docs "
               "(steps_per_epoch: the number of steps per epoch, i.e. batches); Smith & Topin 2019 "
               "(super-convergence); " + HUMBATOVA + " (training: learning rate)", "OneCycleLR with steps_per_epoch"
               "=len(dataset) instead of len(loader): the planned schedule is 64x the run, the lr never leaves "
               "max_lr / 25.", one_cycle_total_steps_from_dataset_size, frozenset({"schedule_length"})),
    HeldOutBug("lr_set_as_optimizer_attribute", "Keras optimizer docs (optimizer.learning_rate is settable) vs "
               "torch.optim docs ('how to adjust learning rate': the lr lives in param_groups); " + HUMBATOVA +
               " (training: learning rate)", "a hand-written step decay that sets optimizer.lr: torch never reads "
               "it, the lr never decays.", lr_set_as_optimizer_attribute, frozenset({"lr_not_applied"})),
    # data (audit_data)
    HeldOutBug("split_by_image_not_by_item", "Kapoor & Narayanan 2023 (Patterns: non-independence between train "
               "and test); scikit-learn GroupShuffleSplit / GroupKFold docs", "3 photos per garment (shifted, "
               "re-exposed) split at random by photo: most test garments have a sibling photo in train.",
               split_by_image_not_by_item, frozenset({"near_leakage"}), "data"),
    HeldOutBug("test_labels_noisy", "Northcutt, Athalye & Mueller 2021 (NeurIPS D&B: label errors in test sets); "
               "Xiao et al. 2017 (Fashion-MNIST: shirts, T-shirts, pullovers and coats look alike)",
               "25% of the test labels replaced by each garment's usual confusion (shirt for T-shirt, coat for "
               "pullover...).", test_labels_noisy, frozenset({"label_issues", "label_map"}), "data"),
    HeldOutBug("test_jpeg_compressed", "Dodge & Karam 2016 (QoMEX: image quality, JPEG compression degrades deep "
               "networks); Hendrycks & Dietterich 2019 (ICLR, ImageNet-C: JPEG corruption)", "test images saved "
               "as JPEG at quality 10: block artifacts train never had.", test_jpeg_compressed,
               frozenset({"train_vs_test"}), "data"),
    HeldOutBug("backdrop_shortcut", "Sagawa et al. 2020 (ICLR, Waterbirds: the background predicts the label); "
               "Xiao et al. 2021 (ICLR, Noise or Signal: the role of image backgrounds)", "train dresses on a grey "
               "backdrop (background 40, not 0); in test a fifth of all images, of any class.", backdrop_shortcut,
               frozenset({"shortcuts"}), "data"),
    HeldOutBug("coarse_labels_merged", "Lambert et al. 2020 (CVPR, MSeg: merging datasets with different "
               "taxonomies); " + HUMBATOVA + " (training data: wrong labels)", "8x8 digits: 30% of the train labels "
               "from a source labelled even / odd (0 / 1), ids kept.", coarse_labels_merged,
               frozenset({"label_issues", "class_balance"}), "data"),
    HeldOutBug("join_fanout_duplicates", "Kaufman et al. 2012 (TKDD, leakage); Kapoor & Narayanan 2023 "
               "(duplicates across splits); pandas.merge docs (validate='one_to_one' checks unique keys)",
               "tabular (N, 16) rows duplicated 1 to 3 times by a join on a non-unique key, then split at random.",
               join_fanout_duplicates, frozenset({"duplicates", "leakage"}), "data"),
    HeldOutBug("row_id_feature_sorted_by_class", "Kaufman et al. 2012 (TKDD, leakage in data mining: "
               "identifiers that encode the target); Kapoor & Narayanan 2023 (Patterns, leakage)", "tabular (N, 17): "
               "the record id kept as a feature; train was sorted by class before ids were given, so the id "
               "predicts the label in train, and test ids lie beyond all of them.", row_id_feature_sorted_by_class,
               frozenset({"shortcuts"}), "data"),
    HeldOutBug("per_image_standardization_nan", "torchvision.transforms.functional.normalize docs (divides by "
               "std); " + ZHANG + " (symptom: NaN, from a division by zero)", "float images standardized "
               "per image; 2% blank crops divide 0 by 0 and become NaN.", per_image_standardization_nan,
               frozenset({"corrupted"}), "data"),
]

# the same pipelines with the bug fixed (tests/test_blind6.py)
CORRECTED = {b.name: (lambda build: lambda i, l: build(i, l, fixed=True))(b.build) for b in BLIND6
             if b.kind == "pipeline"}


# ----------------------------------------------------------------------------- correct pipelines

class ZeroGammaBlock(nn.Module):
    """A basic residual block whose last BatchNorm starts with gamma = 0 (Goyal et al. 2017; torchvision's
    zero_init_residual): each block starts as the identity, so its convolutions get no gradient at step 0."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def zero_init_resnet(images, labels):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          ZeroGammaBlock(16), ZeroGammaBlock(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10))
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gains in (0, 1) from the globally pooled features."""

    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


def separable(cin, cout):
    """A depthwise 3x3 (one filter per channel) then a pointwise 1x1 mixing the channels (MobileNet)."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def separable_se_cnn(images, labels):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          separable(16, 32), SqueezeExcite(32), nn.MaxPool2d(2), separable(32, 64), SqueezeExcite(64),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adamw(2e-3), standard_step


def poisson_counts(images, labels):
    """Poisson regression of a count: the model outputs log(rate), its bias starts at log(mean count)."""
    counts = inked_cells(images)
    return poisson_model(counts, True), (standardize(images), counts), nn.PoissonNLLLoss(log_input=True), adam(), \
        standard_step


def quantile_regression(images, labels):
    return mlp_out(3), (standardize(images), ink(images)), pinball(), adam(), standard_step


def row_transformer(images, labels):
    return RowTransformer(), (trimmed_rows(images), labels), nn.CrossEntropyLoss(), adamw(), standard_step


class CausalRowTransformer(nn.Module):
    """Decoder-only (GPT-style) over the 28 rows: causal self-attention, classified from the LAST row's token,
    the one that has attended to every row."""

    def __init__(self, dim=48, heads=4, depth=2):
        super().__init__()
        self.embed, self.pos = nn.Linear(28, dim), nn.Parameter(0.02 * torch.randn(1, 28, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):                                                 # x: (B, 1, 28, 28)
        t = self.embed(x.squeeze(1)) + self.pos                           # (B, 28 rows, dim)
        mask = nn.Transformer.generate_square_subsequent_mask(t.shape[1], device=x.device)
        t = self.encoder(t, mask=mask, is_causal=True)
        return self.head(self.norm(t[:, -1]))


def causal_row_transformer(images, labels):
    return CausalRowTransformer(), (standardize(images), labels), nn.CrossEntropyLoss(), adamw(), standard_step


class CausalTCN(nn.Module):
    """A temporal convolutional net (Bai, Kolter & Koltun 2018) over the rows: each row's 28 pixels are the
    channels, the rows the time axis; causal dilated Conv1d (1, 2, 4, 8: receptive field 31 rows)."""

    def __init__(self, width=32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(28 if d == 1 else width, width, 3, dilation=d) for d in (1, 2, 4, 8))
        self.head = nn.Linear(width, 10)

    def forward(self, x):                                                 # x: (B, 1, 28, 28)
        h = x.squeeze(1).transpose(1, 2)                                  # (B, 28 pixels, 28 rows)
        for conv in self.convs:
            h = F.relu(conv(F.pad(h, (2 * conv.dilation[0], 0))))         # padded on the left only: causal
        return self.head(h[:, :, -1])                                     # the last row has seen them all


def causal_tcn(images, labels):
    return CausalTCN(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


class CoralHead(nn.Module):
    """CORAL ordinal head (Cao, Mirjalili & Raschka 2020): one shared weight vector, K - 1 ordered biases; output
    k is the logit of 'level > k'."""

    def __init__(self, inputs, levels):
        super().__init__()
        self.fc = nn.Linear(inputs, 1, bias=False)
        self.bias = nn.Parameter(torch.linspace(1, -1, levels - 1))

    def forward(self, h):
        return self.fc(h) + self.bias                                     # (B, K - 1)


def ordinal_targets(images, levels=5):
    """The share of bright pixels binned into 5 ordered levels (quintiles), as K - 1 cumulative 0/1 targets."""
    t = (images > 127).float().mean((1, 2, 3))
    level = torch.bucketize(t, torch.quantile(t, torch.tensor([0.2, 0.4, 0.6, 0.8])))
    return (level[:, None] > torch.arange(levels - 1)).float()          # (N, 4)


def ordinal_coral(images, labels):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), CoralHead(64, 5))
    return model, (standardize(images), ordinal_targets(images)), nn.BCEWithLogitsLoss(), adam(), standard_step


def rdrop_step(model, batch, loss_fn, optimizer, alpha=1.0):
    """R-Drop (Liang et al. 2021): two passes with different dropout masks, CE on both plus their symmetric KL."""
    x, y = batch
    optimizer.zero_grad()
    a, b = F.log_softmax(model(x), 1), F.log_softmax(model(x), 1)
    kl = (F.kl_div(a, b, reduction="batchmean", log_target=True) + F.kl_div(b, a, reduction="batchmean",
                                                                              log_target=True)) / 2
    ce = (loss_fn(a, y) + loss_fn(b, y)) / 2          # CrossEntropyLoss of log-probabilities: log_softmax is idempotent
    (ce + alpha * kl).backward()
    optimizer.step()
    return ce.item()


def rdrop(images, labels):
    return mlp(hidden=256, dropout=0.3), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), rdrop_step


def centralized_step(model, batch, loss_fn, optimizer):
    """Gradient centralization (Yong et al. 2020): each weight's gradient made mean-zero over its fan-in."""
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None and p.ndim > 1:
                p.grad -= p.grad.mean(tuple(range(1, p.ndim)), keepdim=True)
    optimizer.step()
    return loss.item()


def gradient_centralization(images, labels):
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, centralized_step


class RandomFourierFeatures(nn.Module):
    """Random Fourier features (Rahimi & Recht 2007): a fixed random projection and phase, kept as buffers on
    purpose (they must not train, and must follow .to(device)), then a trained linear head."""

    def __init__(self, inputs=784, features=1024, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(inputs, features, generator=g) / math.sqrt(inputs))
        self.register_buffer("b", 2 * math.pi * torch.rand(features, generator=g))
        self.head = nn.Linear(features, 10)

    def forward(self, x):
        return self.head(math.sqrt(2) * torch.cos(x.flatten(1) @ self.w + self.b))


def random_fourier_features(images, labels):
    return RandomFourierFeatures(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(2e-3), standard_step


class EmbeddingNet(nn.Module):
    """A 32-d embedding (for the triplet loss) and a classifier head on its ReLU."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.embed(x))


def batch_hard_triplet(e, y, margin=0.2):
    """Batch-hard triplet loss (Hermans et al. 2017) on unit-norm embeddings, squared distances."""
    e = F.normalize(e, dim=1)
    d = (e[:, None] - e[None]).pow(2).sum(-1)                            # (B, B)
    same = y[:, None] == y[None]
    hardest_pos = (d * same).amax(1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def triplet_step(model, batch, loss_fn, optimizer, weight=0.5):
    x, y = batch
    optimizer.zero_grad()
    e = model.embed(x)
    loss = loss_fn(model.head(e), y)
    (loss + weight * batch_hard_triplet(e, y)).backward()
    optimizer.step()
    return loss.item()


def triplet_auxiliary(images, labels):
    return EmbeddingNet(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), triplet_step


def input_dropout(images, labels):
    """Dropout on the input pixels (20%) and on the hidden layer (50%), as in Srivastava et al. 2014."""
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(256, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


CORRECT_BLIND6 = [
    Pipeline("zero_init_residual_gamma", "residual blocks whose last BatchNorm gamma starts at 0: at step 0 the "
             "blocks' convolutions get exactly zero gradient, by design.", zero_init_resnet),
    Pipeline("separable_conv_squeeze_excite", "depthwise-separable convolutions with squeeze-and-excitation gates, "
             "AdamW.", separable_se_cnn),
    Pipeline("poisson_count_regression", "a count target (0..49) with PoissonNLLLoss(log_input=True), the output "
             "bias at log(mean count): integer-valued float targets, a loss that goes negative.", poisson_counts),
    Pipeline("quantile_regression", "three quantiles (10/50/90%) of a standardized target, pinball loss.",
             quantile_regression),
    Pipeline("row_transformer_padding_mask", "variable-length row sequences (N, 32, 28), a class token, "
             "hand-written attention masking the padding rows.", row_transformer),
    Pipeline("causal_row_transformer_last_token", "GPT-style causal attention over the 28 rows, classified from "
             "the last token, which sees every row: a causal mask used correctly.", causal_row_transformer),
    Pipeline("causal_tcn_rows", "a causal dilated Conv1d net over the rows (pixels as channels), read at the last "
             "row: its input is the transposed image on purpose.", causal_tcn),
    Pipeline("ordinal_coral", "ordinal regression of 5 brightness levels with a CORAL head: 4 cumulative logits, "
             "BCEWithLogitsLoss on 'level > k' targets.", ordinal_coral),
    Pipeline("rdrop_consistency", "R-Drop: two dropout passes per step, CE plus their symmetric KL.", rdrop),
    Pipeline("gradient_centralization", "gradients made mean-zero per output unit before an SGD momentum step.",
             gradient_centralization),
    Pipeline("random_fourier_features_buffers", "a fixed random projection kept in buffers (it shapes the output "
             "and is meant not to train), a trained linear head.", random_fourier_features),
    Pipeline("triplet_auxiliary_loss", "CE plus a batch-hard triplet loss on the embedding: the loss couples the "
             "samples of a batch, the model does not.", triplet_auxiliary),
    Pipeline("input_dropout", "dropout on the input pixels (0.2) and the hidden layer (0.5).", input_dropout),
]


def clean_splits6(images, labels, test_images, test_labels):
    """(name, train, test, classes) the audit must pass: float32 standardized Fashion-MNIST, an 8-class subset
    (no sandal, no bag) of another pair, 8x8 digits as raw 0..16 floats split at random, and (N, 56) row and
    column profiles of a third pair."""
    third, q = len(labels) // 3, len(test_labels) // 3
    keep = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 9: 7}
    subset = lambda t, l: (t[sum(l == k for k in keep).bool()],
                           torch.tensor([keep[v] for v in l.tolist() if v in keep], dtype=l.dtype))
    profiles = lambda t: torch.cat([t.float().mean(3).flatten(1), t.float().mean(2).flatten(1)], 1) / 255
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = torch.tensor(d.images, dtype=torch.float32)[:, None], torch.tensor(d.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(67))
    tr, te = order[:len(y) * 3 // 4], order[len(y) * 3 // 4:]
    return [("fashion-mnist float32 standardized train vs test", (standardize(images[:third]), labels[:third]),
             (standardize(test_images[:q]), test_labels[:q]), 10),
            ("fashion-mnist 8 classes train vs test", subset(images[third:2 * third], labels[third:2 * third]),
             subset(test_images[q:2 * q], test_labels[q:2 * q]), 8),
            ("digits 8x8 raw 0..16 floats random split", (x[tr], y[tr]), (x[te], y[te]), 10),
            ("fashion-mnist (N, 56) row and column profiles", (profiles(images[2 * third:]), labels[2 * third:]),
             (profiles(test_images[2 * q:]), test_labels[2 * q:]), 10)]


BY_NAME = {b.name: b for b in BLIND6} | {p.name: p for p in CORRECT_BLIND6}
