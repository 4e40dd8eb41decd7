"""Blind held-out catalog: bug classes and correct pipelines written BEFORE reading the checks' thresholds.

bugs.py calibrated the checks, and bugs_heldout.py was looked at while the mechanism checks were
designed, so neither measures how the checks do on bugs nobody has seen. The bug classes here are in
neither catalog; each comes from a real report (cited per bug) in:
- Humbatova et al. 2020, "Taxonomy of Real Faults in Deep Learning Systems" (ICSE): model (missing
  activation, wrong activation of the last layer, wrong weight initialisation, layer properties),
  training (loss function, learning rate, regularisation, optimizer), training data (preprocessing,
  labels), and tensors and inputs (wrong shape) faults.
- Islam et al. 2019, "A Comprehensive Study on Deep Learning Bug Characteristics" (FSE): structural
  bugs (data flow, API misuse) and data bugs.
- Zhang et al. 2018, "An Empirical Study on TensorFlow Program Bugs" (ISSTA): incorrect model
  parameter or structure, API misuse, unaligned tensors.
- threads of discuss.pytorch.org and Q&A sites, cited by address.
The data bugs draw on shortcut learning (Zech et al. 2018, PLOS Medicine: a hospital's token in chest
X-rays predicts the label) and on leakage (Kapoor & Narayanan 2023, Patterns: augmenting before the split).

Interface as bugs_heldout.HeldOutBug, so benchmarks/checks_blind.py shares the held-out benchmark's
code; `checks` are the checks whose error or warning names the cause (fixed before measuring; a name
that is no check yet means: no current check names this cause). CORRECT_BLIND are correct pipelines
not in correct_pipelines.py (Pipeline, no warning allowed), and clean_splits the data the audit must
pass. Real Fashion-MNIST, scikit-learn's 8x8 digits, sequences, masks, multi-label and regression targets.
"""
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from .bugs import adam, mlp, small_cnn, standard_step, standardize
from .bugs_heldout import HeldOutBug
from .correct_pipelines import Pipeline


# ----------------------------------------------------------------------------- shared pieces

def digits():
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) float32 standardized, and labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None]
    return (x - x.mean()) / x.std(), torch.tensor(d.target)


def digits_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


# Fashion-MNIST attributes per class (T-shirt, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker,
# Bag, Ankle boot): upper body, footwear, long sleeves, worn. A sample has 0 to 3 of them.
ATTRIBUTES = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 1, 1], [0, 0, 0, 1], [1, 0, 1, 1],
                           [0, 1, 0, 1], [1, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]]).float()


def ink(images):
    """A regression target: the share of pixels above mid-grey, standardized."""
    t = (images > 127).float().mean((1, 2, 3))
    return (t - t.mean()) / t.std()


class Squeezed(nn.Module):
    """Wraps a model with one output unit and returns (B,) instead of (B, 1)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).squeeze(1)


def mlp_out(outputs, hidden=64):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class RowLSTM(nn.Module):
    """Reads a 28x28 image as 28 rows of 28 features; classifies from the last hidden state."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.lstm = nn.LSTM(28, 64, batch_first=batch_first)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.lstm(x.squeeze(1))          # written for (B, T, F)
        return self.head(out[:, -1])


# ----------------------------------------------------------------------------- model bugs

def missing_nonlinearity(images, labels):
    # BUG: three Linear layers with no activation between them: the network is one linear map
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def relu_on_logits(images, labels):
    model = nn.Sequential(mlp(), nn.ReLU())                         # BUG: logits clamped at 0
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def constant_init(images, labels):
    model = mlp()
    for m in model.modules():
        if isinstance(m, nn.Linear):                                # BUG: every weight equal: no symmetry breaking
            nn.init.constant_(m.weight, 0.01)
            nn.init.zeros_(m.bias)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class GateViaData(nn.Module):
    """A residual block with a learned gate starting at 0 (ReZero), read through .data."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(784, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        h = h + self.gate.data * torch.relu(self.fc2(h))             # BUG: .data cuts the gate out of autograd
        return self.head(h)


def parameter_read_via_data(images, labels):
    return GateViaData(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def layers_repeated_by_list_product(images, labels):
    # BUG: [layer, act] * 3 repeats the SAME Linear object: three layers share one weight matrix
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), *[nn.Linear(64, 64), nn.ReLU()] * 3,
                          nn.Linear(64, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def lstm_without_batch_first(images, labels):
    # BUG: nn.LSTM defaults to (T, B, F); fed (B, T, F) it runs its recurrence across the samples
    return RowLSTM(batch_first=False), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- loss and target bugs

def regression_output_broadcast(images, labels):
    # BUG: the model outputs (B, 1), the target is (B,): MSELoss broadcasts to (B, B), every output
    # is pulled to every target in the batch (PyTorch only warns)
    return mlp_out(1), (standardize(images), ink(images)), nn.MSELoss(), adam(), standard_step


def multilabel_with_cross_entropy(images, labels):
    # BUG: multi-hot targets with CrossEntropyLoss: softmax makes the attributes compete, they do not sum to 1
    return mlp_out(4), (standardize(images), ATTRIBUTES[labels]), nn.CrossEntropyLoss(), adam(), standard_step


class MaskNet(nn.Module):
    """A tiny fully convolutional net: one logit per pixel."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def mask_targets_0_255(images, labels):
    mask = (images > 127).float() * 255                               # BUG: mask saved as 0/255, never divided
    return MaskNet(), (standardize(images), mask), nn.BCEWithLogitsLoss(), adam(), standard_step


def l2_penalty_wrong_sign(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        l2 = sum(p.pow(2).sum() for p in model.parameters())
        loss = loss_fn(model(x), y) - 5e-3 * l2                     # BUG: meant + (a penalty, not a reward)
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def labels_scaled_like_pixels(images, labels):
    y = (labels.float() / 255).long()                               # BUG: the image transform applied to labels
    return mlp(), (standardize(images), y), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- optimization bugs

def warmup_never_stepped(images, labels):
    def make(params):
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
        opt.scheduler = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=500)
        return opt
    # BUG: the step never calls optimizer.scheduler.step(): the lr stays at its warmup start, 1e-6
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def optimizer_recreated_each_step(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)         # BUG: a fresh Adam every step, state lost
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def clip_norm_far_too_small(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-4)   # BUG: meant 1.0
        optimizer.step()
        return loss.item()
    make = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


# ----------------------------------------------------------------------------- data pipeline bugs

def divided_by_255_twice(images, labels):
    x = ((images.float() / 255) / 255 - 0.2860) / 0.3530              # BUG: ToTensor already scaled to 0..1
    return small_cnn(), (x, labels), nn.CrossEntropyLoss(), adam(), standard_step


def flips_on_digits(images, labels):
    x, y = digits()

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        flip = torch.rand(len(x), 1, 1, 1) < 0.5
        x = torch.where(flip, x.flip(-1), x)                         # BUG: flips copied from a photo recipe:
        x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-2), x)   # a flipped 6 is a 9, a 2 a 5
        return standard_step(model, (x, y), loss_fn, optimizer)
    return digits_cnn(), (x, y), nn.CrossEntropyLoss(), adam(), step


def sampler_given_class_weights(images, labels):
    keep = torch.cat([(labels < 5).nonzero()[:, 0], (labels >= 5).nonzero()[:100, 0]])
    x, y = standardize(images[keep]), labels[keep]
    class_weight = 1.0 / torch.bincount(y, minlength=10).float()
    # BUG: WeightedRandomSampler wants one weight per SAMPLE; given 10 class weights it draws indices 0..9 only
    sampler = WeightedRandomSampler(class_weight, num_samples=len(y), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler)
    return mlp(), loader, nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- data bugs (audit_data)

def _split(images, labels):
    n = len(labels) * 3 // 4
    return images[:n], labels[:n], images[n:], labels[n:]


def source_border_shortcut(images, labels):
    """Footwear photographed in another studio: a grey frame around those train images only."""
    x, y, xt, yt = _split(images, labels)
    x = x.clone()
    shoes = (y == 5) | (y == 7) | (y == 9)
    frame = torch.zeros(28, 28, dtype=torch.bool)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = True, True, True, True
    x[shoes] = torch.where(frame, torch.tensor(60, dtype=torch.uint8), x[shoes])   # BUG: source marks the class
    return (x, y), (xt, yt), 10


def test_sensor_noise(images, labels):
    """Test images from another sensor: gaussian noise of 12 grey levels."""
    x, y, xt, yt = _split(images, labels)
    g = torch.Generator().manual_seed(0)
    noisy = (xt.float() + 12 * torch.randn(xt.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)  # BUG
    return (x, y), (noisy, yt), 10


def test_off_center(images, labels):
    """Test images cropped by another script: every object shifted 3 pixels right and down."""
    x, y, xt, yt = _split(images, labels)
    shifted = F.pad(xt, (3, 0, 3, 0))[:, :, :28, :28].contiguous()  # BUG
    return (x, y), (shifted, yt), 10


def classes_merged_in_train(images, labels):
    """A label map with a copy-paste slip: 'coat' mapped to the pullover id in the train split only."""
    x, y, xt, yt = _split(images, labels)
    y = torch.where(y == 4, torch.tensor(2), y)                      # BUG
    return (x, y), (xt, yt), 10


def augmented_before_split(images, labels):
    """Flipped copies made before the split: the train set holds mirror images of test images."""
    x, y, xt, yt = _split(images, labels)
    half = len(yt) // 2
    x = torch.cat([x, xt[:half].flip(-1)])                           # BUG: augment, then split
    y = torch.cat([y, yt[:half]])
    return (x, y), (xt, yt), 10


BLIND = [
    HeldOutBug("missing_nonlinearity", "Humbatova et al. 2020 (model: missing activation function)",
               "Linear layers stacked with no activation: a linear classifier.", missing_nonlinearity,
               frozenset({"model_linearity"})),
    HeldOutBug("relu_on_logits", "Humbatova et al. 2020 (model: wrong activation of the last layer); "
               "stats.stackexchange.com 'Does it make sense to apply softmax on top of relu?' (ai.stackexchange 8491)",
               "ReLU after the last layer: logits can never be negative.", relu_on_logits,
               frozenset({"output_activation"})),
    HeldOutBug("constant_init", "Humbatova et al. 2020 (model: wrong weight initialisation); "
               "stats.stackexchange.com/questions/45087", "every weight initialized to 0.01: hidden units stay "
               "identical.", constant_init, frozenset({"init_symmetry", "dead_activations"})),
    HeldOutBug("parameter_read_via_data", "Islam et al. 2019 (API misuse); PyTorch forums on .data",
               "a ReZero gate read through .data: it and its block never train.", parameter_read_via_data,
               frozenset({"param_grads", "registered_params"})),
    HeldOutBug("layers_repeated_by_list_product", "Islam et al. 2019 (structural); Python list repetition",
               "[Linear, ReLU] * 3 repeats one Linear: three layers share one weight.",
               layers_repeated_by_list_product, frozenset({"shared_modules"})),
    HeldOutBug("lstm_without_batch_first", "Zhang et al. 2018 (unaligned tensors); discuss.pytorch.org/t/"
               "lstm-change-batch-first-true-loss-does-not-decrease/62364", "LSTM without batch_first fed "
               "(B, T, F): the recurrence runs across samples.", lstm_without_batch_first,
               frozenset({"batch_independence"})),
    HeldOutBug("regression_output_broadcast", "Zhang et al. 2018 (unaligned tensors); PyTorch's 'Using a target "
               "size that is different to the input size' warning", "(B, 1) outputs against (B,) targets: MSE "
               "broadcasts to (B, B).", regression_output_broadcast, frozenset({"batch_independence", "loss_shape"})),
    HeldOutBug("multilabel_with_cross_entropy", "Humbatova et al. 2020 (training: wrong loss function); "
               "discuss.pytorch.org/t/using-bcewithlogisloss-for-multi-label-classification/67011",
               "multi-hot targets with CrossEntropyLoss.", multilabel_with_cross_entropy,
               frozenset({"loss_classes", "output_activation"})),
    HeldOutBug("mask_targets_0_255", "Humbatova et al. 2020 (training data: preprocessing); PyTorch forums "
               "'BCEWithLogitsLoss negative loss'", "segmentation masks of 0/255 into BCEWithLogitsLoss.",
               mask_targets_0_255, frozenset({"loss_classes", "loss_at_init"})),
    HeldOutBug("l2_penalty_wrong_sign", "Humbatova et al. 2020 (training: regularisation)", "an L2 term "
               "subtracted from the loss: the weights are pushed to grow.", l2_penalty_wrong_sign,
               frozenset({"weight_decay"})),
    HeldOutBug("labels_scaled_like_pixels", "Humbatova et al. 2020 (training data: preprocessing)", "the "
               "pixel transform (/255) applied to the labels: every label becomes 0.", labels_scaled_like_pixels,
               frozenset({"labels"})),
    HeldOutBug("warmup_never_stepped", "Humbatova et al. 2020 (training: learning rate); PyTorch forums "
               "'forgot scheduler.step()'", "a LinearLR warmup never stepped: the lr stays at 1e-6.",
               warmup_never_stepped, frozenset({"lr_schedule", "step_updates"})),
    HeldOutBug("optimizer_recreated_each_step", "Islam et al. 2019 (API misuse); PyTorch forums 'optimizer "
               "created inside the training loop'", "a new Adam built in every step: its moments are lost.",
               optimizer_recreated_each_step, frozenset({"optimizer_params", "step_updates"})),
    HeldOutBug("clip_norm_far_too_small", "Humbatova et al. 2020 (training: hyperparameters)",
               "clip_grad_norm_(max_norm=1e-4) under SGD: every step is 1e-4 long.", clip_norm_far_too_small,
               frozenset({"step_updates", "grad_clipping"})),
    HeldOutBug("divided_by_255_twice", "Humbatova et al. 2020 (training data: preprocessing)", "pixels "
               "divided by 255 after ToTensor did: inputs almost constant.", divided_by_255_twice,
               frozenset({"input_scale"})),
    HeldOutBug("flips_on_digits", "Humbatova et al. 2020 (training data: data augmentation)", "random "
               "flips on digits: a flipped 6 is a 9.", flips_on_digits, frozenset({"augmentation"})),
    HeldOutBug("sampler_given_class_weights", "codetd.com/article/12726075 (WeightedRandomSampler weights are "
               "per sample); PyTorch forums", "WeightedRandomSampler given 10 class weights: only samples 0..9 "
               "are ever drawn.", sampler_given_class_weights, frozenset({"batch_order"})),
    HeldOutBug("source_border_shortcut", "Zech et al. 2018 (a source marker predicts the label)", "a frame "
               "around the footwear train images only.", source_border_shortcut, frozenset({"shortcuts"}), "data"),
    HeldOutBug("test_sensor_noise", "dataset shift (another sensor)", "test images with gaussian noise.",
               test_sensor_noise, frozenset({"train_vs_test"}), "data"),
    HeldOutBug("test_off_center", "dataset shift (another crop)", "test objects shifted by 3 pixels.",
               test_off_center, frozenset({"train_vs_test"}), "data"),
    HeldOutBug("classes_merged_in_train", "Humbatova et al. 2020 (training data: labels)", "coat relabelled "
               "as pullover in train only.", classes_merged_in_train, frozenset({"class_balance", "label_map"}),
               "data"),
    HeldOutBug("augmented_before_split", "Kapoor & Narayanan 2023 (leakage: augmentation before the split)",
               "mirror images of test images in train.", augmented_before_split,
               frozenset({"near_leakage", "leakage"}), "data"),
]


# ----------------------------------------------------------------------------- correct pipelines

def warmup_cosine(total_steps=2000, warmup=100):
    """AdamW with linear warmup then cosine decay, over the planned run, stepped once per batch."""
    def make(params):
        opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
        f = lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                                 (total_steps - warmup)))
        opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, f)
        return opt
    return make


def scheduled(step=standard_step):
    def run(model, batch, loss_fn, optimizer):
        loss = step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()
        return loss
    return run


def swa_phase(images, labels):
    """SWA: SGD annealed by SWALR to a constant swa_lr, an AveragedModel updated after every step."""
    averages = weakref.WeakKeyDictionary()

    def make(params):
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        opt.scheduler = torch.optim.swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=100)
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        avg = averages.get(model)
        if avg is None:
            avg = averages[model] = torch.optim.swa_utils.AveragedModel(model)
        avg.update_parameters(model)
        optimizer.scheduler.step()
        return loss
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


class Checkpointed(nn.Module):
    """A CNN whose middle block is recomputed in backward (activation checkpointing) to save memory."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                   nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 16, 10))

    def forward(self, x):
        h = self.stem(x)
        h = h + checkpoint(self.block, h, use_reentrant=False)
        return self.head(h)


def gradient_checkpointing(images, labels):
    return Checkpointed(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def frozen_batchnorm(images, labels):
    """BatchNorm statistics estimated once ("pretrained"), then frozen: BN in eval inside a training model."""
    model, x = small_cnn(), standardize(images)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None                                    # cumulative average
        for i in range(0, 512, 128):
            model(x[i:i + 128])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)

    def step(model, batch, loss_fn, optimizer):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return standard_step(model, batch, loss_fn, optimizer)
    trainable = lambda params: torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)
    return model, (x, labels), nn.CrossEntropyLoss(), trainable, step


def focal_loss(logits, y, gamma=2.0):
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on the samples already classified well."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return ((1 - torch.exp(-ce)) ** gamma * ce).mean()


def focal(images, labels):
    return mlp(), (standardize(images), labels), focal_loss, adam(), standard_step


def multilabel_bce(images, labels):
    """Four attributes per image, any number true: one logit each, BCEWithLogitsLoss."""
    return mlp_out(4), (standardize(images), ATTRIBUTES[labels]), nn.BCEWithLogitsLoss(), adam(), standard_step


def regression_mse(images, labels):
    return Squeezed(mlp_out(1)), (standardize(images), ink(images)), nn.MSELoss(), adam(), standard_step


def lstm_rows(images, labels):
    return RowLSTM(batch_first=True), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def adamw_param_groups(images, labels):
    """nanoGPT's split: weight decay on matrices and kernels, none on biases and norm parameters."""
    def make(params):
        params = list(params)
        return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=1e-3)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def balanced_sampler(images, labels):
    """Imbalanced classes resampled with one weight per sample (1 / its class count)."""
    keep = torch.cat([(labels < 5).nonzero()[:, 0], (labels >= 5).nonzero()[:100, 0]])
    x, y = standardize(images[keep]), labels[keep]
    weights = (1.0 / torch.bincount(y, minlength=10).float())[y]
    sampler = WeightedRandomSampler(weights, num_samples=len(y), generator=torch.Generator().manual_seed(0))
    return mlp(), DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler), nn.CrossEntropyLoss(), adam(), \
        standard_step


def sigmoid_bce(images, labels):
    """Binary task with probabilities out of the model and BCELoss (not the logits version): correct."""
    keep = (labels == 5) | (labels == 7)
    model = nn.Sequential(Squeezed(mlp_out(1)), nn.Sigmoid())
    return model, (standardize(images[keep]), (labels[keep] == 7).float()), nn.BCELoss(), adam(), standard_step


class ChannelsLast(nn.Module):
    """Takes (B, H, W, C) images and permutes them to (B, C, H, W), as it should."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def channels_last_permuted(images, labels):
    x = F.pad(images.float() / 255, (2, 2, 2, 2)) * torch.tensor([0.5, 0.8, 1.0]).view(1, 3, 1, 1)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return ChannelsLast(), (x.permute(0, 2, 3, 1).contiguous(), labels), nn.CrossEntropyLoss(), adam(), \
        standard_step


class SharedBlock(nn.Module):
    """One block applied twice on purpose (weight sharing, as in recurrent or universal transformers)."""

    def __init__(self):
        super().__init__()
        self.inp, self.block, self.head = nn.Linear(784, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        for _ in range(2):
            h = h + torch.relu(self.block(h))
        return self.head(h)


def shared_block(images, labels):
    return SharedBlock(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def segmentation_bce(images, labels):
    """A per-pixel task: the foreground mask (0/1 floats), one logit per pixel, BCEWithLogitsLoss."""
    return MaskNet(), (standardize(images), (images > 127).float()), nn.BCEWithLogitsLoss(), adam(), standard_step


def digits_shifted(images, labels):
    """8x8 digits with shift augmentation (which keeps a digit's meaning), a small CNN."""
    x, y = digits()

    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        dx, dy = torch.randint(-1, 2, (2,)).tolist()
        return standard_step(model, (torch.roll(x, (dy, dx), (2, 3)), y), loss_fn, optimizer)
    return digits_cnn(), (x, y), nn.CrossEntropyLoss(), adam(), step


CORRECT_BLIND = [
    Pipeline("warmup_cosine_per_step", "AdamW, linear warmup over 100 steps then cosine over 2000, stepped per "
             "batch: the lr rises for 100 steps.", lambda i, l: (small_cnn(), (standardize(i), l),
                                                                   nn.CrossEntropyLoss(), warmup_cosine(),
                                                                   scheduled())),
    Pipeline("swa_phase", "SWALR annealing SGD to swa_lr=0.01 over 100 steps, an AveragedModel.", swa_phase),
    Pipeline("gradient_checkpointing", "a block recomputed in backward: its forward runs twice per step.",
             gradient_checkpointing),
    Pipeline("frozen_batchnorm", "BatchNorm statistics and affine parameters frozen, the rest trains.",
             frozen_batchnorm),
    Pipeline("focal_loss", "focal loss as a plain function: not cross-entropy, bounded by it.", focal),
    Pipeline("multilabel_bce", "4 attributes, multi-hot float targets, BCEWithLogitsLoss.", multilabel_bce),
    Pipeline("regression_mse", "one standardized number per image, (B,) outputs, MSELoss.", regression_mse),
    Pipeline("lstm_rows", "an LSTM with batch_first=True over the 28 rows.", lstm_rows),
    Pipeline("adamw_param_groups", "AdamW with decay 0.1 on weights, 0 on biases and BatchNorm.",
             adamw_param_groups),
    Pipeline("balanced_sampler", "WeightedRandomSampler with per-sample weights on imbalanced classes.",
             balanced_sampler),
    Pipeline("sigmoid_bce", "Sigmoid at the end and BCELoss: probabilities into a loss that expects them.",
             sigmoid_bce),
    Pipeline("channels_last_permuted", "(B, H, W, C) data permuted in forward.", channels_last_permuted),
    Pipeline("shared_block", "one Linear block applied twice on purpose.", shared_block),
    Pipeline("segmentation_bce", "per-pixel 0/1 masks, a fully convolutional net.", segmentation_bce),
    Pipeline("digits_shift_augmentation", "8x8 digits, random 1-pixel shifts in the step.", digits_shifted),
]


def clean_splits(images, labels, test_images, test_labels):
    """(name, train, test, classes) that audit_data must pass: real splits, two datasets."""
    from sklearn.datasets import load_digits
    d = load_digits()
    pix = torch.tensor(d.images * 255 / 16).round().to(torch.uint8)[:, None]
    t = torch.tensor(d.target)
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(0))   # train_test_split's way
    tr, te = perm[:len(t) * 3 // 4], perm[len(t) * 3 // 4:]
    return [("fashion-mnist train/test", (images, labels), (test_images, test_labels), 10),
            ("digits random 3/4 vs 1/4", (pix[tr], t[tr]), (pix[te], t[te]), 10)]


BY_NAME = {b.name: b for b in BLIND} | {p.name: p for p in CORRECT_BLIND}
