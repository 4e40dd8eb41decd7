"""The preflight checks. Each reads the pipeline dict built by preflight.setup, adds Problems to the
report, and returns None, or a string saying why it does not apply to this pipeline.

Severity follows magnitude: an error is a number no correct pipeline shows (thresholds calibrated on
clean MLPs, CNNs with BatchNorm, dropout, LayerNorm, residual blocks, label smoothing, SGD and
Adam(W) on Fashion-MNIST); a pipeline that is merely slow or unusual gets a warning at most.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import NotApplicable  # noqa: F401 (checks may raise it)
from .pipeline import (PROBE_SIZE, STEP_BATCH, WEIGHT_LAYERS, batches_from, call_step, cat_outputs, class_scores,
                       constant_baseline, constant_value, fed_in_step, foreign_params, fresh_model, joined, loss_floor,
                       make_optimizer_for, run_steps, trace)
from .rng import preserved_rng, seed_all

RELUS = (nn.ReLU, nn.ReLU6)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
SQUASHERS = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid, nn.Softmin, nn.Tanh)
RESHAPERS = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)
POSITIVE_OUTPUTS = (nn.Softplus, nn.ReLU, nn.Sigmoid, nn.Softmax)   # outputs that can only be rates, not logs

STEP_CALLS = 16         # most train_step calls spent waiting for optimizer.step() (accumulation steps every k)
OVERFIT_SAMPLES = 8      # the "one small batch" to memorize
OVERFIT_STEPS = 300      # most steps spent memorizing it
BASELINE_STEPS = 300     # most steps of the short run compared with an input-independent model
HELD_OUT = 512           # most pool samples held out for that comparison
RIGHT_PROB = 0.9        # a "right answer" for loss_prefers_right_answer: 90% on the label
NEGATIVE_LOSS = 1e-6    # a classification loss below -this is impossible (kl_div_on_probabilities: -0.6)
SUM_TOL = 1e-3           # rows of probabilities sum to 1, of log-probabilities logsumexp to 0, within this
MIN_OUTPUTS, MIN_BCE_OUTPUTS = 64, 16   # fewer outputs than this prove nothing about their range

# Thresholds. Each comment quotes the statistic printed by benchmarks/checks_thresholds.py (2026-11-27,
# 2000 Fashion-MNIST images, 1 thread): "clean" is its range over the 29 correct pipelines
# (correct_pipelines.py, bugs_blind.CORRECT_BLIND, bugs.clean), then its value on the bugs (bugs.py,
# bugs_heldout.py, bugs_blind.py) this threshold flags.
# input_scale: worst = max(|mean|, std) at the first weight layer (per channel for convs); clean 0.79-1.02.
INPUT_CONSTANT = 1e-6    # std / max(1, |mean|) below: every input the same (forward_ignores_input: 0)
INPUT_ERROR = 20         # worst above: unnormalized_inputs 90
INPUT_WARNING = 4        # worst above: warning
INPUT_TWICE = 2.0        # worst above (with std > 1): warning, stretched; normalized_twice 2.83, clean <= 1.12 (49)
INPUT_STD_LOW = 0.1      # std below: warning; clean std >= 0.79; divided_by_255_twice 0.0039
# loss_at_init: L = loss at init, uniform = -log(1/C), prior = label-marginal entropy. L / uniform: clean
# 0.995-1.18, unnormalized_inputs 24, huge_init 125; L / prior: clean 1.01-1.2.
INIT_ERROR_FACTOR, INIT_ERROR_MARGIN = 2, 1     # L > 2 uniform + 1 (2.43 uniform for 10 classes): error
INIT_WARN_EXCESS, INIT_WARN_MARGIN = 0.5, 0.2   # L > 1.5 uniform + 0.2: overconfident start, warning
IMBALANCE_GAP = 0.1      # uniform - prior above this share of uniform: imbalanced (inverted_class_weights: warning)
PRIOR_BEATEN, PRIOR_MARGIN = 0.2, 0.05   # L < 0.8 prior - 0.05: predicts labels before training
# output_activation: share of logits exactly 0 next to positive ones, none negative.
CLAMPED_ZEROS = 0.05     # clean 0 (23 classifiers); relu_on_logits 0.36
# input_dependence: largest output difference over 64 inputs / the outputs' size.
SAME_OUTPUT = 1e-6       # clean >= 0.14; forward_ignores_input, dead_relus, vanishing_gradients: 0
# dead_activations: share of a layer's units zero for all probe inputs; share that copy another unit.
DEAD_ERROR, DEAD_WARNING = 0.5, 0.25   # clean <= 0.01; dead_relus 1.0
DUPLICATE_UNITS = 0.5    # clean 0; constant_init 0.98
# step_updates: first update / weight of the worst weight matrix, cosine(step, gradient), loss growth.
UPHILL_COS = 0.1         # clean <= -0.37 (descent is negative)
UPDATE_ERROR = 3.0       # clean <= 0.049; sum_reduction_with_mean_lr 3.1, lr_far_too_high 442
UPDATE_HIGH = 0.5        # warning above
# Adam's step is lr * m / (sqrt(v) + eps): eps must be far below the gradients' RMS sqrt(v), or it turns
# Adam into SGD with a tiny lr. eps over the median RMS gradient of the weights, after preflight's steps
# on 600 Fashion-MNIST images: the 39 correct pipelines of all catalogs <= 4.4e-5 (lstm_rows), the other
# planted bugs <= 9.8e-5; adam_eps_one (eps 1.0) 17.8.
EPS_DOMINATES = 1.0
HOOK_CALLS = 4           # hooks counted after each of these calls: clean constant after call 1; hook per step +n
UPDATE_TINY = 1e-5       # warning below; clean >= 4.2e-4; loss_scale_not_undone 7e-7, clip_norm_far_too_small 1e-6
EXPLODE_FACTOR, EXPLODE_MARGIN = 10, 5   # last / first loss: clean <= 1.02; lr_far_too_high 1.6e12
JUMP_FACTOR, JUMP_MARGIN = 3, 1          # > 3 |first| + 1: warning
# grad_norms: |grad| / |weight| per weight matrix at init (largest), and max / min across layers (spread).
GRAD_EXPLODE = 1e3       # largest: clean <= 3.2; error above
GRAD_SPREAD_ERROR = 1e6  # spread: clean <= 13.5 (lstm_rows); constant_init 2.9e8, vanishing_gradients 5e18
GRAD_SPREAD_WARNING, GRAD_HIGH = 1e4, 30   # warning above either (largest: unnormalized_inputs 209)
# A learnable gain that starts near zero (ConvNeXt's layer scale 1e-6, ReZero's alpha 0, a zero-init last
# BatchNorm gamma) keeps the gradients of the layers behind it tiny at init, by design: it gets a gradient
# itself and grows in the first steps. Vanishing is judged with such gates opened to 1: a 0/1-D parameter,
# not a bias, with every |value| below GATE_CLOSED. ConvNeXt with layer scale: spread 7.3e6 closed, 8.4 opened.
GATE_CLOSED = 1e-3
# zero_grad: extra gradient at the second step / the first, and its cosine with the first.
# clean: exactly 0 on CPU, but 1.1e-3 with spectral_norm (its power iteration updates state in every train-mode
# forward, by design), mean teacher 6.5e-5, 55 others 0; missing_zero_grad, zero_grad_once,
# accumulation_never_zeroed 1.0, a hook added every step 0.32
ZERO_GRAD_NOISE = 1e-2
ACCUMULATE_COS = 0.9     # clean 0; the same three bugs 1.0
# batch_order: label entropy of the loader's batches / of shuffled batches.
ONE_CLASS_ENTROPY = 0.05 # shuffled batches below this (nats): one class, nothing to compare
SORTED_ERROR, SORTED_WARNING = 0.5, 0.8   # clean loader 1.21; sorted_unshuffled_loader 0.07; sampler_given_class_weights 0.72
# overfit_batch: progress = (constant-model loss - end) / (constant-model loss - floor) on 8 samples.
BELOW_FLOOR = 0.01       # (floor - end) / room above: error; clean <= -1.5e-5; l2_penalty_wrong_sign 0.057
OVERFIT_DONE = 0.05      # stop early once within 5% of the room above the floor
# Weights stored in bfloat16/float16: the share of those with a nonzero gradient that the first step left
# exactly unchanged (rounded away). float32 weights are not judged. A bfloat16 colour CNN: Adam lr 2e-4 0.30,
# 1e-3 0.007, 1e-2 0; SGD (momentum 0.9) lr 0.01 0.71, 0.05 0.31, 0.5 0.05.
LOW_PRECISION = (torch.bfloat16, torch.float16)
UNMOVED_SHARE = 0.1
# A step whose returned loss at the first call is off loss_fn's value on the same batch and weights by more
# than this share (at least 1.0 absolute) returns another quantity: CE-distillation at T^2 26.4 vs 2.3.
COMPOSITE_GAP = 0.5
DIVERGE_FACTOR, DIVERGE_MARGIN = 1.5, 0.1   # end > 1.5 max(start, constant) + 0.1: diverges (for a negative
                                            # loss such as Poisson NLL: 0.5 of its size above it)
OVERFIT_ERROR, OVERFIT_WARNING = 0.2, 0.9   # clean >= 0.889 (segmentation_bce; 0.92 in other runs: borderline);
                                            # errors <= 0 (lr_zero -0.14, loss_scale_not_undone -0.15)
# Per-position targets (segmentation): 8 images hold thousands of labels to memorize, so 300 steps get less
# far: clean 0.87 (blind2 segmentation_3class_ce), 0.889 (segmentation_bce). "Slow" warns below this instead.
OVERFIT_WARNING_DENSE = 0.75
# A train_step that augments at random (mixup, CutMix, flips) trains on a batch that changes every call: the
# trained model is then judged on the batch as given, in eval mode. Progress there: clean 0.983-0.995
# (cutmix_soft_targets, mixup_soft_targets, digits_shift_augmentation); mask_flipped_independently 0.73.
OVERFIT_WARNING_AUGMENTED = 0.9
# beats_baseline: held-out loss / the input-independent model's, after up to 300 steps; clean <= 0.897
# (digits_shift_augmentation, borderline), bugs flagged as errors >= 0.994.
BEAT_LOSS, BEAT_LOSS_REGRESSION = 0.9, 0.8  # passes below (and with accuracy above the majority's)
FAIL_ACC_GAIN = 0.25     # error when not even a quarter of the way from majority accuracy to 100%
FAIL_LOSS_REGRESSION = 0.95
# The probability loss_fn wants on a hard label at its optimum (free logits fitted for LABEL_FIT_STEPS):
# plain cross-entropy and focal losses ~1, label smoothing 0.1 0.91; label_smoothing=0.9 (meant as the
# confidence) 0.19. Error below LABEL_SHARE_MIN.
# Only judged when raising the label's logit by LABEL_PUSH beyond the fit raises the loss (MultiMarginLoss's
# optimum only needs a margin of 1, a share of ~0.23 for 10 classes, but it is flat beyond it).
LABEL_FIT_STEPS, LABEL_SHARE_MIN, LABEL_PUSH = 100, 0.5, 2.0
MEMORIZED = 0.7          # end / start of the training loss below this: the run memorizes, labels misaligned


def note(report, check, **stats):
    """Record the statistic a check compares with its thresholds, also when it passes
    (benchmarks/checks_thresholds.py reads them to show clean and buggy values)."""
    report.details.setdefault("stats", {}).setdefault(check, {}).update(stats)


def listed(names, k=5):
    names = list(dict.fromkeys(names))
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def modules_of(param_names):
    """'features.0.weight' -> 'features.0': the culprit a learner looks for is the layer."""
    return [n.rsplit(".", 1)[0] if "." in n else n for n in param_names]


# ----------------------------------------------------------------------------- shared measurements

def probe(pipe):
    """One train-mode forward of the probe samples through a fresh copy, measuring on the way:
    the first weight layer's input (the model's door), the units of every ReLU, the last module."""
    cache = pipe["cache"]
    if "probe" in cache:
        return cache["probe"]
    seen = {"door": None, "units": [], "last": None, "last_op": None, "last_weight": None, "prev": None,
            "scales": []}

    def on_call(name, module, inp, out):
        if isinstance(module, WEIGHT_LAYERS):
            if seen["door"] is None:
                seen["door"] = (name, module, inp.detach().clone() if inp is not None else None)
            elif (isinstance(module, nn.Linear) and inp is not None and inp.ndim == 2
                  and seen["prev"] is not None and not isinstance(seen["prev"][1], RELUS)
                  and seen["prev"][2] == tuple(inp.shape)):   # an activation ran between two layers, e.g. F.relu
                seen["units"].append((f"activation before '{name}'", dead_units(inp, 1)))
            seen["last_weight"] = module
            if out is not None and out.numel() > 1:
                seen["scales"].append((name, out.detach().double().std().item()))
        if isinstance(module, RELUS) and out is not None and out.ndim >= 2:
            dim = 1 if out.ndim != 3 or isinstance(seen["last_weight"], CONVS) else 2
            seen["units"].append((name, dead_units(out, dim)))
        seen["prev"] = (name, module, None if out is None else tuple(out.shape))
        seen["last"] = (name, module)
        if not isinstance(module, RESHAPERS):                 # the last module that computes something
            seen["last_op"] = (name, module)

    model = fresh_model(pipe).train()
    x, y = pipe["x"][:PROBE_SIZE], pipe["y"][:PROBE_SIZE]
    with torch.no_grad():
        out = trace(model, x, on_call)
        loss = float(pipe["loss_fn"](out, y))
    cache["probe"] = dict(seen, out=out, loss=loss, x=x, y=y)
    return cache["probe"]


def dead_units(t, dim):
    """(units that are zero for every sample and position, units, live units that compute the same
    function as another live unit) along `dim`. Copies are found by two random projections of each
    unit's outputs (first 4096 values), so the cost stays linear in the units."""
    rows = t.movedim(dim, 0).reshape(t.shape[dim], -1)
    alive = (rows != 0).any(1)
    live = rows[alive][:, :4096].double()
    copies = 0
    if len(live) >= 2:
        g = torch.Generator().manual_seed(0)
        sig = live @ torch.randn(live.shape[1], 2, generator=g, dtype=torch.float64).to(live.device)
        sig = sig[sig[:, 0].argsort()]
        gap = (sig[1:] - sig[:-1]).abs().max(1).values
        copies = int((gap <= 1e-5 * sig.abs().max().clamp_min(1e-12)).sum())
    return int((~alive).sum()), int(t.shape[dim]), copies


def steps(pipe):
    """The learner's train_step on a fresh copy, called until optimizer.step() ran 3 times (at most
    STEP_CALLS calls), recorded (see run_steps); cached. A string when no step may run: an optimizer
    holding another model's tensors would change it."""
    cache = pipe["cache"]
    if "steps" not in cache:
        model = fresh_model(pipe)
        opt = make_optimizer_for(pipe, model)
        if foreign_params(model, opt):
            cache["steps"] = "make_optimizer ignores its params (see optimizer_params): a step would change another model"
        else:
            size = min(pipe["batch_size"], 64)
            rec = run_steps(pipe, model, opt, batches_from(pipe, 0, STEP_CALLS, size), until_steps=3)
            first = next((i for i, k in enumerate(rec["step_calls"]) if k), None)   # the call that stepped first
            cache["steps"] = dict(rec, model=model, opt=opt, first_step=first)
    return cache["steps"]


def evaluate(model, x, y, pipe):
    """Held-out loss, and accuracy for classification, in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = cat_outputs([model(x[i:i + 256]) for i in range(0, len(x), 256)])
        loss = float(pipe["loss_fn"](out, y))
        acc = (class_scores(out).argmax(1) == y.reshape(-1)).float().mean().item() if pipe["num_classes"] else None
    model.train(was)
    return loss, acc


# ----------------------------------------------------------------------------- forward-only checks

def check_input_scale(pipe, report):
    door = probe(pipe)["door"]
    if door is None:
        return "no Linear/Conv/RNN layer found whose input to measure"
    name, module, x = door
    if x is None or not x.is_floating_point():
        return f"the first layer '{name}' takes {getattr(x, 'dtype', 'no')} inputs (indices, not measurements)"
    x = x.double()
    mean, std = x.mean().item(), x.std().item()
    what = f"inputs reaching the first layer '{name}' have mean {mean:.3g} and std {std:.3g}"
    worst = max(abs(mean), std)
    if isinstance(module, CONVS) and x.ndim >= 3:       # per channel: one badly scaled channel is enough
        per = x.movedim(1, 0).reshape(x.shape[1], -1)
        means, stds = per.mean(1), per.std(1)
        c = int(torch.maximum(means.abs(), stds).argmax())
        if max(abs(means[c].item()), stds[c].item()) > worst:
            worst = max(abs(means[c].item()), stds[c].item())
            what += f" (channel {c}: mean {means[c].item():.3g}, std {stds[c].item():.3g})"
    hint = ("Standardize in the data pipeline: x = (x/255 - mean) / std with the training set's channel "
            "statistics (rk.channel_stats); back to stage 1.")
    details = {"mean": mean, "std": std}
    note(report, "input_scale", worst=worst, std=std)
    if step_changes_scale(pipe, report):
        return None
    if std < INPUT_CONSTANT * max(1.0, abs(mean)):
        report.add("input_scale", "error", what + ": every input is the same, so the model can learn nothing "
                   "from them.", "The inputs lost their content (all zeros? a constant fill?); stage 1.", name, **details)
    elif worst > INPUT_ERROR:
        report.add("input_scale", "error", what + " - far from standardized (mean 0, std 1); raw 0..255 pixels "
                   "look like this. Large inputs saturate activations and need a tiny lr.", hint, name, **details)
    elif worst > INPUT_WARNING or std < INPUT_STD_LOW:
        report.add("input_scale", "warning", what + " - not standardized (mean 0, std 1): training will "
                   "be slower and more sensitive to lr.", hint, name, **details)
    elif worst > INPUT_TWICE and std > 1:
        report.add("input_scale", "warning", what + f" - spread {std:.3g}x wider than standardized inputs (std 1): "
                   "data standardized twice (or by a std far smaller than its own) look like this, since "
                   "dividing standardized values by the data's std again (0.2 .. 0.5 for pixels in 0..1) stretches "
                   "them 2-5x.", "Standardize once, with the statistics of the data as it is at that point "
                   "(rk.channel_stats on the raw training images); stage 1.", name, **details)


# What train_step feeds the model against the inputs it is given (which evaluation feeds it): per channel,
# std ratio and mean shift in the given inputs' std. Correct augmentation (flips, crops, erasing, noise,
# mixup, cutmix) keeps them near 1 and 0. Measured over every catalog's correct pipelines: see
# docs/checks_heldout.md, section 15. A transform meant for 0..1 images applied to standardized ones
# (ColorJitter clamps to [0, 1]) changes them: color_jitter_after_normalize std 0.41x, mean shift 0.4.
STEP_SCALE_WARNING, STEP_SHIFT_WARNING = 2.0, 0.5


def step_changes_scale(pipe, report):
    """True (and a warning) when train_step feeds the model inputs on another scale than the inputs it is
    given: the model then trains on one distribution and is evaluated on another."""
    x = pipe["x"]
    if not x.is_floating_point() or x.ndim < 2:
        return False
    seen = [t for inputs, _ in fed_in_step(pipe, batches_from(pipe, 0, 2, STEP_BATCH)) for t in inputs
            if t.shape[1:] == x.shape[1:]]
    if not seen:
        return False
    per = lambda t: t.double().movedim(1, 0).reshape(t.shape[1], -1) if t.ndim >= 3 else t.double().reshape(1, -1)
    given, fed = per(x[:2 * STEP_BATCH].cpu()), per(torch.cat(seen))
    std = given.std(1).clamp_min(1e-12)
    ratio = fed.std(1) / std
    shift = (fed.mean(1) - given.mean(1)).abs() / std
    varies = given.std(1) > 0                  # a constant channel (a flag, padding) has no scale to keep
    if not varies.any():
        return False
    c = int(torch.where(varies, torch.maximum(ratio.log().abs(), shift), -1.0).argmax())
    note(report, "input_scale", step_std_ratio=ratio[c].item(), step_mean_shift=shift[c].item())
    if max(ratio[c].item(), 1 / max(ratio[c].item(), 1e-12)) < STEP_SCALE_WARNING and shift[c] < STEP_SHIFT_WARNING:
        return False
    where = f" (channel {c})" if x.ndim >= 3 and x.shape[1] > 1 else ""
    report.add("input_scale", "warning", f"train_step feeds the model inputs on another scale than the ones it is "
               f"given{where}: std {ratio[c].item():.2g}x theirs and mean moved by {shift[c].item():.2g} of their std, "
               f"range {fed[c].min().item():.3g}..{fed[c].max().item():.3g} vs {given[c].min().item():.3g}.."
               f"{given[c].max().item():.3g}. The model trains on one distribution and is evaluated on another: a "
               "transform made for 0..1 images applied after standardizing (ColorJitter clamps to [0, 1]), or "
               "normalization done in the step only.", "Apply such transforms before standardizing, and feed "
               "train and eval the same preprocessing; stage 1 (plot a batch as train_step feeds it).", "train_step")
    return True


def several_outputs(pipe):
    """Why a check that reads one tensor of class scores does not apply to a model with several heads."""
    return f"the model returns {pipe['several_outputs']}: no single tensor of class scores to read"


def check_loss_at_init(pipe, report):
    kind, C = pipe["loss_kind"], pipe["num_classes"]
    if pipe["several_outputs"]:
        return several_outputs(pipe)
    if kind is None:
        if is_bce_with_logits(pipe["loss_fn"]):
            return binary_loss_at_init(pipe, report)
        return "loss_fn is not a cross-entropy or NLL loss: no known loss at init"
    pr = probe(pipe)
    scores = class_scores(pr["out"]).float()
    if kind["name"] == "nll" and scores.logsumexp(1).abs().max() > SUM_TOL:
        return "the outputs are not log-probabilities (see output_activation)"
    y = pr["y"]
    unsure = torch.zeros((len(y),) + pipe["out_shape"], device=y.device)
    if kind["name"] == "nll":
        unsure -= math.log(C)
    uniform = float(pipe["loss_fn"](unsure, y))           # every class equally likely: -log(1/C)
    seen = torch.cat(pipe["stream"]).to(y.device) if pipe["stream"] else y   # a loader's sampler may rebalance
    prior = constant_value(pipe, constant_baseline(pipe, seen), seen)   # label-marginal entropy
    L = pr["loss"]
    spread = (scores - scores.mean(1, keepdim=True)).std().item()
    details = {"loss": L, "uniform": uniform, "prior": prior, "logit_std": spread}
    note(report, "loss_at_init", loss_over_uniform=L / uniform, loss_over_prior=L / max(prior, 1e-12))
    said = (f"loss at init is {L:.3f}; a model that starts unsure gets -log(1/{C}) = {uniform:.3f} "
            f"(the label-marginal entropy is {prior:.3f})")
    if not math.isfinite(L):
        report.add("loss_at_init", "error", said + ": the loss is not finite before any step.",
                   "Look for log(0), division by zero or NaN weights in the model; stage 2.", "", **details)
    elif L > INIT_ERROR_FACTOR * uniform + INIT_ERROR_MARGIN:
        report.add("loss_at_init", "error", said + f". The outputs are far too confident: their spread across "
                   f"classes is {spread:.3g} (about 0.1-1 at a good init), from too-large initial weights or inputs.",
                   "Use the default (kaiming) init or scale the last layer's weights down, check input scaling; "
                   "stage 2 (verify loss @ init).", "", **details)
    elif L > uniform + INIT_WARN_EXCESS * uniform + INIT_WARN_MARGIN:
        report.add("loss_at_init", "warning", said + f": the outputs start overconfident (spread {spread:.3g}).",
                   "Scale the last layer's init down; stage 2 (verify loss @ init).", "", **details)
    elif uniform - prior > IMBALANCE_GAP * uniform and abs(L - uniform) < abs(L - prior) and y.ndim == 1:
        # per-sample labels only: per-position labels (segmentation) are imbalanced by nature (background),
        # and a dense model starting uniform is the standard init; its bias learns the frequencies at once
        report.add("loss_at_init", "warning", said + ": the classes are imbalanced and the model starts at "
                   "uniform, so the first steps only learn the class frequencies.",
                   "Initialize the last layer's bias to log(class prior); stage 2 (init well).", "", **details)
    elif L < prior - PRIOR_BEATEN * prior - PRIOR_MARGIN:
        report.add("loss_at_init", "warning", said + ": the model predicts labels before training - "
                   "pretrained, or the inputs leak the labels?",
                   "If the model is not pretrained, look for the label inside the inputs; stage 1.", "", **details)


def binary_loss_at_init(pipe, report):
    """Binary cross-entropy on logits (binary, multi-label, per-pixel): outputs of 0 say p = 0.5 for every
    label, and a good init starts near that loss or below it (a bias set to the positive rate's log-odds).
    Far above it, the outputs start confidently wrong: a prior-bias init with its sign flipped, or weights
    too large."""
    pr = probe(pipe)
    out, y, L = pr["out"], pr["y"], pr["loss"]
    unsure = float(pipe["loss_fn"](torch.zeros_like(out), y))
    p = torch.sigmoid(out.float()).mean().item()
    details = {"loss": L, "uniform": unsure, "mean_probability": p}
    note(report, "loss_at_init", loss_over_uniform=L / max(unsure, 1e-12))
    said = (f"loss at init is {L:.3f}; outputs of 0 (p = 0.5 for every label) get {unsure:.3f}; the mean "
            f"predicted probability is {p:.2f} where {float(y.float().mean()):.2f} of the targets are positive")
    if not math.isfinite(L):
        report.add("loss_at_init", "error", said + ": the loss is not finite before any step.",
                   "Look for log(0), division by zero or NaN weights in the model; stage 2.", "", **details)
    elif L > unsure + INIT_WARN_EXCESS * unsure + INIT_WARN_MARGIN:     # below the error bound (unsure >= 0)
        severe = L > INIT_ERROR_FACTOR * unsure + INIT_ERROR_MARGIN
        report.add("loss_at_init", "error" if severe else "warning", said + ": the outputs start confidently "
                   "wrong - an output bias set to the prior's log-odds with the sign flipped (log(p/(1-p)) is "
                   "negative for a rare positive class), or last-layer weights too large.",
                   "Init the last bias to log(p/(1-p)) of the positive rate p, or leave it at 0; stage 2 "
                   "(verify loss @ init).", "", **details)


def check_output_activation(pipe, report):
    kind = pipe["loss_kind"]
    if pipe["several_outputs"]:
        return several_outputs(pipe)
    if kind is None and is_bce_with_logits(pipe["loss_fn"]):
        out = probe(pipe)["out"]
        if bool(((out > 0) & (out < 1)).all()) and out.numel() >= MIN_BCE_OUTPUTS:
            report.add("output_activation", "error", f"every output lies in (0, 1) ({out.numel()} outputs) and "
                       "BCEWithLogitsLoss applies a sigmoid itself: the model's sigmoid is applied twice, so "
                       "predicted probabilities stay within (0.5, 0.73) and gradients shrink.",
                       "Remove the final sigmoid (feed logits), or use nn.BCELoss on probabilities; stage 2.",
                       probe(pipe)["last"][0] if isinstance(probe(pipe)["last"][1], SQUASHERS) else "forward")
        return None
    if kind is None and is_bce_on_probabilities(pipe["loss_fn"]) and labels_compete(pipe, report) \
            and pipe["num_classes"] is None:
        return None
    if kind is None and pipe["num_classes"] is not None:
        return loss_prefers_right_answer(pipe, report)
    if kind is None:
        return None if rate_into_log_loss(pipe, report) else bounded_output_vs_targets(pipe, report)
    pr = probe(pipe)
    out, C = pr["out"].float(), pipe["num_classes"]
    s = class_scores(out)
    probs = bool((s >= 0).all()) and (s.sum(1) - 1).abs().max().item() < SUM_TOL
    logprobs = s.logsumexp(1).abs().max().item() < SUM_TOL
    over_batch = out.ndim == 2 and len(out) > 2 and (((out >= 0).all() and (out.sum(0) - 1).abs().max() < SUM_TOL)
                                                     or out.logsumexp(0).abs().max() < SUM_TOL)
    in_unit = bool(((s > 0) & (s < 1)).all()) and s.numel() >= MIN_OUTPUTS
    cut = (s == 0) & (s > 0).any(1, keepdim=True)       # zeros next to positive logits: a clamp, not symmetry
    clamped = bool((s >= 0).all()) and cut.float().mean().item() >= CLAMPED_ZEROS and s.numel() >= MIN_OUTPUTS
    note(report, "output_activation", clamped_zeros=cut.float().mean().item() if bool((s >= 0).all()) else 0.0)
    last_name, last_module = pr["last"] or ("", None)
    where = last_name if isinstance(last_module, SQUASHERS) else "forward"
    floor = math.log(1 + (C - 1) / math.e)   # best cross-entropy when every logit is in [0, 1]
    rows = f"over {s.shape[0]} rows of {C} outputs"
    if over_batch:
        report.add("output_activation", "error", f"the outputs are normalized over dim 0, the batch ({rows}): "
                   "softmax/log_softmax was taken across samples instead of across classes.",
                   "Use dim=1 (or dim=-1) in softmax/log_softmax; stage 2.", where)
    elif kind["name"] == "cross_entropy" and probs:
        report.add("output_activation", "error", f"the model outputs probabilities (every row is >= 0 and sums "
                   f"to 1, {rows}) but CrossEntropyLoss applies log_softmax itself: it reads them as logits "
                   f"squashed into [0, 1], so the loss cannot go below {floor:.2f} and gradients shrink.",
                   "Remove the final softmax and feed raw logits (apply softmax only to read probabilities); stage 2.",
                   where)
    elif kind["name"] == "cross_entropy" and in_unit:
        report.add("output_activation", "error", f"every output lies in (0, 1) ({rows}), e.g. a sigmoid before "
                   f"CrossEntropyLoss, which expects unbounded logits: the loss cannot go below {floor:.2f}.",
                   "Remove the final sigmoid and feed raw logits; stage 2.", where)
    elif kind["name"] == "cross_entropy" and clamped:
        zeros = cut.float().mean().item()
        report.add("output_activation", "error", f"no logit is negative and {zeros:.0%} are exactly 0 ({rows}): "
                   "a ReLU (or clamp) ends the model. Logits must be free to go negative, and a class whose "
                   "logit is clamped at 0 gets no gradient for that input.",
                   "Remove the final ReLU and feed raw logits; stage 2.", where if where != "forward" else
                   (last_name or "forward"))
    elif kind["name"] == "cross_entropy" and (bound := logits_bounded(pipe)) is not None:
        least = math.log(1 + (C - 1) * math.exp(-2 * BOUND_LIMIT))
        report.add("output_activation", "error", f"the logits stay within +-{bound:.2g} whatever the weights are "
                   f"(every parameter scaled by {BOUND_SCALE:g}: still within +-{BOUND_LIMIT:g}, {rows}); even at "
                   f"+-{BOUND_LIMIT:g} cross-entropy cannot get below {least:.2f}, so the model can never be "
                   "confident: a cosine (normalized) classifier without its scale, or a tanh/normalization before "
                   "the loss.",
                   "Multiply cosine logits by a scale s (16-64, fixed or learned) or remove the bounding op; stage 2.",
                   where if where != "forward" else (last_name or "forward"))
    elif kind["name"] == "nll" and probs:
        report.add("output_activation", "error", f"NLLLoss gets probabilities (rows sum to 1, {rows}) but expects "
                   "log-probabilities: it only picks -output[y], so the loss is bounded in [-1, 0] and meaningless.",
                   "Use log_softmax(dim=1) instead of softmax, or raw logits with CrossEntropyLoss; stage 2.", where)
    elif kind["name"] == "nll" and not logprobs:
        lse = s.logsumexp(1)
        report.add("output_activation", "error", f"NLLLoss gets raw logits: logsumexp of each row should be 0 for "
                   f"log-probabilities but ranges {lse.min().item():.2f}..{lse.max().item():.2f} ({rows}). NLLLoss only "
                   "picks -output[y], so the loss is unbounded below and training pushes logits to infinity.",
                   "Add log_softmax(dim=1) at the end of the model, or use CrossEntropyLoss on the logits; stage 2.",
                   where)


# Logits that no weight can push past about 1 (a cosine classifier without its scale): scaling every parameter
# by BOUND_SCALE leaves the largest |logit| within BOUND_LIMIT and below BOUND_GROWTH x what it was. Unbounded
# logits grow with the last layer's weights, a learned scale or temperature (BatchNorm nets through their last
# Linear; nets whose signal vanishes at init by BOUND_SCALE ** depth).
BOUND_SCALE, BOUND_LIMIT, BOUND_GROWTH = 10.0, 1.5, 2.0


def logits_bounded(pipe):
    """The bound on |logit| when no parameter can raise it (the largest |logit| seen), else None."""
    model = fresh_model(pipe).eval()
    x = pipe["x"][:PROBE_SIZE]
    with torch.no_grad():
        before = class_scores(model(x)).abs().max().item()
        if before > BOUND_LIMIT:
            return None
        for p in model.parameters():
            p.mul_(BOUND_SCALE)
        after = class_scores(model(x)).abs().max().item()
    grew = not after < BOUND_GROWTH * before             # logits near 0 (dead or vanishing) still grow
    return None if grew or after > BOUND_LIMIT or not before > 1e-3 else max(before, after)


# A regression model's last module bounds its outputs (Sigmoid: (0, 1), Tanh: (-1, 1)); an error when more than
# OUT_OF_RANGE of the targets lie outside: those can never be reached. Standardized targets under a sigmoid: 50%.
OUT_OF_RANGE = 0.1
BOUNDS = ((nn.Sigmoid, 0.0, 1.0), (nn.Softmax, 0.0, 1.0), (nn.Tanh, -1.0, 1.0))


def rate_into_log_loss(pipe, report):
    """True (and an error) when PoissonNLLLoss reads the output as log(rate) (log_input=True, its default)
    but the model ends in an activation that makes it a rate (>= 0): exp(output) >= 1, so rates below 1
    are out of reach and the model learns log(count) in a unit it was not built for."""
    loss = pipe["loss_fn"]
    last_name, last = probe(pipe)["last"] or ("", None)
    if not (isinstance(loss, nn.PoissonNLLLoss) and loss.log_input and isinstance(last, POSITIVE_OUTPUTS)):
        return False
    report.add("output_activation", "error", f"PoissonNLLLoss(log_input=True) reads the output as log(rate), but "
               f"the model ends in {type(last).__name__} ('{last_name}'), which makes the output a rate (>= 0): the "
               "loss exponentiates it again, so predicted rates cannot go below 1 and the output learns log(count) "
               "through an activation built for a rate.", "Drop the final activation and read the rate as "
               "exp(output), or keep it and pass PoissonNLLLoss(log_input=False); stage 2.", last_name)
    return True


def bounded_output_vs_targets(pipe, report):
    """Regression targets must lie where the model's outputs can go."""
    pr = probe(pipe)
    name, module = pr["last_op"] or ("", None)
    bound = next(((lo, hi) for kind, lo, hi in BOUNDS if isinstance(module, kind)), None)
    y = pipe["y"]
    if bound is None or not y.is_floating_point() or y.shape[1:] != pr["out"].shape[1:]:
        return "loss_fn is not a cross-entropy or NLL loss, and no bounded output meets float targets"
    lo, hi = bound
    outside = ((y < lo) | (y > hi)).float().mean().item()
    note(report, "output_activation", targets_out_of_range=outside)
    if outside > OUT_OF_RANGE:
        report.add("output_activation", "error", f"the model ends in {type(module).__name__}, so its outputs lie in "
                   f"({lo:g}, {hi:g}), but {outside:.0%} of the targets lie outside (range {y.min().item():.3g}.."
                   f"{y.max().item():.3g}): those can never be reached, and the loss stalls on them.",
                   f"Remove the final {type(module).__name__} for unbounded (e.g. standardized) targets, or scale "
                   "the targets into its range; stage 2.", name)


def scores_for(pipe, y, right):
    """Logits that put probability RIGHT_PROB on the label (right=True) or spread it evenly (uniform)."""
    C = pipe["num_classes"]
    hot = F.one_hot(y.clamp(0, C - 1), C).movedim(-1, 1).float()
    return hot * math.log(RIGHT_PROB * (C - 1) / (1 - RIGHT_PROB)) if right else torch.zeros_like(hot)


def loss_prefers_right_answer(pipe, report):
    """Any classification loss, however written, is >= 0 and lower for the right answer than for an unsure
    one: loss_fn on uniform logits and on logits that give the label RIGHT_PROB. A negative loss is a
    divergence or likelihood fed the wrong kind of input (F.kl_div wants log-probabilities)."""
    y = pipe["y"][:PROBE_SIZE]
    try:
        with torch.no_grad():
            uniform, right = (float(pipe["loss_fn"](scores_for(pipe, y, r), y)) for r in (False, True))
    except Exception as e:
        return f"loss_fn did not take (B, C) logits with the labels: {type(e).__name__}"
    note(report, "output_activation", loss_uniform=uniform, loss_right=right)
    said = (f"loss_fn gives {uniform:.3g} for uniform logits and {right:.3g} for logits that put "
            f"{RIGHT_PROB:.0%} on the right class")
    if min(uniform, right) < -NEGATIVE_LOSS:
        report.add("output_activation", "error", said + ": a classification loss below 0 cannot be a "
                   "cross-entropy or a divergence of probabilities. A loss fed probabilities where it expects "
                   "log-probabilities does this: F.kl_div(input, target) and NLLLoss want log_softmax outputs.",
                   "Pass F.log_softmax(logits, 1) to kl_div / NLLLoss (or use CrossEntropyLoss on the logits); "
                   "stage 2.", "loss_fn", uniform=uniform, right=right)
    elif right >= uniform:
        report.add("output_activation", "error", said + ": the loss does not fall when the prediction becomes "
                   "right, so minimizing it does not train a classifier (a sign error, or inputs and targets "
                   "swapped in the loss).", "Check the loss's sign and its argument order; stage 2.", "loss_fn",
                   uniform=uniform, right=right)
    return None


def labels_compete(pipe, report):
    """Binary cross-entropy scores each output as an independent yes/no: several labels can be true at once.
    Outputs whose every row sums to 1 (a softmax) make them compete, so multi-hot targets cannot be fitted.
    Returns True when it could judge (several outputs per sample, float targets of their shape)."""
    out, y = probe(pipe)["out"].float(), probe(pipe)["y"]
    if out.ndim < 2 or out.shape[1] < 2 or tuple(y.shape) != tuple(out.shape) or not y.is_floating_point():
        return False
    sums, hot = out.sum(1), y.sum(1)
    normalized = bool((out >= 0).all()) and (sums - 1).abs().max().item() < SUM_TOL
    several = (hot - 1).abs().max().item() > SUM_TOL        # rows with 0 or >= 2 true labels: independent labels
    note(report, "output_activation", row_sum_spread=(sums - 1).abs().max().item())
    if normalized and several:
        where = probe(pipe)["last"][0] if isinstance(probe(pipe)["last"][1], SQUASHERS) else "forward"
        report.add("output_activation", "error", f"binary cross-entropy scores each of the {out.shape[1]} outputs as "
                   f"an independent yes/no, but every row of outputs sums to 1 (a softmax over dim 1) while the "
                   f"targets have {hot.min().item():.3g}..{hot.max().item():.3g} true labels per sample: the labels "
                   "compete, so two true labels can never both get a high probability.",
                   "For multi-label targets use a sigmoid per output (or raw logits with nn.BCEWithLogitsLoss), "
                   "not a softmax; stage 2.", where)
    return True


def is_bce_on_probabilities(loss_fn):
    """Does loss_fn compute binary cross-entropy on probabilities (nn.BCELoss or its equal)?"""
    p = torch.rand(16, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    return isinstance(loss_fn, nn.BCELoss) or computes(loss_fn, F.binary_cross_entropy, p)


def is_bce_with_logits(loss_fn):
    """Does loss_fn compute binary cross-entropy on logits? Found by calling it, like loss_kind."""
    z = torch.randn(16, generator=torch.Generator().manual_seed(0)) * 2
    return isinstance(loss_fn, nn.BCEWithLogitsLoss) or computes(loss_fn, F.binary_cross_entropy_with_logits, z)


def computes(loss_fn, reference, outputs):
    """Does loss_fn(outputs, t) equal reference(outputs, t) for 16 random binary targets t?"""
    t = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1)).float()
    try:
        with torch.no_grad():
            return abs(float(loss_fn(outputs, t)) - reference(outputs, t).item()) < 1e-5
    except Exception:
        return False


def check_input_dependence(pipe, report):
    x = pipe["x"][:64]
    flat = x.reshape(len(x), -1)
    if len(x) < 2 or bool((flat == flat[:1]).all()):
        return "the sampled inputs are all identical"
    culprit = []

    def varies(t):
        return t is not None and t.ndim >= 1 and t.shape[0] == len(x) and bool((t != t[:1]).any())

    def on_call(name, module, inp, out):
        if culprit:
            return
        if isinstance(module, WEIGHT_LAYERS) and inp is not None and not varies(inp):
            culprit.append(f"forward code before '{name}'")   # x was replaced before this layer saw it
        elif varies(inp) and out is not None and out.shape[:1] == inp.shape[:1] and not varies(out):
            culprit.append(name)

    model = fresh_model(pipe).eval()
    with torch.no_grad():
        out = joined(trace(model, x, on_call)).float().reshape(len(x), -1)
    spread = (out - out[:1]).abs().max().item()
    scale = out.abs().max().item()
    note(report, "input_dependence", relative_spread=spread / max(scale, 1e-30))
    if spread > SAME_OUTPUT * scale:
        return None
    if culprit and zero_weights(model, culprit[0]):
        return f"'{culprit[0]}' starts with all-zero weights (a zero-init layer), so the outputs cannot vary yet"
    report.add("input_dependence", "error", f"the model gives the same output for all {len(x)} different "
               f"inputs (largest difference {spread:.2g} on outputs of size {scale:.2g}): forward ignores x, "
               "or an input path is zeroed or replaced (or every ReLU is dead).",
               "Check that forward uses its argument x all the way to the output; stage 2.",
               culprit[0] if culprit else "forward")


def zero_weights(model, name):
    """True for a layer initialized to zero on purpose (e.g. a zero-init head): it learns from step 1."""
    try:
        weight = getattr(model.get_submodule(name), "weight", None)
    except AttributeError:
        return False
    return isinstance(weight, torch.Tensor) and weight.requires_grad and not weight.any()


def check_batch_independence(pipe, report):
    """Karpathy's check: changing sample 0 may change output 0 only (eval mode, so BatchNorm is per-sample)."""
    x = pipe["x"][:8]
    flat = x.reshape(len(x), -1)
    other = [k for k in range(1, len(x)) if bool((flat[k] != flat[0]).any())]
    if not other:
        return "needs at least two different samples"
    x2 = x.clone()
    x2[0] = x[other[0]]
    model = fresh_model(pipe).eval()
    runs = []
    for batch in (x, x2):
        calls = []
        seed_all(pipe["seed"])               # the same random draws: only the change of sample 0 differs
        with torch.no_grad():
            out = joined(trace(model, batch, lambda n, m, i, o: calls.append((n, i, o))))
        runs.append((out, calls))
    (out1, calls1), (out2, calls2) = runs
    if torch.equal(out1, out2):
        return "changing a sample changes no output (see input_dependence)"
    leak = rows_differ(out1, out2)
    if not leak:
        return None
    report.add("batch_independence", "error", f"changing sample 0 changed the outputs of {leak} of the other "
               f"{len(x) - 1} samples in the batch (eval mode): samples mix across the batch dimension, "
               "e.g. a view/reshape/permute that moves the batch axis, or a softmax/mean over dim 0.",
               "Reshape with x.flatten(1) or x.view(x.size(0), -1), keep dim 0 as the batch in every op; stage 2.",
               mixing_place(calls1, calls2, len(x)))


def rows_differ(a, b):
    """How many rows other than row 0 differ between two outputs (0 if the shapes do not allow telling)."""
    if a is None or b is None or a.shape != b.shape or a.ndim == 0:
        return 0
    d = (a[1:] - b[1:]).abs().reshape(len(a) - 1, -1).amax(1)
    return int((d > 1e-5 * (a.abs().max() + 1e-12)).sum())


def mixing_place(calls1, calls2, B):
    """The first module whose outputs for the unchanged samples differ: it, or the code just before it."""
    prev = None
    for (name, i1, o1), (_, i2, o2) in zip(calls1, calls2):
        if o1 is not None and o1.ndim and o1.shape[0] != B:
            return f"'{name}' (its output has {o1.shape[0]} rows for {B} samples)"
        if rows_differ(o1, o2):
            return f"forward code before '{name}'" + (f" (after '{prev}')" if prev else "") \
                if rows_differ(i1, i2) or (i1 is not None and i1.ndim and i1.shape[0] != B) else name
        prev = name
    return f"forward code after '{prev}'" if prev else "forward"


def check_dead_activations(pipe, report):
    pooled = channels_with_one_gradient(pipe)
    if pooled:
        name, channels = pooled
        report.add("dead_activations", "error", f"all {channels} channels of '{name}' get exactly the same gradient "
                   "at every position: what follows averages (or sums) them over the channel axis, so the "
                   "layer acts like one channel. Typically global pooling over dim 1 (channels) where dims (2, 3) "
                   "(height, width) were meant.", "Pool over the spatial axes: x.mean((2, 3)) or "
                   "nn.AdaptiveAvgPool2d(1) + nn.Flatten(); stage 2.", name)
    units = probe(pipe)["units"]
    if not units:
        return None if pooled else "no ReLU found"
    n = PROBE_SIZE if len(pipe["x"]) >= PROBE_SIZE else len(pipe["x"])
    counts = {}
    note(report, "dead_activations", dead=max(d / t for _, (d, t, _) in units),
         copies=max(c / t for _, (_, t, c) in units))
    for name, (dead, total, copies) in units:
        counts[name] = counts.get(name, 0) + 1
        label = name if counts[name] == 1 else f"{name} (call {counts[name]})"
        frac = dead / total
        said = f"{dead} of {total} units of {label} output zero for all {n} probe inputs ({frac:.0%})"
        hint = ("Dead ReLUs pass no gradient and never recover: look for a large negative bias or weight init, "
                "unnormalized inputs or a too-high lr; re-init (kaiming, bias 0) or use BatchNorm/LeakyReLU; stage 2.")
        if frac >= DEAD_ERROR and dead >= 2:
            report.add("dead_activations", "error", said + ": they are dead at init.", hint, label, dead_fraction=frac)
        elif frac >= DEAD_WARNING and dead >= 2:
            report.add("dead_activations", "warning", said + ".", hint, label, dead_fraction=frac)
        if copies >= 2 and copies / total >= DUPLICATE_UNITS:
            report.add("dead_activations", "error", f"{copies} of {total} units of {label} compute the same function "
                       f"as another unit for all {n} probe inputs: their weights start equal (a constant init), so "
                       "they get equal gradients and stay copies forever - the layer acts like one unit.",
                       "Initialize weights randomly (the default kaiming init, or nn.init.kaiming_normal_); only "
                       "biases may start constant; stage 2.", label, duplicate_fraction=copies / total)


def channels_with_one_gradient(pipe):
    """(module name, channels) of the last module whose (B, C, H, W) output, C >= 4, gets the same loss
    gradient in every channel at every position, while it differs across positions (a correct network
    weighs its channels differently; after a correct global pool it is the positions that get the same
    gradient), or None. One backward of a fresh copy."""
    model, grads, handles = fresh_model(pipe).train(), [], []

    def keep(name):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[1] >= 4 and out.requires_grad:
                out.register_hook(lambda g: grads.append((name, g.detach())))
        return hook

    for name, m in model.named_modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(keep(name)))
    try:
        x, y = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
        loss = pipe["loss_fn"](model(x), y)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
    except Exception:
        return None                                  # other checks report a model or loss that fails
    finally:
        for h in handles:
            h.remove()
    for name, g in grads:                            # backward order: the module nearest the loss first
        g = g.double()
        size = g.abs().max().item()
        spread = lambda dim: (g - g.narrow(dim, 0, 1)).abs().max().item() / max(size, 1e-300)
        if size > 0 and spread(1) <= 1e-6 and min(spread(2), spread(3)) >= 1e-2:   # channels-last input after
            return name, g.shape[1]                         # a global pool: dims 1 and 2 (H, W) both the same
    return None


# ----------------------------------------------------------------------------- one-step checks

def check_optimizer_params(pipe, report):
    model = fresh_model(pipe)
    named = list(model.named_parameters())
    if not named:
        report.add("optimizer_params", "error", f"the model has no parameters at all ({type(model).__name__}): "
                   "nothing can train. Layers kept in a plain list or dict are not registered.",
                   "Hold layers in attributes, nn.Sequential, nn.ModuleList or nn.ModuleDict; stage 2.", "model")
        return None
    if not any(p.requires_grad for _, p in named):
        report.add("optimizer_params", "error", f"all {len(named)} parameter tensors have requires_grad=False: "
                   "nothing can train.", "Unfreeze the layers to train (p.requires_grad_(True)); stage 2.", "model")
        return None
    opt = make_optimizer_for(pipe, model)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    foreign = foreign_params(model, opt)
    hint = ("Build the optimizer from the params it is given, after the model is final: "
            "make_optimizer = lambda params: torch.optim.Adam(params, lr=1e-3); stage 2.")
    if foreign:
        report.add("optimizer_params", "error", f"the optimizer holds {len(foreign)} tensors "
                   f"({sum(p.numel() for p in foreign):,} values) that are not the model's parameters: it was built "
                   "from another model (a global `model`, or one created before a re-init), so training updates "
                   "the wrong network.", hint, "make_optimizer")
    with torch.no_grad():                              # a layer built in forward (Keras style) comes too late
        model(batches_from(pipe, 0, 1, 2)[0][0])
    created = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_opt
               and all(p is not q for _, q in named)]
    if created:
        report.add("optimizer_params", "error", f"the first forward created {len(created)} parameter tensors "
                   f"({listed(created)}) after make_optimizer had run: a layer built on the first call, so the "
                   "optimizer never sees it and it keeps its initial values (and a copy of the model builds its own).",
                   "Build every layer in __init__ (nn.LazyLinear if its input size is unknown), then the "
                   "optimizer; stage 2.", listed(modules_of(created)))
    missing = [n for n, p in named if p.requires_grad and id(p) not in in_opt]
    trainable = [n for n, p in named if p.requires_grad]
    if missing:
        size = sum(p.numel() for n, p in named if n in missing)
        report.add("optimizer_params", "error", f"{len(missing)} of {len(trainable)} trainable tensors ({size:,} "
                   "values) are not in the optimizer: they get gradients but keep their initial values.",
                   hint, listed(missing))
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen:
        owner = {n: n.rsplit(".", 1)[0] if "." in n else "" for n in frozen}
        first_trainable = next(i for i, (n, p) in enumerate(named) if p.requires_grad)
        late = [n for i, (n, p) in enumerate(named) if i > first_trainable and not p.requires_grad
                and not isinstance(model.get_submodule(owner[n]), NORMS)]
        untrained = [n for n in frozen if at_default_init(model.get_submodule(owner[n]))]
        bad = list(dict.fromkeys(untrained + late))
        if bad:
            report.add("optimizer_params", "error", f"{len(bad)} tensors are frozen (requires_grad=False) "
                       + ("while they still hold PyTorch's random init" if untrained else "after trainable layers")
                       + ": they will never learn, which is a forgotten unfreeze, not fine-tuning.",
                       "Unfreeze them (p.requires_grad_(True)); freeze only pretrained layers; stage 2.",
                       listed(modules_of(bad)))
        else:       # trained values, before every trainable layer: what fine-tuning a pretrained part looks like
            report.notes.append(("optimizer_params", f"{len(frozen)} tensors are frozen (requires_grad=False) in "
                                 f"{listed(modules_of(frozen))}: they hold trained values and come before the "
                                 "trainable layers, as when fine-tuning a pretrained part."))


def at_default_init(module):
    """Does this Linear/Conv still hold PyTorch's default init, uniform in +-1/sqrt(fan_in)?"""
    w = getattr(module, "weight", None)
    if not isinstance(module, (nn.Linear,) + CONVS) or not isinstance(w, torch.Tensor) or w.numel() < 64:
        return False
    bound = 1 / math.sqrt(w[0].numel())
    return bool(w.abs().max() <= bound * (1 + 1e-4)) and abs(w.std().item() - bound / math.sqrt(3)) < 0.2 * bound / math.sqrt(3)


def check_param_grads(pipe, report):
    rec = steps(pipe)
    if isinstance(rec, str):
        return rec
    trainable = [n for n, p in rec["model"].named_parameters() if p.requires_grad]
    reached = {n for g in rec["backward_grads"] for n in g}
    never = [n for n in trainable if n not in reached]
    wiped = [n for n in trainable if n in reached and all(g[n] is None or not g[n].any() for g in rec["grads"])
             and any(g.get(n) is not None and g[n].any() for g in rec["backward_grads"])]
    zero = [n for n in trainable if n in reached and n not in wiped
            and all(g.get(n) is None or not g[n].any() for g in rec["backward_grads"])]
    hint = "stage 2: every parameter should get a nonzero gradient on the first steps."
    if trainable and len(never) == len(trainable):
        report.add("param_grads", "error", f"none of the {len(trainable)} trainable tensors received a gradient "
                   f"in {len(rec['losses'])} calls of train_step: loss.backward() is not called, or the loss is cut off from the model "
                   "(.item(), .detach(), torch.no_grad() or a new tensor built from its value).",
                   "Call loss.backward() on the loss tensor computed from model(x); " + hint, "train_step")
        return None
    if wiped and len(wiped) + len(never) == len(trainable):
        report.add("param_grads", "error", f"backward computes gradients, but all of them are zero or None when "
                   "optimizer.step() runs: zero_grad() is called between backward() and step() (or the gradients "
                   "are clipped to 0).",
                   "Order the step as zero_grad(), forward, loss, backward(), step(); " + hint, "train_step")
        return None
    if never:
        report.add("param_grads", "error", f"{len(never)} of {len(trainable)} trainable tensors never receive a "
                   f"gradient in {len(rec['losses'])} calls of train_step: they are not used in forward, or their path to the loss is cut by "
                   ".detach(), .data, torch.no_grad() or a numpy round trip.",
                   "Use every layer you define in forward and keep its output in the graph; " + hint,
                   listed(modules_of(never)))
    if zero:
        report.add("param_grads", "error", f"{len(zero)} of {len(trainable)} trainable tensors get gradients that "
                   f"are exactly zero in all {len(rec['losses'])} calls of train_step: dead ReLUs around them, a path multiplied by zero, or an "
                   "input that is all zeros.", "See dead_activations and input_scale; " + hint,
                   listed(modules_of(zero)))


def check_step_updates(pipe, report):
    rec = steps(pipe)
    if isinstance(rec, str):
        return rec
    opt, model = rec["opt"], rec["model"]
    names = {id(p): n for n, p in model.named_parameters()}
    in_opt = [names[id(p)] for g in opt.param_groups for p in g["params"] if p.requires_grad]
    before, after = rec["params"][0], rec["params"][1:]
    moved = [n for n in in_opt if any(not torch.equal(before[n], a[n]) for a in after)]
    if sum(rec["step_calls"]) == 0 and moved and not pipe.get("foreign_optimizers"):
        return ("optimizer.step() never ran, yet the weights change: train_step updates them by hand (the checks "
                "that watch optimizer.step() cannot judge such a step)")
    if sum(rec["step_calls"]) == 0:
        what = ("the weights change only through another optimizer (see caller_untouched)" if moved else
                "the weights never change")
        report.add("step_updates", "error", f"the optimizer train_step is given was never stepped in "
                   f"{len(rec['losses'])} calls of train_step: {what}.",
                   "Call optimizer.step() on the `optimizer` argument after loss.backward(); stage 2.", "train_step")
        return None
    hooks_grow(pipe, report)
    broken = [n for n in in_opt if not all(torch.isfinite(a[n]).all() for a in after)]
    if broken:
        report.add("step_updates", "error", f"{len(broken)} tensors hold NaN/inf after {len(after)} calls of train_step (losses "
                   f"{', '.join(f'{v:.3g}' for v in rec['losses'])}): the lr is far too high, or the loss is NaN.",
                   "Lower the lr by 10x and check for log(0)/division by zero; stage 2.", listed(modules_of(broken)))
        return None
    lrs = [g.get("lr", None) for g in opt.param_groups]
    if not moved:
        if all(lr == 0 for lr in lrs):
            why = "the learning rate is 0"
        elif all(all(g[n] is None or not g[n].any() for n in in_opt) for g in rec["grads"]):
            why = "every gradient was zero or None when step() ran (see param_grads)"
        elif any(rec["step_moves"]):
            why = ("optimizer.step() moved them, then train_step wrote them back (weights restored from a "
                   "snapshot, an EMA written into the model)")
        else:
            why = f"step() ran with lr {lrs} and nonzero gradients yet moved nothing"
        report.add("step_updates", "error", f"{sum(rec['step_calls'])} steps changed none of the {len(in_opt)} parameter tensors in the "
                   f"optimizer: {why}.", "Set a learning rate (e.g. Adam 3e-4 .. 1e-3) and check the step; stage 2.",
                   "make_optimizer" if "learning rate" in why else "train_step", lrs=lrs)
        return None
    for k, g in enumerate(opt.param_groups):
        still = [names[id(p)] for p in g["params"] if names[id(p)] not in moved and p.requires_grad]
        if g.get("lr", None) == 0 and still:
            report.add("step_updates", "error", f"param group {k} has lr=0: its {len(still)} tensors never move.",
                       "Give every param group a learning rate; stage 2.", listed(modules_of(still)))
    k = rec["first_step"]                       # the call where step() first ran (later with accumulation)
    first, moved_to = rec["backward_grads"][k], after[k]
    common = [n for n in in_opt if n in first]
    if common:
        step = torch.cat([(moved_to[n] - before[n]).flatten().double() for n in common])
        grad = torch.cat([first[n].flatten().double() for n in common])
        uphill = (step @ grad / (step.norm() * grad.norm() + 1e-300)).item()   # cosine; descent makes it < 0
        note(report, "step_updates", uphill_cos=uphill)
    if common and uphill > UPHILL_COS:
        report.add("step_updates", "error", "the first step moved the parameters up the gradient, so the loss "
                   f"increases (cosine between step and gradient {uphill:.2f}, descent makes it negative): "
                   "optimizer built with maximize=True, or the gradient's sign is flipped in train_step.",
                   "Steps must go against the gradient: remove maximize=True / the sign flip; stage 2.", "train_step")
        return None
    if step_undone(rec, report):
        return None
    if rounded_away(rec, first, moved_to, before, [n for n in common if before[n].dtype in LOW_PRECISION], report):
        return None
    ratios = {n: ((moved_to[n] - before[n]).norm() / before[n].norm()).item() for n in common
              if before[n].ndim >= 2 and before[n].norm() > 0 and first[n].any()}
    worst = max(ratios, key=ratios.get, default=None)
    losses = rec["losses"]
    if worst is not None:
        note(report, "step_updates", update_ratio=ratios[worst], loss_growth=losses[-1] / max(abs(losses[0]), 1e-12))
    said = (f"the first step changed '{worst}' by {ratios[worst]:.3g}x its own size (healthy updates are about "
            "1e-3 .. 1e-2 of it)" if worst is not None else "")
    if worst is not None and ratios[worst] > UPDATE_ERROR:
        report.add("step_updates", "error", said + ": the lr is far too high, training will diverge or produce NaN.",
                   "Lower the lr (e.g. 10x at a time); stage 2 / stage 5.", modules_of([worst])[0], update_ratios=ratios)
    elif all(math.isfinite(v) for v in losses) and losses[-1] > EXPLODE_FACTOR * abs(losses[0]) + EXPLODE_MARGIN:
        report.add("step_updates", "error", f"the loss exploded within {len(losses)} calls ({', '.join(f'{v:.3g}' for v in losses)}): "
                   "the lr is far too high.", "Lower the lr by 10x; stage 2.", "make_optimizer")
    elif worst is not None and ratios[worst] > UPDATE_HIGH:
        report.add("step_updates", "warning", said + ": the lr looks high.", "Try a smaller lr; stage 5.",
                   modules_of([worst])[0], update_ratios=ratios)
    elif worst is not None and ratios[worst] < UPDATE_TINY:
        report.add("step_updates", "warning", said + ": the lr (or the loss scale) looks far too small.",
                   "Try a 10-100x larger lr, check the loss is not scaled down; stage 5.", modules_of([worst])[0],
                   update_ratios=ratios)
    elif eps_over_gradient(opt) > EPS_DOMINATES:
        report.add("step_updates", "warning", f"the optimizer's eps is {eps_over_gradient(opt):.3g}x the median "
                   "RMS gradient of the weights (sqrt of Adam's second moment): eps dominates the denominator "
                   "of lr * m / (sqrt(v) + eps), so the per-weight scaling is off and every step is about "
                   "lr * grad / eps - far too small.", "Keep eps tiny (PyTorch's 1e-8; 1e-6 for half precision); "
                   "stage 5.", "make_optimizer", eps_ratio=eps_over_gradient(opt))
    elif all(math.isfinite(v) for v in losses) and losses[-1] > JUMP_FACTOR * abs(losses[0]) + JUMP_MARGIN:
        report.add("step_updates", "warning", f"the loss jumped within {len(losses)} calls ({', '.join(f'{v:.3g}' for v in losses)}): "
                   "the lr looks high.", "Try a smaller lr; stage 5.", "make_optimizer")


def rounded_away(rec, grads, after, before, low, report):
    """True (and an error) when the weights themselves are stored in bfloat16/float16 and the first step
    left most of those with a nonzero gradient exactly as they were: an update smaller than half the spacing
    of representable values around a weight (bfloat16: 1/256 of it) rounds back to the same weight."""
    nonzero = sum(int((grads[n] != 0).sum()) for n in low)
    if not nonzero:
        return False
    still = sum(int(((grads[n] != 0) & (after[n] == before[n])).sum()) for n in low)
    note(report, "step_updates", unmoved_share=still / nonzero)
    if still / nonzero <= UNMOVED_SHARE:
        return False
    dtypes = sorted({str(before[n].dtype).replace("torch.", "") for n in low})
    report.add("step_updates", "error", f"the weights are stored in {'/'.join(dtypes)}, and the first step left "
               f"{still / nonzero:.0%} of those with a nonzero gradient exactly unchanged: each update is smaller "
               "than half the gap between representable values around the weight (bfloat16 keeps 8 bits: a "
               "weight of 0.1 moves in steps of 0.0005), so it rounds away and those weights never train.",
               "Keep float32 weights and run the forward under torch.autocast(dtype=torch.bfloat16) (mixed "
               "precision), instead of model.to(torch.bfloat16); stage 2.", listed(modules_of(low)))
    return True


def hook_count(model, opt):
    """Hooks on the model's modules and parameters and on the optimizer: what a step may add without
    changing a weight."""
    n = sum(len(d) for m in model.modules() for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                                                      m._backward_pre_hooks))
    n += sum(len(getattr(opt, a, None) or {}) for a in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"))
    return n + sum(len(p._backward_hooks or {}) + len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
                   for p in model.parameters())


def hooks_grow(pipe, report):
    """train_step may register a hook once (on its first call); one that registers hooks at every call
    stacks them: each applies again at every later step, so its effect compounds (a gradient scaled by 0.1
    becomes 0.1**n at step n) and memory grows. HOOK_CALLS calls on one batch, hooks counted after each."""
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    if foreign_params(model, opt):
        return
    batch = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
    counts = []
    for _ in range(HOOK_CALLS):
        call_step(pipe, model, batch, opt)
        counts.append(hook_count(model, opt))
    note(report, "step_updates", hooks_after_calls=counts)
    if all(b > a for a, b in zip(counts[1:], counts[2:])):
        added = counts[-1] - counts[-2]
        report.add("step_updates", "error", f"every call of train_step registers {added} more hook(s) on the model "
                   f"({' -> '.join(map(str, counts))} after {HOOK_CALLS} calls): each hook runs again at every later "
                   "step, so what it does compounds step after step (a gradient hook that scales by 0.1 scales the "
                   "n-th step's gradient by 0.1**n) and memory grows.",
                   "Register hooks once, outside train_step (or keep the handle and call handle.remove()); stage 2.",
                   "train_step", hooks=counts)


def eps_over_gradient(opt):
    """Largest over Adam-like param groups of eps / the median over their weights of sqrt(v_hat), the
    bias-corrected RMS gradient in the optimizer's state; 0 when there is none."""
    worst = 0.0
    for g in opt.param_groups:
        rms = []
        for p in g["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" in st and "betas" in g and "step" in st and p.ndim >= 2:
                v_hat = st["exp_avg_sq"] / (1 - g["betas"][1] ** float(st["step"]))
                rms.append(v_hat.sqrt().flatten())
        if rms and isinstance(g.get("eps"), float) and g["eps"] > 0:
            median = torch.cat(rms).median().item()
            worst = max(worst, g["eps"] / median if median > 0 else 0.0)
    return worst


def check_grad_norms(pipe, report):
    """Per-layer gradients of the loss at init, from preflight's own backward: a property of the model and
    loss, so a train_step's loss scaling (GradScaler), accumulation or clipping does not blur it."""
    ratio = grad_ratios_at_init(pipe)
    if isinstance(ratio, str):
        return ratio
    if isinstance(ratio, list):
        report.add("grad_norms", "error", f"the first backward gives NaN/inf gradients in {len(ratio)} tensors.",
                   "Look for log(0), sqrt(0) or division by zero in the model or loss; stage 2.",
                   listed(modules_of(ratio)))
        return None
    hi, lo = max(ratio, key=ratio.get), min(ratio, key=ratio.get)
    spread = ratio[hi] / ratio[lo]
    note(report, "grad_norms", largest=ratio[hi], spread=spread)
    said = (f"at init, |grad|/|weight| ranges from {ratio[lo]:.2g} in '{lo}' to {ratio[hi]:.2g} in '{hi}' "
            f"({spread:.2g}x)")
    hint = ("Use a normalization layer (BatchNorm/LayerNorm), ReLU-family activations with kaiming init, or "
            "residual connections; stage 2.")
    if spread > GRAD_SPREAD_WARNING and ratio[hi] <= GRAD_EXPLODE:
        opened = grad_ratios_at_init(pipe, open_gates=True)
        if isinstance(opened, dict):
            spread = max(opened.values()) / min(opened.values())
            note(report, "grad_norms", spread_gates_opened=spread)
            said += f"; {spread:.2g}x with the near-zero learnable gains (layer scale, ReZero) opened to 1"
    if signal_collapse(pipe, report):
        return None
    if ratio[hi] > GRAD_EXPLODE:
        report.add("grad_norms", "error", said + ": exploding gradients - one step moves these weights by far "
                   "more than their size.", hint, modules_of([hi])[0], ratios=ratio)
    elif spread > GRAD_SPREAD_ERROR:
        report.add("grad_norms", "error", said + ": vanishing gradients - the early layers barely learn.", hint,
                   modules_of([lo])[0], ratios=ratio)
    elif spread > GRAD_SPREAD_WARNING:
        report.add("grad_norms", "warning", said + ": gradients are badly scaled across layers.", hint,
                   modules_of([lo])[0], ratios=ratio)
    elif ratio[hi] > GRAD_HIGH:
        report.add("grad_norms", "warning", said + ": large gradients, so the loss starts far from where "
                   "training takes it: inputs or regression targets on a large scale, or an output bias far from "
                   "the targets' mean.", "Standardize inputs (and regression targets), or set the last bias to the "
                   "targets' mean (its log for a rate); stage 2 (init well).", modules_of([hi])[0], ratios=ratio)


# The forward signal through a stack of weight layers at init: the std of each layer's output. PyTorch's
# default init shrinks it by about 0.4-0.6 per plain ReLU layer and normalization layers hold it near 1; an
# init scale off by orders of magnitude (std = 1/fan_in where sqrt(2/fan_in) was meant, N(0, 0.01) in a deep
# net) shrinks it by SIGNAL_PER_LAYER or more at the median layer until SIGNAL_TOTAL of it is left: the loss
# then sees outputs of ~0 and the early layers get ~0 gradient. Measured per layer: 57 correct pipelines
# 0.28-1.08, init_std_as_variance 0.042. (A zero-initialized head is one step to 0, not the median.)
SIGNAL_PER_LAYER, SIGNAL_TOTAL, SIGNAL_LAYERS = 0.1, 1e-3, 3


def signal_collapse(pipe, report):
    """True (and an error) when the forward signal shrinks or grows geometrically through the weight layers."""
    scales = probe(pipe)["scales"]
    if len(scales) < SIGNAL_LAYERS or scales[0][1] <= 0:
        return False
    total = scales[-1][1] / scales[0][1]
    ratios = sorted(b[1] / max(a[1], 1e-300) for a, b in zip(scales, scales[1:]))
    per_layer = ratios[len(ratios) // 2]              # the median step: one zero-initialized head is no trend
    note(report, "grad_norms", signal_per_layer=per_layer)
    shrinks = total < SIGNAL_TOTAL and per_layer < SIGNAL_PER_LAYER
    grows = total > 1 / SIGNAL_TOTAL and per_layer > 1 / SIGNAL_PER_LAYER
    if not (shrinks or grows):
        return False
    report.add("grad_norms", "error", f"at init the output std of the {len(scales)} weight layers goes from "
               f"{scales[0][1]:.3g} ('{scales[0][0]}') to {scales[-1][1]:.3g} ('{scales[-1][0]}'), {per_layer:.2g}x at "
               f"the median layer: the init's scale is off by orders of magnitude, so the signal {'vanishes' if shrinks else 'explodes'} "
               "with depth (and the gradients with it). A hand-written init with the variance used as the std "
               "(1/fan_in for sqrt(2/fan_in)), or a fixed std such as 0.01 in a deep net, does this.",
               "Use kaiming init (nn.init.kaiming_normal_, std = sqrt(2/fan_in) for ReLU) or PyTorch's default, or "
               "add normalization layers; stage 2.", scales[-1][0] if shrinks else scales[0][0],
               signal_per_layer=per_layer)
    return True


def grad_ratios_at_init(pipe, open_gates=False):
    """{weight name: |grad| / |weight|} after one backward of a fresh model; the names of the tensors whose
    gradient is not finite (a list), or why there is nothing to compare (a str). open_gates: first set the
    learnable gains that start near zero to 1 (a str when the model has none)."""
    model = fresh_model(pipe).train()
    if open_gates:
        gates = [p for n, p in model.named_parameters() if p.ndim <= 1 and not n.endswith("bias")
                 and p.numel() and p.detach().abs().max() < GATE_CLOSED]
        if not gates:
            return "no near-zero learnable gains"
        with torch.no_grad():
            for p in gates:
                p.fill_(1.0)
    x, y = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
    pipe["loss_fn"](model(x), y).backward()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    if not named:
        return "no trainable parameter gets a gradient (see param_grads)"
    bad = [n for n, p in named if not torch.isfinite(p.grad).all()]
    if bad:
        return bad
    ratio = {n: (p.grad.norm() / p.detach().norm()).item() for n, p in named
             if p.ndim >= 2 and p.detach().norm() > 0 and p.grad.any()}
    return ratio if len(ratio) >= 2 else "fewer than two weight layers with gradients"


def check_zero_grad(pipe, report):
    """The same batch, weights and seed before every call: the gradient each optimizer.step() uses must
    hold only the backward passes since the step before (one per call, or k with accumulation), never
    the ones before it (zero_grad missing)."""
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    if foreign_params(model, opt):
        return "make_optimizer ignores its params (see optimizer_params)"
    batch = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
    rec = run_steps(pipe, model, opt, [batch] * STEP_CALLS, reseed=pipe["seed"], restore=True, until_steps=2)
    at = [i for i, k in enumerate(rec["step_calls"]) if k]
    if len(at) < 2:
        return f"optimizer.step() ran {len(at)} times in {len(rec['losses'])} calls (see step_updates)"
    b1, b2 = sum(rec["backwards"][:at[0] + 1]), sum(rec["backwards"][at[0] + 1:at[1] + 1])
    g1, g2 = rec["backward_grads"][at[0]], rec["backward_grads"][at[1]]   # before clipping/unscaling
    if rec["closures"][at[0]] or rec["closures"][at[1]]:   # step(closure), LBFGS: its later evaluations run at
        b1 = b2 = 1                                       # other weights, so compare each call's first backward
        g1, g2 = rec["first_grads"][at[0]], rec["first_grads"][at[1]]
    names = {id(p): n for n, p in model.named_parameters()}
    stepped = {names[id(p)] for g in opt.param_groups for p in g["params"]}   # zero_grad() clears only these
    common = [n for n in g1 if n in g2 and n in stepped]
    if not b1 or not b2 or not common or not any(g1[n].any() for n in common):
        return "no gradients to compare (see param_grads)"
    first = torch.cat([g1[n].flatten().double() for n in common]) * (b2 / b1)   # expected at the second step
    extra = torch.cat([g2[n].flatten().double() for n in common]) - first
    rel = (extra.norm() / first.norm()).item()
    cos = (extra @ first / (extra.norm() * first.norm() + 1e-300)).item()
    window = "" if b1 == b2 == 1 else f" ({b2} backward passes per step)"
    note(report, "zero_grad", extra=rel, cos=cos)
    if rel < ZERO_GRAD_NOISE:
        return None
    if cos > ACCUMULATE_COS:
        report.add("zero_grad", "error", f"running train_step on the same batch with the same weights, the "
                   f"gradient at the second optimizer.step() is {1 + rel:.2f}x the first{window}, in the same "
                   "direction: gradients accumulate across steps because optimizer.zero_grad() is missing (or "
                   "runs after backward of the next loss).",
                   "Call optimizer.zero_grad() at the start of every step (with gradient accumulation: right "
                   "after each optimizer.step()); stage 2.", "train_step", ratio=1 + rel)
    else:
        report.add("zero_grad", "warning", f"two identical calls of train_step give gradients that differ by "
                   f"{rel:.2g} of their size: the step is nondeterministic or keeps state between calls.",
                   "Check for state kept between steps; stage 2.", "train_step")


# How much of what optimizer.step() moves survives the rest of train_step: the weights' change over the call
# / the change during the step, median over the calls after the first step. Clean: 1 (an EMA or SWA kept in a
# copy, clipping and scaling act before the step); Lookahead pulls back every k-th call only. An EMA written
# into the model itself (w = 0.999 w_ema + 0.001 w after each step): 0.001.
STEP_KEPT = 0.1


def step_undone(rec, report):
    """True (and an error) when train_step undoes most of each optimizer step after it."""
    names = list(rec["params"][0])
    kept = []
    for i, move in enumerate(rec["step_moves"]):
        if move and i > rec["first_step"]:
            net = sum((rec["params"][i + 1][n].double() - rec["params"][i][n].double()).pow(2).sum() for n in names)
            kept.append(float(net) ** 0.5 / move)
    if len(kept) < 2:
        return False
    median = sorted(kept)[len(kept) // 2]         # of the 2 calls steps() makes after the first: the larger
    note(report, "step_updates", step_kept=median)
    if median >= STEP_KEPT:
        return False
    report.add("step_updates", "error", f"train_step keeps only {median:.2g} of what optimizer.step() moves the "
               f"weights (median over {len(kept)} calls): after the step, the weights are written over - an EMA "
               "updated into the model itself instead of a copy, weights restored from a snapshot, a projection "
               "that undoes the update.", "Keep an EMA in a separate copy (torch.optim.swa_utils.AveragedModel) "
               "and evaluate that; leave the trained weights as the optimizer left them; stage 2.", "train_step")
    return True


def check_train_mode(pipe, report):
    rec = steps(pipe)
    if isinstance(rec, str):
        return rec
    flags = rec["training"]
    if not flags:
        return "train_step never called the model"
    if all(flags):
        return None
    model, x = fresh_model(pipe), pipe["x"][:64]
    with torch.no_grad():
        seed_all(pipe["seed"])
        a = model.train()(x)
        seed_all(pipe["seed"])
        b = model.eval()(x)
    matters = not torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    if not pipe["model"].training:
        said = "the model was passed in eval mode and train_step never switches it back to train mode"
        hint = "Call model.train() before training steps (and after every evaluation with model.eval()); stage 2."
    else:
        said = "train_step runs the forward in eval mode (model.eval() inside the step?)"
        hint = "Call model.train() at the start of training steps, model.eval() only to evaluate; stage 2."
    effect = ("here Dropout/BatchNorm then behave as at test time: no dropout noise, BatchNorm normalizes with "
              "running statistics that never update" if matters else
              "this model has no layer that behaves differently in eval mode, so it bites only once one is added")
    report.add("train_mode", "error" if matters else "warning",
               f"{said}: {sum(not f for f in flags)} of {len(flags)} forwards ran with model.training=False; "
               f"{effect}.", hint, "train_step")


def check_batch_order(pipe, report):
    """What each step trains on: the batch it is given (not one it fetches itself), from a loader that
    neither repeats one batch nor groups the samples by label."""
    reach = batch_reach(pipe)
    if reach == "all":
        report.add("batch_order", "error", "train_step computes the same gradient from two different batches "
                   "(same weights, same seed): it ignores the batch it is given and trains on another one, e.g. "
                   "next(iter(loader)) inside the step (always the loader's first batch) or a batch captured "
                   "once.", "Train on the batch argument of train_step(model, batch, loss_fn, optimizer) and "
                   "iterate the loader in the loop (for batch in loader); stage 2.", "train_step")
        return None
    if reach:
        report.add("batch_order", "error", f"replacing the {reach} quarter of the batch leaves train_step's gradient "
                   "exactly the same (same weights, same seed): those samples never reach the loss. The step "
                   "counts only part of its batch, e.g. micro-batches whose losses are overwritten instead of "
                   "summed (only the last one is backpropagated), or a hard-example selection that keeps a few "
                   "samples.", "Backpropagate every micro-batch's loss (loss / k each), and keep hard-example "
                   "mining to a large share of the batch; stage 2.", "train_step")
    stream = pipe["stream"]
    if stream is None:
        return "train is not a loader: preflight draws its own shuffled batches (pass your DataLoader to check its order)"
    C, y = pipe["num_classes"], pipe["y"]
    if C is None and y.numel() == len(y) and bool(((y == 0) | (y == 1)).all()):
        C, y = 2, y.reshape(-1).long()                  # one 0/1 target per sample: two classes
    if C is None:
        return "targets are not class labels"
    repeats = pipe["stream_repeats"]
    if len(stream) >= 2 and repeats >= (len(stream) - 1) / 2:
        report.add("batch_order", "error", f"{repeats} of the loader's first {len(stream)} batches are identical "
                   "to the batch before them: the loop trains on the same batch again and again.",
                   "Iterate the loader itself (for x, y in loader), not a batch taken once with next(iter(...)); "
                   "stage 2.", "train")
        return None
    size = len(stream[0])
    full = [s.reshape(-1).long() for s in stream if len(s) == size]
    if size < 2 or len(full) < 2:
        return "needs at least two batches of two or more samples"
    p = torch.bincount(y.reshape(-1).cpu().clamp(0, C - 1), minlength=C).double()
    p /= p.sum()
    gen = torch.Generator().manual_seed(pipe["seed"])
    shuffled = torch.multinomial(p, 200 * full[0].numel(), replacement=True, generator=gen).reshape(200, -1)
    expected = sum(entropy(b, C) for b in shuffled) / 200
    if expected < ONE_CLASS_ENTROPY:
        return "the labels are almost all one class"
    seen = sum(entropy(b, C) for b in full) / len(full)
    note(report, "batch_order", entropy_ratio=seen / expected)
    single = sum(int(len(b.unique()) == 1) for b in full)
    said = (f"the loader's first {len(full)} batches have label entropy {seen:.3f} nats on average, vs "
            f"{expected:.3f} for shuffled batches of {size} ({single} hold a single class)")
    hint = ("Shuffle the training loader (DataLoader(..., shuffle=True) / BatchLoader(shuffle=True); a "
            "WeightedRandomSampler with replacement=True); stage 1.")
    if seen < SORTED_ERROR * expected:
        report.add("batch_order", "error", said + ": the data is sorted by label and not shuffled (or a "
                   "WeightedRandomSampler draws without replacement: the heavy samples first, then the rest), so "
                   "each step pulls the model toward one class and training oscillates.", hint, "train")
    elif seen < SORTED_WARNING * expected:
        report.add("batch_order", "warning", said + ": batches are partly grouped by label (sorted chunks, or a "
                   "WeightedRandomSampler drawing without replacement: the heavy samples first).", hint, "train")


def batch_reach(pipe):
    """What of the batch given to train_step reaches its gradient: None when all of it does; "all" when the
    gradient is the same for a disjoint batch; "first" / "last" when replacing that quarter of the samples
    leaves it unchanged (same weights, same seed each call)."""
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    if foreign_params(model, opt):
        return None
    size = min(pipe["batch_size"], 64)
    (x, y), (xo, yo) = batches_from(pipe, 0, 2, size)
    if size < 4 or torch.equal(x, xo):
        return None
    q = size // 4
    first = (torch.cat([xo[:q], x[q:]]), torch.cat([yo[:q], y[q:]]))
    last = (torch.cat([x[:-q], xo[-q:]]), torch.cat([y[:-q], yo[-q:]]))
    grads = run_steps(pipe, model, opt, [(x, y), (xo, yo), first, last], reseed=pipe["seed"],
                      restore=True)["backward_grads"]
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    if not any(g.any() for g in grads[0].values()):
        return None                                   # no gradient at all: param_grads says so
    if same(grads[0], grads[1]):
        return "all"
    return next((part for part, g in (("first", grads[2]), ("last", grads[3])) if same(grads[0], g)), None)


def entropy(labels, C):
    p = torch.bincount(labels.cpu().clamp(0, C - 1), minlength=C).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


# ----------------------------------------------------------------------------- long checks ("full")

def loss_fn_in_train_mode(pipe, batch):
    """loss_fn on the batch with the weights as given, in train mode, on a copy, random states untouched."""
    with preserved_rng(), torch.no_grad():
        return float(pipe["loss_fn"](fresh_model(pipe).train()(batch[0]), batch[1]))


def check_overfit_batch(pipe, report):
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    if foreign_params(model, opt):
        return "make_optimizer ignores its params (see optimizer_params)"
    idx = varied_samples(pipe, OVERFIT_SAMPLES)
    batch = (pipe["x"][idx], pipe["y"][idx])
    own_start = loss_fn_in_train_mode(pipe, batch)
    unsure_optimum(pipe, batch[1], report)
    floor = loss_floor(pipe)
    const = constant_value(pipe, constant_baseline(pipe, batch[1]), batch[1])
    room = max(const - floor, 1e-8)                     # how far a model using its inputs can go below const
    losses = []
    for step in range(OVERFIT_STEPS):
        losses.append(call_step(pipe, model, batch, opt))
        if not math.isfinite(losses[-1]):
            report.add("overfit_batch", "error", f"the loss became {losses[-1]} at step {step} while fitting "
                       f"{OVERFIT_SAMPLES} samples (it started at {losses[0]:.3g}): the lr is too high or the "
                       "model/loss produces NaN.", "Lower the lr by 10x; check log/sqrt/division; stage 3.",
                       "make_optimizer", losses=losses)
            return None
        if step >= 20 and step % 10 == 0 and sum(losses[-5:]) / 5 <= floor + OVERFIT_DONE * room:
            break
    start, end = losses[0], sum(losses[-5:]) / len(losses[-5:])
    composite = abs(start - own_start) > COMPOSITE_GAP * max(abs(own_start), 1.0)
    if composite:
        # the step returns another quantity than loss_fn (distillation at T^2, auxiliary heads): judge the fit
        # by loss_fn itself on the batch, in eval mode, and only for a failure to learn
        start, end = own_start, evaluate(model, *batch, pipe)[0]
        note(report, "overfit_batch", judged_on_loss_fn=True)
    progress = (const - end) / room
    best = f"best possible {floor:.3g}" if nonnegative(pipe) or const > floor else "its lowest value unknown"
    said = (f"after {len(losses)} steps on {OVERFIT_SAMPLES} samples the loss is {end:.3g} (start {start:.3g}; "
            f"{best}; a model ignoring its inputs gets {const:.3g})")
    details = {"losses": losses, "floor": floor, "constant": const}
    note(report, "overfit_batch", progress=progress, below_floor=(floor - end) / room)
    top = max(start, const)
    if nonnegative(pipe) and end < floor - BELOW_FLOOR * room:
        report.add("overfit_batch", "error", said + f": train_step returns a loss below the lowest value "
                   f"{type(pipe['loss_fn']).__name__} can take, so something is subtracted from it - a penalty "
                   "with the wrong sign (loss - l2 instead of loss + l2), or targets outside the loss's range.",
                   "Add regularization terms to the loss (+), and keep targets in the loss's range; stage 3.",
                   "train_step", **details)
    elif end > top + (DIVERGE_FACTOR - 1) * abs(top) + DIVERGE_MARGIN:     # also for losses below 0
        report.add("overfit_batch", "error", said + ": the loss diverges.",
                   "Lower the lr; check the sign of the loss; stage 3.", "make_optimizer", **details)
    elif progress < OVERFIT_ERROR:
        report.add("overfit_batch", "error", said + ": it cannot memorize even one small batch, so the model, "
                   "loss or step is broken (see the other checks), or the lr is far too small.",
                   "Make the model overfit this batch to near-zero loss before anything else; stage 3.", "", **details)
    elif progress < (OVERFIT_WARNING if pipe["y"].ndim <= 1 else OVERFIT_WARNING_DENSE) and not composite:
        # (a composite loss pulls toward its other terms too - a teacher's soft labels: no "slowly" from it)
        if step_redraws_inputs(pipe, batch):
            # the step augments at random: the batch it trains on changes every call, so the model is judged
            # on the batch as given (eval mode), which a working augmented pipeline still learns
            clean = (const - evaluate(model, *batch, pipe)[0]) / room
            note(report, "overfit_batch", progress_unaugmented=clean)
            if clean >= OVERFIT_WARNING_AUGMENTED:
                return None
            report.add("overfit_batch", "warning", said + f": it learns, slowly; train_step augments the batch at "
                       f"random, and on the batch as given (eval mode) it got only {clean:.0%} of the way from "
                       "ignoring the inputs to a perfect fit: the augmentation may break the link between "
                       "inputs and targets (a target not transformed with its input).",
                       "Apply one random draw to the input and its target; stage 3.", "train_step", **details)
            return None
        report.add("overfit_batch", "warning", said + ": it learns, slowly.",
                   "Try a larger lr or a bigger model, and check regularization is off; stage 3.", "", **details)


def label_share_at_optimum(pipe, y):
    """The probability a classification loss wants on the label of a hard-labelled sample: free logits,
    one set per sample, fitted to loss_fn alone (Adam at lr 0.5, LABEL_FIT_STEPS). 1 when the loss does not
    rise as the label's logit grows past that fit (cross-entropy keeps falling, a margin loss is flat
    beyond its margin): only a loss that penalizes confidence has an unsure optimum. None when it does not
    apply."""
    C, out_shape = pipe["num_classes"], pipe["out_shape"]
    if C is None or pipe["several_outputs"] or y.is_floating_point() or not out_shape or out_shape[0] != C:
        return None
    nll = bool(pipe["loss_kind"]) and pipe["loss_kind"]["name"] == "nll"
    scored = lambda logits: F.log_softmax(logits, 1) if nll else logits      # what loss_fn expects
    z = torch.zeros(len(y), *out_shape, device=y.device)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    try:
        for t in range(1, LABEL_FIT_STEPS + 1):        # Adam by hand: an optimizer would count as the caller's
            zt = z.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = pipe["loss_fn"](scored(zt), y)
                if loss.ndim or not torch.isfinite(loss):
                    return None
                g, = torch.autograd.grad(loss, zt)
            m.mul_(0.9).add_(0.1 * g)
            v.mul_(0.999).add_(0.001 * g * g)
            z -= 0.5 * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
    except Exception:
        return None
    labelled = (y >= 0) & (y < C)
    if not labelled.any():
        return None
    surer = z + LABEL_PUSH * F.one_hot(y.clamp(0, C - 1), C).movedim(-1, 1) * labelled.unsqueeze(1)
    with torch.no_grad():
        penalized = float(pipe["loss_fn"](scored(surer), y)) > float(pipe["loss_fn"](scored(z), y)) + 1e-6
    if not penalized:          # a margin loss (MultiMarginLoss) is flat beyond its margin: not unsure, done
        return 1.0
    share = F.softmax(z.detach(), 1).gather(1, y.clamp(0, C - 1).unsqueeze(1)).squeeze(1)
    return share[labelled].mean().item()


def unsure_optimum(pipe, y, report):
    """Every classification loss, at its best for a hard label, puts most of the probability on that label
    (label smoothing 0.1: 0.91). A loss that is lowest for an unsure answer trains an unsure model."""
    share = label_share_at_optimum(pipe, y)
    if share is None:
        return
    note(report, "overfit_batch", label_share_at_optimum=share)
    if share < LABEL_SHARE_MIN:
        kind = pipe["loss_kind"] or {}
        why = (f" (label_smoothing={kind['smoothing']:g} spreads {kind['smoothing']:.0%} of the target over all "
               f"classes: the smoothing is the share taken off the label, not the confidence left on it)"
               if kind.get("smoothing") else " (a target or penalty that pulls every prediction toward uniform)")
        report.add("overfit_batch", "error", f"loss_fn is lowest when the model gives the labelled class only "
                   f"{share:.0%} of the probability{why}: even a perfect fit stays unsure, and the loss hardly "
                   "rewards getting the answer right.", "Keep the loss's target on the label near 1: "
                   "label_smoothing is eps = 1 - confidence, typically 0.05 .. 0.2; stage 3.", "loss_fn",
                   label_share=share)


def step_redraws_inputs(pipe, batch, tries=4):
    """Does train_step show the model other inputs on calls with the same batch and the same weights
    (random augmentation inside the step)? Up to `tries` calls under different seeds: a random flip
    draws the same side twice half the time."""
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen = []

    def first_input(module, args):
        if not got and args and isinstance(args[0], torch.Tensor):
            got.append(args[0].detach().clone())

    handle = model.register_forward_pre_hook(first_input)
    try:
        for k in range(tries):
            got = []
            model.load_state_dict(start)
            seed_all(pipe["seed"] + 1 + k)
            call_step(pipe, model, batch, opt)
            seen += got[:1]
            if len(seen) >= 2 and (seen[0].shape != seen[-1].shape or not torch.equal(seen[0], seen[-1])):
                return True
    finally:
        handle.remove()
    return False


NONNEGATIVE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                      nn.CrossEntropyLoss, nn.MultiLabelSoftMarginLoss, nn.KLDivLoss)


def nonnegative(pipe):
    """True when loss_fn cannot go below loss_floor on valid targets: cross-entropy/NLL found by calling
    it, or a torch loss known to be >= 0 (a custom or Gaussian NLL loss may legitimately be negative)."""
    return pipe["loss_kind"] is not None or isinstance(pipe["loss_fn"], NONNEGATIVE_LOSSES)


def varied_samples(pipe, k):
    """Indices of k pool samples covering as many classes as possible (imbalanced data included)."""
    y = pipe["y"]
    if pipe["num_classes"] is None or y.ndim != 1:
        return torch.arange(min(k, len(y)))
    firsts = {}
    for i, label in enumerate(y[:2000].tolist()):
        firsts.setdefault(label, i)
    chosen = list(firsts.values())[:k]
    chosen += [i for i in range(len(y)) if i not in firsts.values()][:k - len(chosen)]
    return torch.tensor(chosen, device=y.device)


def check_beats_baseline(pipe, report):
    """A short run on most of the pool must beat, on the held-out rest, the best input-independent model."""
    x, y = pipe["x"], pipe["y"]
    held = min(HELD_OUT, len(y) // 4)
    if held < 50:
        return f"needs at least 200 samples to hold some out, got {len(y)}"
    xt, yt, xh, yh = x[:-held], y[:-held], x[-held:], y[-held:]
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    if foreign_params(model, opt):
        return "make_optimizer ignores its params (see optimizer_params)"
    c = constant_baseline(pipe, yt)
    base_loss = constant_value(pipe, c, yh)
    classify = pipe["num_classes"] is not None
    if classify:
        majority = torch.bincount(yt.reshape(-1).cpu().clamp(min=0)).argmax().item()
        base_acc = (yh.reshape(-1) == majority).float().mean().item()
        se = math.sqrt(max(base_acc * (1 - base_acc), 0.01) / yh.numel())
    size = min(pipe["batch_size"], STEP_BATCH)
    gen = torch.Generator().manual_seed(pipe["seed"])
    order, losses, step = torch.randperm(len(yt), generator=gen), [], 0
    for step in range(1, BASELINE_STEPS + 1):
        if len(order) < size:
            order = torch.randperm(len(yt), generator=gen)
        idx, order = order[:size].to(x.device), order[size:]
        losses.append(call_step(pipe, model, (xt[idx], yt[idx]), opt))
        if not math.isfinite(losses[-1]):
            return f"the training loss became {losses[-1]} at step {step} (see overfit_batch)"
        if step in (25, 50, 100, 200, BASELINE_STEPS):
            loss, acc = evaluate(model, xh, yh, pipe)
            if loss < (BEAT_LOSS if classify else BEAT_LOSS_REGRESSION) * base_loss and (
                    acc is None or acc > base_acc + min(4 * se, (1 - base_acc) / 2)):
                report.details["beats_baseline"] = {"steps": step, "loss": loss, "accuracy": acc}
                note(report, "beats_baseline", loss_ratio=loss / base_loss if base_loss else float("nan"))
                return None
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    note(report, "beats_baseline", loss_ratio=loss / base_loss if base_loss else float("nan"), train_drop=end / start)
    said = (f"after {step} steps of train_step on {len(yt)} samples, held-out loss is {loss:.3g} vs {base_loss:.3g} "
            "for the best input-independent model")
    if classify:
        said += f", accuracy {acc:.1%} vs {base_acc:.1%} for always predicting the majority class"
    said += f" (training loss {start:.3g} -> {end:.3g})"
    details = {"loss": loss, "baseline_loss": base_loss, "accuracy": acc, "train_losses": losses}
    fails = ((loss > BEAT_LOSS * base_loss and acc < base_acc + FAIL_ACC_GAIN * (1 - base_acc)) if classify
             else loss >= FAIL_LOSS_REGRESSION * base_loss)
    if fails:
        why = ("the model memorizes its training samples but learns nothing that carries over: the labels are "
               "misaligned with the inputs (shifted, shuffled separately, or from another split)"
               if end < MEMORIZED * start else
               "it does not learn at all: see overfit_batch, step_updates and param_grads")
        report.add("beats_baseline", "error", said + f": {why}.", "Plot inputs with their labels, check that "
                   "X and y are indexed and shuffled together; stage 1 and stage 2 (dumb baselines).", "train", **details)
    else:
        report.add("beats_baseline", "warning", said + ": only slightly better than ignoring the inputs.",
                   "Check the lr and the data; stage 2 (dumb baselines).", "", **details)


def check_caller_model_untouched(pipe, saved, report):
    """The learner's pieces must work on the model they are given; a global `model` would train the wrong one."""
    tensors, grads = saved["tensors"], saved["grads"]
    changed = [k for k, v in pipe["model"].state_dict(keep_vars=True).items()
               if k in tensors and not torch.equal(v.detach(), tensors[k])]
    changed += [n + ".grad" for (n, p), g in zip(pipe["model"].named_parameters(), grads)
                if (p.grad is None) != (g is None) or (g is not None and not torch.equal(p.grad, g))]
    if changed and all(n.endswith(".grad") for n in changed) and loss_reads_caller_model(pipe):
        report.add("caller_untouched", "warning", f"running train_step changed the gradients of {len(changed)} "
                   "parameters of the model you passed, but none of its weights (preflight only runs copies, and has "
                   "restored them): loss_fn reads a global model, e.g. a penalty summed over `model.parameters()`. "
                   "In your own loop that is right only while that global is the "
                   "model being trained; preflight's copies train without that term.",
                   "Compute such a term in train_step from its `model` argument; stage 2.", listed(changed))
    elif changed:
        report.add("caller_untouched", "error", f"running train_step / make_optimizer changed {len(changed)} tensors "
                   "of the model you passed (preflight only runs copies, and has restored them): they use a global "
                   "model instead of the model/params they are given, so training would update the wrong one.",
                   "Use the `model` argument in train_step and `params` in make_optimizer; stage 2.", listed(changed))


def loss_reads_caller_model(pipe):
    """Does loss_fn itself (a penalty over a global `model`) put gradients into the caller's parameters?"""
    caller = [p for p in pipe["model"].parameters() if p.requires_grad]
    before = [None if p.grad is None else p.grad.clone() for p in caller]
    x, y = batches_from(pipe, 0, 1, 8)[0]
    try:
        pipe["loss_fn"](fresh_model(pipe)(x), y).backward()
    except Exception:
        return False
    return any((p.grad is None) != (b is None) or (b is not None and not torch.equal(p.grad, b))
               for p, b in zip(caller, before))


def check_caller_optimizer_untouched(foreign, model, report):
    """train_step must step the optimizer it is given: stepping a global one trains the wrong model, and one
    it builds itself (at every call) starts its momentum and Adam moments from zero at every step."""
    if not foreign:
        return
    opts = [opt for opt, _, _ in foreign.values()]
    size = sum(len(g["params"]) for opt in opts for g in opt.param_groups)
    caller = {id(p) for p in model.parameters()}
    said = f"train_step called step() on {len(opts)} optimizer(s) it was not given ({', '.join(sorted({type(o).__name__ for o in opts}))}, {size} tensors)"
    if any(id(p) in caller for opt in opts for g in opt.param_groups for p in g["params"]):
        report.add("caller_untouched", "error", said + ": a global `optimizer` inside the step. Training then "
                   "updates that optimizer's parameters and momentum, not the model being trained (preflight has "
                   "put that optimizer's state and parameters back).",
                   "Use the `optimizer` argument of train_step, never a global one; stage 2.", "train_step")
    else:
        report.add("caller_untouched", "error", said + ", built on the parameters of the model it is given: an "
                   "optimizer created inside train_step. Its state (momentum, Adam's moments, the schedule) starts "
                   "from zero at every call, and the one make_optimizer built is never stepped.",
                   "Build the optimizer once, outside the loop, and step the `optimizer` argument; stage 2.",
                   "train_step")
