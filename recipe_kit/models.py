"""The few models the course trains: small on purpose, so a CPU trains them in minutes.

    model = course_cnn(in_channels=1, num_classes=10)          # Fashion-MNIST (28x28)
    model = course_cnn(in_channels=3, num_classes=10, image_size=32)   # CIFAR-10
    init_final_bias_to_log_prior(model, train.labels, 10)     # loss at init = label entropy
    model = vgg_cnn(in_channels=1, num_classes=10, width=16)  # two convs per stage (notebook 6)
    fast = MixedPrecision(model)        # opt-in bfloat16 speed-up where bf16_is_fast(device)
"""
import os

import torch
import torch.nn as nn


def course_cnn(in_channels=1, num_classes=10, width=32, image_size=28, dropout=0.0):
    """Two conv blocks and a two-layer head: the course's default network (~0.2M parameters at width 32).

    dropout > 0 adds nn.Dropout on the flattened conv features and before the logits (notebook 4);
    it has no weights, so the same seed gives the same initial weights with or without it.
    """
    if image_size % 4:
        raise ValueError(f"image_size={image_size}: must be divisible by 4 (two 2x2 max-pools), e.g. 28 or 32.")
    s = image_size // 4  # spatial size after the two pools: 28 -> 7, 32 -> 8
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),                                                   # (B, w, s*2, s*2)
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2),                                                   # (B, 2w, s, s)
        nn.Flatten(),                                                      # (B, 2w*s*s)
        *drop, nn.Linear(2 * width * s * s, 128), nn.ReLU(),
        *drop, nn.Linear(128, num_classes),                                # (B, num_classes) logits
    )


def vgg_cnn(in_channels=1, num_classes=10, width=16, stages=2, image_size=28, hidden=256, dropout=0.0):
    """VGG-style: per stage two 3x3 conv-BN-ReLU and a 2x2 max-pool, channels doubling per stage.

    Why: the architecture notebook 3 complexifies to. Two convs per resolution see a 5x5 neighbourhood
    before each pool, and it fits faster per second of CPU than the course CNN (width 16, 2 stages:
    ~0.4M params). dropout > 0: nn.Dropout in the head, as in course_cnn (no weights, same init).
    """
    if stages < 1 or image_size >> stages < 1:
        raise ValueError(f"stages={stages}, image_size={image_size}: need 1 <= stages and image_size >= 2**stages.")
    layers, channels, size = [], in_channels, image_size
    for stage in range(stages):
        out = width * 2 ** stage
        for conv_in in (channels, out):                   # conv bias is redundant before BatchNorm
            layers += [nn.Conv2d(conv_in, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))                     # (B, out, size // 2, size // 2)
        channels, size = out, size // 2
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Flatten(),            # (B, channels * size * size)
                         *drop, nn.Linear(channels * size * size, hidden), nn.ReLU(),
                         *drop, nn.Linear(hidden, num_classes))


class MixedPrecision(nn.Module):
    """Runs `model` in bfloat16 autocast and channels_last memory layout; returns float32 logits.

    Why: an explicit opt-in speed-up. On CPUs with AMX or AVX512-BF16 (and recent GPUs) the course
    CNN trains 2.4-2.9x faster (benchmarks/speedups.py); elsewhere it can be slower, see bf16_is_fast.
    Weights stay float32 (autocast casts per op), so optimizers and checkpoints are unchanged:
    save `wrapper.model.state_dict()`.
    """
    def __init__(self, model, dtype=torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model.to(memory_format=torch.channels_last), dtype

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)                # (B, C, H, W), stored NHWC
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


def bf16_is_fast(device):
    """Whether bfloat16 autocast speeds up training on `device`: GPUs with bf16, CPUs with AMX/AVX512-BF16.

    On CPU it honours the instruction-set caps a user sets to emulate a smaller CPU
    (ATEN_CPU_CAPABILITY=avx2 or default, ONEDNN_MAX_CPU_ISA=AVX2 ...): there bfloat16 runs emulated,
    about 8x slower than float32 (measured on an AVX2-only AMD EPYC), so the answer is False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2") or not (
            onednn_cap == "ALL" or "BF16" in onednn_cap or "AMX" in onednn_cap):
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch's own probes (private: may be absent)
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def mlp(in_features, num_classes, hidden=(256,), dropout=0.0):
    """Flatten, then Linear-ReLU(-Dropout) per hidden size, then a Linear to logits."""
    layers, width = [nn.Flatten()], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def logistic_regression(in_features, num_classes):
    """The simplest baseline that can learn: one Linear layer on the flattened pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def final_linear(model):
    """The last nn.Linear in the model: the layer that produces the logits."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layer whose bias could hold the class priors.")
    return linears[-1]


@torch.no_grad()
def init_final_bias_to_log_prior(model, labels, num_classes):
    """Set the logits' bias to log(class frequency), so the untrained model predicts the label prior.

    Why: with a zero bias the initial loss is log(num_classes) and the first steps are spent just
    learning the class imbalance ("hockey stick" loss curve). With the prior in the bias, loss at
    init is the entropy of the labels. Returns the priors (num_classes,) as a tensor.
    """
    layer = final_linear(model)
    if layer.bias is None:
        raise ValueError("the last Linear has bias=False: build it with bias=True to hold the priors.")
    if layer.out_features != num_classes:
        raise ValueError(f"the last Linear has {layer.out_features} outputs but num_classes={num_classes}.")
    labels = torch.as_tensor(labels).long().cpu()
    counts = torch.bincount(labels, minlength=num_classes).float()
    if len(counts) > num_classes:
        raise ValueError(f"labels go up to {len(counts) - 1} but num_classes={num_classes}.")
    priors = counts.clamp(min=1) / counts.clamp(min=1).sum()  # an absent class gets a tiny, finite prior
    layer.bias.copy_(priors.log())
    return priors
