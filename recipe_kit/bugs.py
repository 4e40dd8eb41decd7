"""Planted-bug training pipelines: each one runs without an exception, and each one is wrong.

Every Bug is data: the name of a bug class, what is wrong, a build(images, labels) function that returns
(model, train, loss_fn, make_optimizer, train_step) with exactly that one silent bug planted in an
otherwise correct Fashion-MNIST pipeline, and the preflight check expected to flag it as an error.

    for bug in CATALOG:
        report = preflight(*bug.build(images, labels), budget=bug.budget)
        assert bug.check in {p.check for p in report.errors}

They are the test cases of preflight today and the "debug this training loop" drills of the course
later: `clean(images, labels)` is the same pipeline without a bug, to diff against.
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = 0.2860, 0.3530   # Fashion-MNIST training-set pixel statistics on the 0..1 scale


@dataclass(frozen=True)
class Bug:
    name: str              # the bug class, e.g. "softmax_before_cross_entropy"
    description: str       # what is wrong, in one sentence a learner can check against the code
    build: Callable        # build(images uint8 (N,1,28,28), labels (N,)) -> (model, train, loss_fn, make_optimizer, train_step)
    check: str             # the preflight check that must flag it (as an error unless severity says otherwise)
    budget: str = "fast"   # the cheapest preflight budget that catches it
    severity: str = "error"   # "warning" where correct code can look the same (sharing or factorizing on purpose)


# ----------------------------------------------------------------------------- the correct pipeline

def standardize(images):
    """uint8 (N, 1, 28, 28) -> float32 with mean 0, std 1 (Fashion-MNIST statistics)."""
    return (images.float() / 255 - MEAN) / STD


def mlp(hidden=64, dropout=0.0):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, 10))


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(16 * 3 * 3, 10))


def adam(lr=1e-3):
    return lambda params: torch.optim.Adam(params, lr=lr)


def standard_step(model, batch, loss_fn, optimizer):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def clean(images, labels):
    """The reference pipeline every bug below starts from."""
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- model bugs

def softmax_before_cross_entropy(images, labels):
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))               # BUG: CrossEntropyLoss wants logits
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def sigmoid_before_cross_entropy(images, labels):
    model = nn.Sequential(mlp(), nn.Sigmoid())                    # BUG: logits squashed into (0, 1)
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def nll_on_logits(images, labels):
    return mlp(), (standardize(images), labels), nn.NLLLoss(), adam(), standard_step   # BUG: no log_softmax


class SoftmaxOverBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return torch.log_softmax(self.net(x), dim=0)              # BUG: dim=0 is the batch


def softmax_over_batch(images, labels):
    return SoftmaxOverBatch(), (standardize(images), labels), nn.NLLLoss(), adam(), standard_step


class IgnoresInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x * 0)                                    # BUG: a leftover "mask" zeroes x


def forward_ignores_input(images, labels):
    return IgnoresInput(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class DetachedFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x).detach())               # BUG: features never train


def detached_features(images, labels):
    return DetachedFeatures(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class MixesBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 64), nn.Linear(64, 10)

    def forward(self, x):                                         # x: (B, 1, 28, 28)
        x = x.reshape(784, -1).t()                                # BUG: (784, B).t() interleaves samples
        return self.fc2(torch.relu(self.fc1(x)))                  # (B, 10)


def batch_mixing_view(images, labels):
    return MixesBatch(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def huge_init(images, labels):
    model = mlp()
    for layer in (model[1], model[4]):
        nn.init.normal_(layer.weight, std=1.0)                    # BUG: ~30x the kaiming scale
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def dead_relus(images, labels):
    model = mlp()
    nn.init.constant_(model[1].bias, -10.0)                       # BUG: every ReLU starts (and stays) off
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def vanishing_gradients(images, labels):
    layers = [nn.Flatten(), nn.Linear(784, 64), nn.Sigmoid()]
    for _ in range(10):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]               # BUG: 11 stacked sigmoids, no normalization
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)                   # ... with a tiny init
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- optimizer and step bugs

def missing_zero_grad(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch                                              # BUG: no optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def zero_grad_after_backward(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.zero_grad()                                     # BUG: wipes the gradients before step()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def step_never_called(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()                                           # BUG: no optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def loss_detached(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x).detach().requires_grad_(), y)     # BUG: "fixes" an error by cutting the graph
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def loss_scale_not_undone(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y) / 65536                       # BUG: a leftover fp16 loss scale, never undone
        loss.backward()
        optimizer.step()
        return loss.item() * 65536
    make = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def eval_mode_in_step(images, labels):
    def step(model, batch, loss_fn, optimizer):
        model.eval()                                              # BUG: dropout is off while training
        return standard_step(model, batch, loss_fn, optimizer)
    return mlp(dropout=0.5), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def eval_mode_not_undone(images, labels):
    model = small_cnn()
    model.eval()                                                  # a validation pass...
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step  # BUG: no model.train()


def lr_zero(images, labels):
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(lr=0.0), standard_step  # BUG


def lr_far_too_high(images, labels):
    make = lambda params: torch.optim.SGD(params, lr=1e3)        # BUG: a typo for 1e-3
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def param_missing_from_optimizer(images, labels):
    make = lambda params: torch.optim.Adam(list(params)[:2], lr=1e-3)  # BUG: only the first layer
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def frozen_head(images, labels):
    model = mlp()
    for p in model[4].parameters():
        p.requires_grad_(False)                                   # BUG: "freeze the backbone" froze the head
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def optimizer_of_another_model(images, labels):
    old = mlp()                                                   # the model before a re-run of the cell
    make = lambda params: torch.optim.Adam(old.parameters(), lr=1e-3)   # BUG: ignores params
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


# ----------------------------------------------------------------------------- data bugs

def unnormalized_inputs(images, labels):
    return mlp(), (images.float(), labels), nn.CrossEntropyLoss(), adam(), standard_step   # BUG: 0..255


def labels_shifted(images, labels):
    train = (standardize(images), labels.roll(1))                 # BUG: off by one after a bad merge
    return mlp(), train, nn.CrossEntropyLoss(), adam(), standard_step


def labels_shuffled_separately(images, labels):
    g = torch.Generator().manual_seed(0)
    x = standardize(images)[torch.randperm(len(labels), generator=g)]
    y = labels[torch.randperm(len(labels), generator=g)]          # BUG: a second, different permutation
    return mlp(), (x, y), nn.CrossEntropyLoss(), adam(), standard_step


def sorted_unshuffled_loader(images, labels):
    order = labels.argsort(stable=True)                           # data stored grouped by class
    data = TensorDataset(standardize(images)[order], labels[order])
    loader = DataLoader(data, batch_size=64, shuffle=False)      # BUG: shuffle=False
    return mlp(), loader, nn.CrossEntropyLoss(), adam(), standard_step


# ----------------------------------------------------------------------------- mechanism checks' calibration

class UnregisteredScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()
        self.scale = torch.ones(10, requires_grad=True)           # BUG: a tensor, not an nn.Parameter

    def forward(self, x):
        return self.net(x) * self.scale


def tensor_not_parameter(images, labels):
    return UnregisteredScale(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def adamw_decay_typo(images, labels):
    make = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=10.0)   # BUG: meant 1e-2
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, standard_step


def class_weight_zero(images, labels):
    weight = torch.ones(10)
    weight[3] = 0.0                                               # BUG: a class "masked out" while debugging
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(weight=weight), adam(), standard_step


class ReshapedChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                 nn.Linear(128, 10))

    def forward(self, x):                                         # x: (B, H, W, C) as PIL/numpy give it
        return self.net(x.reshape(len(x), 3, 28, 28))             # BUG: meant x.permute(0, 3, 1, 2)


def channels_last_reshaped(images, labels):
    x = standardize(images)[:, 0]                                 # (N, 28, 28)
    channels = [x, x.flip(2), x.roll(7, 1)]                       # three different views as colour channels
    return ReshapedChannels(), (torch.stack(channels, 3), labels), nn.CrossEntropyLoss(), adam(), standard_step


class NoisyInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x + 0.5 * torch.randn_like(x))            # BUG: augmentation noise also at eval


def noise_at_eval(images, labels):
    return NoisyInput(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def augmentation_shuffles_images(images, labels):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        x = x[torch.randperm(len(x))]                       # BUG: a "mix" augmentation moves images, not labels
        return standard_step(model, (x, y), loss_fn, optimizer)
    return small_cnn(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), step


def cosine_epochs_stepped_per_batch(images, labels):
    def make(params):
        opt = torch.optim.Adam(params, lr=1e-3)
        opt.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)   # 30 epochs
        return opt

    def step(model, batch, loss_fn, optimizer):
        loss = standard_step(model, batch, loss_fn, optimizer)
        optimizer.scheduler.step()                                # BUG: per batch
        return loss
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), make, step


def conv_stack_without_activation(images, labels):
    # BUG: no ReLU between the convolutions, average pooling: the whole model is one linear map
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.AvgPool2d(4),
                          nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    return model, (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, h):
        return h + torch.relu(self.fc(h))


class RepeatedBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.head = nn.Linear(784, 64), nn.Linear(64, 10)
        self.blocks = nn.ModuleList([Block()] * 4)                # BUG: one Block object, four times

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def blocks_list_multiplied(images, labels):
    return RepeatedBlocks(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


class HandDropout(nn.Module):
    """An MLP with dropout written by hand on the hidden units."""

    def __init__(self, p=0.5):
        super().__init__()
        self.fc1, self.fc2, self.p = nn.Linear(784, 64), nn.Linear(64, 10), p

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        if self.training:
            h = h * (torch.rand_like(h) > self.p)    # BUG: kept units not divided by (1 - p): eval sees 2x
        return self.fc2(h)


def dropout_mask_without_rescale(images, labels):
    return HandDropout(), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def dropout_p_inverted(images, labels, drop_rate=0.1):
    # BUG: the config's drop rate turned into p = 1 - rate, as if p were the keep probability
    return mlp(dropout=1 - drop_rate), (standardize(images), labels), nn.CrossEntropyLoss(), adam(), standard_step


def clip_at_step_start(images, labels):
    """SGD at lr 0.5 kept stable by clipping the gradient norm to 0.5, as the recipe it came from did (a
    sibling of bugs_blind2.clip_before_backward, added after that catalog's run; clip_grad_value_ would
    raise on the missing gradients instead of clipping nothing)."""
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        optimizer.zero_grad()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)     # BUG: clips the zeroed grads; backward comes later
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return mlp(), (standardize(images), labels), nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.5), step


CATALOG = [
    Bug("softmax_before_cross_entropy", "The model ends in Softmax, and CrossEntropyLoss applies log_softmax "
        "again: logits are squashed into [0, 1].", softmax_before_cross_entropy, "output_activation"),
    Bug("sigmoid_before_cross_entropy", "The model ends in Sigmoid before CrossEntropyLoss: logits bounded "
        "in (0, 1), so the model can never be confident.", sigmoid_before_cross_entropy, "output_activation"),
    Bug("nll_on_logits", "NLLLoss on raw logits: it expects log-probabilities and is unbounded below "
        "without log_softmax.", nll_on_logits, "output_activation"),
    Bug("softmax_over_batch", "log_softmax over dim=0 normalizes across the samples of a batch, not across "
        "classes.", softmax_over_batch, "batch_independence"),
    Bug("batch_mixing_view", "A reshape to (784, B) then .t() interleaves pixels of different samples.",
        batch_mixing_view, "batch_independence"),
    Bug("forward_ignores_input", "forward multiplies x by 0: every sample gets the same output.",
        forward_ignores_input, "input_dependence"),
    Bug("detached_features", "The feature extractor's output is .detach()ed: only the head trains.",
        detached_features, "param_grads"),
    Bug("huge_init", "Weights drawn with std 1 (about 30x kaiming): the loss at init is huge.",
        huge_init, "loss_at_init"),
    Bug("dead_relus", "The first layer's bias starts at -10: every ReLU outputs 0 and passes no gradient.",
        dead_relus, "dead_activations"),
    Bug("vanishing_gradients", "Eleven stacked sigmoids with a tiny init: the first layers get almost no "
        "gradient.", vanishing_gradients, "grad_norms"),
    Bug("missing_zero_grad", "train_step never calls optimizer.zero_grad(): gradients add up over steps.",
        missing_zero_grad, "zero_grad"),
    Bug("zero_grad_after_backward", "zero_grad() is called between backward() and step(): every step is "
        "taken with zero gradients.", zero_grad_after_backward, "param_grads"),
    Bug("step_never_called", "train_step computes gradients but never calls optimizer.step().",
        step_never_called, "step_updates"),
    Bug("loss_detached", "The outputs are detached before the loss: backward reaches no parameter.",
        loss_detached, "param_grads"),
    Bug("loss_scale_not_undone", "The loss is divided by 65536 (a leftover fp16 loss scale) under SGD: every "
        "step is 65536x too small, so nothing is learned.", loss_scale_not_undone, "overfit_batch", "full"),
    Bug("eval_mode_in_step", "train_step calls model.eval(): dropout is off during training.",
        eval_mode_in_step, "train_mode"),
    Bug("eval_mode_not_undone", "The model is left in eval mode after a validation pass: BatchNorm never "
        "uses batch statistics while training.", eval_mode_not_undone, "train_mode"),
    Bug("lr_zero", "The learning rate is 0: steps run and nothing changes.", lr_zero, "step_updates"),
    Bug("lr_far_too_high", "SGD with lr=1e3 (a typo for 1e-3): the first step throws the weights far away "
        "and the loss turns to NaN.", lr_far_too_high, "step_updates"),
    Bug("param_missing_from_optimizer", "The optimizer gets only the first layer's parameters: the head "
        "never trains.", param_missing_from_optimizer, "optimizer_params"),
    Bug("frozen_head", "requires_grad=False on the classifier layer: it keeps its random init.",
        frozen_head, "optimizer_params"),
    Bug("optimizer_of_another_model", "make_optimizer ignores its params and optimizes another (stale) "
        "model.", optimizer_of_another_model, "optimizer_params"),
    Bug("unnormalized_inputs", "Raw 0..255 pixels go into the model: inputs are ~100x too large.",
        unnormalized_inputs, "input_scale"),
    Bug("labels_shifted", "Labels rolled by one position relative to the images: every image has its "
        "neighbour's label.", labels_shifted, "beats_baseline", "full"),
    Bug("labels_shuffled_separately", "Images and labels shuffled with two different permutations.",
        labels_shuffled_separately, "beats_baseline", "full"),
    Bug("sorted_unshuffled_loader", "A DataLoader with shuffle=False over data stored grouped by class: "
        "each batch holds one class.", sorted_unshuffled_loader, "batch_order"),
    Bug("tensor_not_parameter", "A learnable output scale created as a plain tensor with requires_grad=True: "
        "not in model.parameters(), so never trained.", tensor_not_parameter, "registered_params"),
    Bug("adamw_decay_typo", "AdamW with weight_decay=10 (meant 1e-2): the weights shrink 1% per step.",
        adamw_decay_typo, "weight_decay"),
    Bug("class_weight_zero", "A class weight left at 0: that class is never learned.", class_weight_zero,
        "loss_classes"),
    Bug("channels_last_reshaped", "(N, H, W, C) images reshaped to (N, C, H, W) instead of permuted: the "
        "height axis is scrambled.", channels_last_reshaped, "input_layout"),
    Bug("noise_at_eval", "Noise augmentation inside forward, also in eval mode: predictions are random.",
        noise_at_eval, "eval_determinism"),
    Bug("augmentation_shuffles_images", "An augmentation in the step reorders the batch's images but not its "
        "labels: every image trains with another image's label.", augmentation_shuffles_images, "augmentation"),
    Bug("cosine_epochs_stepped_per_batch", "CosineAnnealingLR(T_max=30 epochs) stepped every batch: the lr "
        "hits 0 at step 30.", cosine_epochs_stepped_per_batch, "lr_schedule", "full"),
    Bug("conv_stack_without_activation", "Two convolutions with no activation between them and average "
        "pooling: the model is one linear map however deep.", conv_stack_without_activation, "model_linearity",
        severity="warning"),
    Bug("blocks_list_multiplied", "nn.ModuleList([Block()] * 4) holds one block four times: the four blocks "
        "share their weights.", blocks_list_multiplied, "shared_modules", severity="warning"),
    Bug("dropout_mask_without_rescale", "Dropout written by hand (h * (rand > p)) without dividing the kept "
        "units by 1 - p: eval mode sees twice the activations training saw.", dropout_mask_without_rescale,
        "train_eval_consistency"),
    Bug("dropout_p_inverted", "A drop rate of 0.1 from the config passed as p = 1 - 0.1: 90% of the hidden "
        "units are dropped.", dropout_p_inverted, "dropout_rate"),
    Bug("clip_at_step_start", "clip_grad_norm_ called right after zero_grad, before backward: it clips "
        "nothing, and SGD at a high lr runs unclipped.", clip_at_step_start, "grad_clipping"),
]

BY_NAME = {bug.name: bug for bug in CATALOG}
