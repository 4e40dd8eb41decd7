"""Preflight checks designed by mechanism: each tests a property every correct pipeline has, so that
bugs nobody listed break it too. What is trained (registered_params, lr_schedule, weight_decay), what
the loss counts (loss_classes), what the model sees (input_layout, eval_determinism).

Same contract as preflight_checks.py: check(pipe, report) adds Problems and returns None, or a string
saying why it does not apply. Thresholds are named below with the values measured on the correct
pipelines (correct_pipelines.py, tests/test_preflight.py) and on the bugs that break the property.
"""
import gc
import math
import random
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .pipeline import (STEP_BATCH, WEIGHT_LAYERS, batches_from, call_step, fed_in_step, fresh_model, joined,
                       make_optimizer_for, trace)
from .preflight_checks import SUM_TOL, is_bce_with_logits, listed, note, several_outputs, steps
from .rng import seed_all

# Thresholds: the statistics are printed by benchmarks/checks_thresholds.py ("clean": the 29 correct
# pipelines of correct_pipelines.py, bugs_blind.CORRECT_BLIND and bugs.clean; then the bugs flagged).
# input_layout: correlation of neighbouring pixels along W and along H at the first conv. Correct images:
# 0.40/0.69 (8x8 digits) to 0.86/0.90 (Fashion-MNIST, 32x32x3); (B, H, W, C) viewed as (B, C, H, W):
# 0.95/0.03. Error when one axis keeps < LAYOUT_RATIO of the other's correlation: lower / higher is
# clean 0.61-0.95 (11 conv pipelines), channels_last_viewed 0.026, channels_last_reshaped -0.04.
LAYOUT_MIN_CORR, LAYOUT_RATIO = 0.5, 0.2
# eval_determinism: largest difference between eval forwards of one batch under other seeds,
# relative to the outputs' size. Correct models: exactly 0 on CPU (29 pipelines); noise_at_eval 0.44,
# dropout_in_eval 0.87.
EVAL_NOISE = 1e-4
EVAL_SEEDS = 8   # random states compared: RandomErasing(p=0.5) inside a model skips at seeds 1 and 2, erases at 3
# loss_classes: per-class weight of the loss's gradient (1 for every class without weights).
# Inverse-frequency weights on 5:1 imbalance: slope of log weight vs log frequency -1; weights equal to
# the counts: +1. Error above WEIGHT_SLOPE, or when weights span more than WEIGHT_SPAN. Clean: -1
# (class_weighted_loss), ~0 (balanced_sampler); inverted_class_weights +1.
WEIGHT_SLOPE, WEIGHT_SPAN = 0.5, 1e3
# Weights of inverse-frequency size (their slope when given to the classes in the best order below
# -WEIGHT_ORDER_SIZE) whose actual slope is more than WEIGHT_ORDER_GAP above it: the right weights in
# another order. Clean: class_weighted_loss -1 vs -1 (gap 0), balanced_sampler uniform (best 0: not judged);
# class_weights_in_counter_order (Counter's first-seen order) 0.37 vs -1.0 (gap 1.37).
WEIGHT_ORDER_SIZE, WEIGHT_ORDER_GAP = 0.5, 0.7
BALANCED_RATIO = 1.5        # most/least frequent class below this: balanced, any weighting is a choice
# The class prior training pulls toward (the constant output that minimizes loss_fn over the targets of the
# loader's batches: sampler and loss weights together), against the data's: the slope of its centred log
# probabilities on the data's centred log frequencies. 1: the data's prior; 0: balanced; in between:
# partly rebalanced. Below PRIOR_INVERTED the rare classes become the common ones (rebalanced twice);
# above PRIOR_AMPLIFIED the imbalance grows (weights or a sampler that favour the frequent classes).
# Measured (all catalogs, fixed twins included): correct class-weighted CE, balancing sampler, pos_weight
# within 0.001 of 0, plain losses on imbalanced data 1.0; sampler+pos_weight -1.0, sampler given the class
# counts 6.5, weights equal to the counts 2.0 (the weight-slope error already names that one).
PRIOR_INVERTED, PRIOR_AMPLIFIED = -0.5, 1.5
# 0/1 targets shaped like the outputs: the share of outputs the loss pushes toward their target from 0.
# BCE, focal, Dice, MultiLabelSoftMargin: 1.0; MultiLabelMarginLoss given multi-hot rows: see section 16.
PUSHED_RIGHT = 0.9
# Probability targets made in the step: rows may miss 1 (and values 0) by this much (a bfloat16 softmax: ~0.01).
SOFT_TARGET_TOL = 0.05
# An output class no target names, judged when the pool holds this many samples per output (a class at 2%
# of the data is then missing by chance with p < 1e-8).
ABSENT_MIN_SAMPLES = 100
ID_TARGET_CLASSES = 6       # integer targets 0..K-1, K >= this, under a regression loss: class ids as numbers
# lr_schedule: the lr after its peak, over LR_CALLS calls of train_step. OneCycleLR over 2000 steps: 1.0 of
# its peak at call 200; StepLR(step_size=10, gamma=0.5) stepped per batch: 1e-6. Clean >= 0.2 (swa_phase);
# epoch_schedule_stepped_per_batch 1.9e-6, cosine_epochs_stepped_per_batch 0.
LR_CALLS, LR_FLOOR = 200, 1e-3
# A scheduler that starts the lr low must raise it: max lr over LR_CALLS calls / initial_lr. Linear warmup
# over 100 steps, SWALR and OneCycleLR: clean 1-7; LinearLR(start_factor=1e-3) never stepped: 1e-3.
LR_NEVER_UP = 0.01
LR_CONSTANT_CALLS = 20      # without a scheduler, an lr unchanged after this many calls is constant
# A schedule must not raise the lr without bound: its schedulers are stepped on, without training, as far
# as LR_HORIZON calls of train_step would step them. A runaway lr ends above LR_RUNAWAY x the lr you set
# and still LR_STILL_RISING x higher in the horizon's second half than in its first. A warmup factor
# (s + 1) / 50 without min(1, .): 200x at 10k steps, 2x per half; OneCycleLR peaks at 25x and falls;
# CyclicLR(base 1e-4, max 1e-2) repeats its 100x peak (1x per half); ExponentialLR(gamma=1.001) 2e4x, 150x.
LR_HORIZON, LR_RUNAWAY, LR_STILL_RISING = 10_000, 100.0, 1.5
# weight_decay: coupled L2 (SGD, Adam): |wd * w| / |grad| on the median layer at init; wd=5e-4: 0.003-0.03,
# wd=5: 30-300 (clean one_cycle_per_step 0.0016, weight_decay_typo 16.5). Decoupled (AdamW): weights
# shrink by lr * wd per step; clean 1e-6 .. 1e-4, adamw_decay_typo 0.01.
DECAY_RATIO, DECOUPLED_SHRINK = 10.0, 5e-3
# An explicit penalty in train_step: the step's gradient minus loss_fn's, on weight matrices where that
# difference points along the weights (cosine above PENALTY_ALONG), over loss_fn's gradient; median over the
# weight matrices (0 where it does not point along them). Measured (MLP, SGD, first Fashion-MNIST images):
# loss + 5e-4 * sum ||w||^2 0.0032, every pipeline without a penalty 0; coefficient 1 (l2_penalty_without_
# coefficient) 6.1. Error above PENALTY_RATIO: the pull toward 0 is as strong as the data's gradient.
PENALTY_ALONG, PENALTY_RATIO = 0.9, 1.0
# model_linearity: |f((a+b)/2) - (f(a)+f(b))/2| / |f(a) - f(b)| in eval mode. Stacked Linears without an
# activation: ~1e-7 (float rounding; missing_nonlinearity 4e-7, conv_stack_without_activation 3e-7);
# clean (ReLUs, LSTMs, pooling, sigmoid outputs) >= 0.14.
LINEAR_GAP = 1e-4
# augmentation: a 5-NN classifier fitted on unaugmented pool samples, on AUG_PROBES samples before and after
# train_step's augmentation (an augmented image counts as right when it is as fed or once shifted back onto
# its original, so translations and crops cost nothing): the share of its above-chance accuracy that the
# augmented images keep. Measured (first 2000 Fashion-MNIST images, sklearn digits, small CNNs): clean
# 0.93-1.04 (Fashion-MNIST: flips, 4-pixel crops, erasing, 15-degree rotations, noise, mixup; digits:
# shifts, 1-2 pixel crops, 15-degree rotations, small erasing); bugs: random vertical flips on digits 0.78,
# every Fashion-MNIST image upside down 0.74, random horizontal flips on digits 0.65, horizontal and
# vertical (flips_on_digits) 0.59-0.65, 90-degree rotations of clothes 0.56, images shuffled apart from
# their labels 0.22 (augmentation_shuffles_images). Warning below AUG_KEPT, error below AUG_BROKEN.
# A prediction counts as right when the target the loss saw gives its class at least AUG_SHARE; samples
# whose target gives no class 1 - AUG_SHARE (a mixup blend near half and half) are not judged.
AUG_PROBES, AUG_KEPT, AUG_BROKEN, AUG_SHARE = 512, 0.85, 0.5, 0.25


# ----------------------------------------------------------------------------- what is trained

def check_registered_params(pipe, report):
    """Every tensor that requires grad and shapes the output must be one of model.parameters(): others are
    missed by the optimizer, .to(device) and state_dict (layers kept in a python list or dict)."""
    model = fresh_model(pipe).train()
    x, y = pipe["x"][:8], pipe["y"][:8]
    out = joined(model(x))
    if out.grad_fn is None:
        return "the output does not depend on any tensor that requires grad"
    own = {id(p) for p in model.parameters()}
    leaves, seen, todo = [], set(), [out.grad_fn]
    while todo:                                        # walk the autograd graph back to its leaves
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if hasattr(fn, "variable"):                    # AccumulateGrad: a leaf that will get a .grad
            if id(fn.variable) not in own:
                leaves.append(fn.variable)
        todo.extend(f for f, _ in fn.next_functions)
    if not leaves:
        return None
    where = unregistered_attributes(model) or ["forward"]
    size = sum(t.numel() for t in leaves)
    report.add("registered_params", "error", f"{len(leaves)} tensors ({size:,} values) require grad and shape the "
               "output but are not in model.parameters(): the optimizer never sees them, so they keep their "
               "initial values (and .to(device) and state_dict skip them too).",
               "Hold layers in nn.ModuleList / nn.ModuleDict (not a python list or dict) and tensors in "
               "nn.Parameter; stage 2.", ", ".join(where[:3]))


def check_shared_modules(pipe, report):
    """A layer object registered at several places is one layer applied several times: [layer] * n
    repeats one object. Sharing on purpose registers a module once and calls it twice in forward."""
    places = {}
    for name, m in pipe["model"].named_modules(remove_duplicate=False):   # read only
        if any(True for _ in m.parameters(recurse=False)):
            places.setdefault(id(m), (m, []))[1].append(name)
    shared = [(m, names) for m, names in places.values() if len(names) > 1]
    if not shared:
        return None
    m, names = shared[0]
    report.add("shared_modules", "warning", f"one {type(m).__name__} object is registered at {len(names)} places "
               f"({', '.join(repr(n) for n in names[:4])}): these layers share one set of weights, so the model is "
               "shallower than it looks. A list repeated with * ([layer, act] * n) repeats one object.",
               "Build every layer with its own constructor call ([nn.Linear(64, 64) for _ in range(n)]); to "
               "share on purpose, register the module once and call it several times in forward; stage 2.",
               ", ".join(names[:3]), shared=[n for _, n in shared])


def check_model_linearity(pipe, report):
    """Stacked weight layers need a nonlinearity between them; without one the model is a single affine
    map however deep it looks (the ReLU forgotten in nn.Sequential). Tested as f((a+b)/2) = (f(a)+f(b))/2."""
    model = fresh_model(pipe).eval()
    if sum(isinstance(m, WEIGHT_LAYERS) for m in model.modules()) < 2:
        return "fewer than two weight layers: a linear model may be meant"
    x = pipe["x"][:64]
    if not x.is_floating_point() or len(x) < 4:
        return "needs float inputs (indices are not averaged)"
    half = len(x) // 2
    a, b = x[:half], x[half:2 * half]
    with torch.no_grad():
        fa, fb, fm = joined(model(a)), joined(model(b)), joined(model((a + b) / 2))
    spread = (fa - fb).abs().max().item()
    if spread == 0:
        return "the outputs do not vary with the input (see input_dependence)"
    gap = ((fa + fb) / 2 - fm).abs().max().item() / spread
    note(report, "model_linearity", midpoint_gap=gap)
    if gap > LINEAR_GAP:
        return None
    report.add("model_linearity", "warning", f"the model is an affine function of its input (the output at the "
               f"midpoint of two inputs is the midpoint of their outputs, to {gap:.1g}): its weight layers "
               "compose to one linear map, so the extra layers add no capacity. An activation is missing "
               "between them.", "Put a nonlinearity (nn.ReLU()) after every hidden Linear/Conv layer; stage 2.",
               "model", gap=gap)


def unregistered_attributes(model):
    """'hidden' for `self.hidden = [nn.Linear(...), ...]`: module attributes that hide modules or tensors."""
    found = []
    for prefix, m in model.named_modules():
        for attr, value in vars(m).items():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, nn.Module) or (isinstance(v, torch.Tensor) and v.requires_grad) for v in items):
                if attr not in ("_parameters", "_buffers", "_modules") and not attr.startswith("_"):
                    found.append(f"{prefix}.{attr}" if prefix else attr)
    return found


def learning_rates(pipe, calls):
    """(the largest lr over the param groups at each of `calls` calls of train_step, the largest lr the
    learner set: a scheduler's initial_lr, whether a scheduler is attached). A fresh copy, batches of 2
    samples: the schedule is the point, not the weights - except for a ReduceLROnPlateau, whose schedule
    follows the metric it is fed, so it gets the learner's batch size and a model that learns. Without a
    scheduler (no initial_lr) and with the lr unchanged after LR_CONSTANT_CALLS calls, it stops there:
    nothing schedules the lr."""
    model = fresh_model(pipe)
    opt = make_optimizer_for(pipe, model)
    scheduled = lambda: any("initial_lr" in g for g in opt.param_groups)   # every LRScheduler sets it
    on_metric = any(issubclass(type(o), torch.optim.lr_scheduler.ReduceLROnPlateau) and o.optimizer is opt
                    for o in gc.get_objects())
    base = lambda: max(float(g.get("initial_lr", g.get("lr", 0.0))) for g in opt.param_groups)
    lrs, set_lr = [], base()           # a ReduceLROnPlateau sets no initial_lr: the lr before any step
    hook = opt.register_step_pre_hook(lambda o, a, k: lrs.append(max(float(g.get("lr", 0.0)) for g in o.param_groups)))
    try:
        for i, batch in enumerate(batches_from(pipe, 0, calls, pipe["batch_size"] if on_metric else 2)):
            if not math.isfinite(call_step(pipe, model, batch, opt)):
                break
            if i + 1 == LR_CONSTANT_CALLS and not scheduled() and not on_metric and len(set(lrs)) <= 1:
                break
    finally:
        hook.remove()
    pipe["cache"]["stale_schedulers"] = stale_schedulers(model, opt)
    pipe["cache"]["lr_on_metric"] = on_metric
    pipe["cache"]["lr_ahead"] = [] if on_metric or not lrs else lrs_ahead(opt, len(lrs))
    pipe["cache"]["growing_decays"] = [(type(o).__name__, o.gamma) for o in gc.get_objects()
                                       if type(o) in DECAYS and getattr(o, "optimizer", None) is opt and o.gamma > 1]
    return lrs, (set_lr if on_metric else base()), scheduled()


def lrs_ahead(opt, calls):
    """The largest lr over the param groups further into the run: the schedulers attached to opt (preflight's
    own throwaway copy) stepped on, at the rate train_step stepped them, up to LR_HORIZON calls. A schedule
    that refuses to go past its planned end stops there: OneCycleLR raises ValueError, a LambdaLR over a list
    of factors IndexError; whatever it raises, the run could not have gone further."""
    found = [o for o in gc.get_objects() if issubclass(type(o), torch.optim.lr_scheduler.LRScheduler)
             and getattr(o, "optimizer", None) is opt and getattr(o, "last_epoch", 0) > 0]
    inner = {id(c) for o in found for c in getattr(o, "_schedulers", ())}    # SequentialLR steps its own
    found = [o for o in found if id(o) not in inner]
    ahead = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sched in found:
            steps = round(sched.last_epoch / calls * (LR_HORIZON - calls))
            try:
                for _ in range(min(steps, 10 * LR_HORIZON)):
                    sched.step()
                    ahead.append(max(float(g["lr"]) for g in opt.param_groups))
            except Exception:                   # the schedule's planned end (see the docstring)
                pass
    return ahead


SCHEDULERS = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def stale_schedulers(model, opt):
    """LR schedulers that were stepped and schedule another optimizer over this model's parameters than
    the one train_step steps: an optimizer rebuilt after its scheduler was made, so the schedule is lost."""
    own = {id(p) for p in model.parameters()}
    found = []
    for obj in gc.get_objects():
        if issubclass(type(obj), SCHEDULERS):          # type(), not isinstance: some lazy objects warn when probed
            other = getattr(obj, "optimizer", None)
            params = [p for g in getattr(other, "param_groups", ()) for p in g["params"]]
            if (other is not None and other is not opt and params and all(id(p) in own for p in params)
                    and getattr(obj, "last_epoch", 0) > 0):
                found.append(obj)
    return found


def check_lr_schedule(pipe, report):
    """The lr a train_step uses must not collapse within a few hundred steps of a run of thousands:
    a schedule meant per epoch (StepLR, CosineAnnealing with T_max=epochs) stepped per batch does."""
    lrs, base, scheduled = learning_rates(pipe, LR_CALLS)
    stale = pipe["cache"].pop("stale_schedulers", [])
    if stale:
        report.add("lr_schedule", "error", f"a {type(stale[0]).__name__} was stepped {stale[0].last_epoch} times "
                   "during train_step but schedules another optimizer than the one train_step steps (both over "
                   "this model's parameters): the optimizer was rebuilt after the scheduler was created, so the "
                   f"schedule never reaches it and the lr stays at {base:.3g}.",
                   "Create the scheduler from the optimizer you train with (after any rebuild); stage 5.",
                   "make_optimizer")
        return None
    if lrs and not scheduled and len(set(lrs)) <= 1:
        return None                                   # the lr the learner set, unscheduled: it cannot collapse
    if len(lrs) < 10:
        return f"optimizer.step() ran {len(lrs)} times in {LR_CALLS} calls"
    note(report, "lr_schedule", max_over_set=max(lrs) / base if base else float("nan"),
         low_over_peak=min(lr / max(lrs[:i + 1]) for i, lr in enumerate(lrs) if max(lrs[:i + 1]) > 0)
         if max(lrs) > 0 else 0.0)
    if max(lrs) < LR_NEVER_UP * base:
        report.add("lr_schedule", "error", f"the learning rate stays at or below {max(lrs):.3g} for {len(lrs)} steps, "
                   f"{max(lrs) / base:.2g} of the lr you set ({base:.3g}): a scheduler lowered it at creation (a "
                   "warmup's start_factor) and is never stepped, or its warmup lasts far longer than the run.",
                   "Call scheduler.step() after optimizer.step() (per batch for warmups), and size the warmup "
                   "to a few % of the run; stage 5.", "train_step", lrs=lrs)
        return None
    top = [max(lrs[:i + 1]) for i in range(len(lrs))]             # the highest lr so far
    low = min(range(len(lrs)), key=lambda i: lrs[i] / top[i] if top[i] > 0 else 1.0)
    if top[low] <= 0 or lrs[low] >= LR_FLOOR * top[low]:
        return runaway_lr(pipe, base, report)
    peak = lrs.index(top[low])
    if pipe["cache"].get("lr_on_metric"):
        report.add("lr_schedule", "error", f"the learning rate falls from {lrs[peak]:.3g} (step {peak}) to "
                   f"{lrs[low]:.3g} by step {low}, cut by a ReduceLROnPlateau: the metric it is fed never counts "
                   "as improving while the model learns - mode='min' (the default) fed a metric that should rise "
                   "(accuracy), or a patience of a few steps for a scheduler stepped every batch.",
                   "Use mode='max' for accuracy-like metrics, feed it a validation metric once per epoch; "
                   "stage 5.", "train_step", lrs=lrs)
        return None
    report.add("lr_schedule", "error", f"the learning rate falls from {lrs[peak]:.3g} (step {peak}) to "
               f"{lrs[low]:.3g} by step {low}: after {low} steps training has all but stopped. A schedule meant "
               "per epoch (StepLR, MultiStepLR, CosineAnnealingLR with T_max=epochs) is stepped every batch.",
               "Call scheduler.step() once per epoch, or size it in batches (T_max/total_steps = epochs x "
               "batches per epoch); stage 5.", "train_step", lrs=lrs)


DECAYS = (torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.MultiStepLR,
          torch.optim.lr_scheduler.ExponentialLR)      # schedulers that exist to multiply the lr by gamma < 1


def runaway_lr(pipe, base, report):
    """An error when the schedule raises the lr without bound (a warmup factor missing its cap), or when a
    decay scheduler is given a gamma above 1 (10 for "divide by 10"): it multiplies the lr instead."""
    growing = pipe["cache"].pop("growing_decays", [])
    ahead, runaway = pipe["cache"].pop("lr_ahead", []), False
    if len(ahead) >= 10 and base > 0:
        half = len(ahead) // 2
        first, second = max(ahead[:half]), max(ahead[half:])
        note(report, "lr_schedule", ahead_over_set=ahead[-1] / base, ahead_rising=second / max(first, 1e-300))
        runaway = ahead[-1] > LR_RUNAWAY * base and second > LR_STILL_RISING * first
    if runaway:
        report.add("lr_schedule", "error", f"the learning rate keeps rising: stepping the schedule on as far as "
                   f"{LR_HORIZON} calls of train_step would, it reaches {ahead[-1]:.3g}, {ahead[-1] / base:.0f}x the "
                   f"lr you set ({base:.3g}), and is still climbing ({second / first:.1f}x from the first half of "
                   "that run to the second): a warmup whose factor has no cap (min(1, step / warmup)), or a decay "
                   "factor above 1.", "Cap the warmup factor at 1 and check the schedule's formula; stage 5.",
                   "make_optimizer", lrs=ahead[::max(1, len(ahead) // 100)])
    elif growing:
        name, gamma = growing[0]
        report.add("lr_schedule", "error", f"{name}(gamma={gamma:g}) multiplies the learning rate by {gamma:g} at "
                   "each of its steps: a decay scheduler given the factor's inverse (gamma=10 for 'divide by 10'), "
                   "so the lr grows where it should fall.", "Use gamma < 1 (0.1 divides the lr by 10); stage 5.",
                   "make_optimizer")
    return None


def check_weight_decay(pipe, report):
    """Weight decay is a gentle pull: far smaller than the gradient (L2 in SGD/Adam), or a slow shrink
    per step (AdamW). Orders of magnitude more swamp learning."""
    explicit = penalty_in_step(pipe, report)
    model = fresh_model(pipe).train()
    opt = make_optimizer_for(pipe, model)
    groups = [g for g in opt.param_groups if g.get("weight_decay", 0)]
    if not groups:
        # judged, but said as before when quiet: the notebooks print this line for their pipelines
        return None if explicit is not None and explicit > PENALTY_RATIO else "no param group has weight_decay"
    decoupled = isinstance(opt, torch.optim.AdamW) or any(g.get("decoupled_weight_decay") for g in groups)
    if decoupled:
        shrink = max(float(g["lr"]) * g["weight_decay"] for g in groups)
        note(report, "weight_decay", shrink_per_step=shrink)
        if shrink > DECOUPLED_SHRINK:
            report.add("weight_decay", "error", f"decoupled weight decay shrinks the weights by {shrink:.2g} of "
                       f"their size every step (lr x weight_decay): they halve in {math.log(2) / shrink:.0f} steps "
                       "whatever the data says. Typical: 1e-5 .. 1e-4 per step.",
                       "Check weight_decay for a typo (0.05, not 5); stage 4.", "make_optimizer")
        return None
    x, y = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
    pipe["loss_fn"](model(x), y).backward()
    ratios = []
    for g in groups:
        for p in g["params"]:
            if p.grad is not None and p.ndim >= 2 and p.grad.norm() > 0:
                ratios.append((g["weight_decay"] * p.detach().norm() / p.grad.norm()).item())
    if not ratios:
        return "no decayed weight matrix gets a gradient"
    median = sorted(ratios)[len(ratios) // 2]
    note(report, "weight_decay", decay_over_grad=median)
    if median > DECAY_RATIO:
        wd = max(g["weight_decay"] for g in groups)
        report.add("weight_decay", "error", f"weight_decay={wd:g} makes the decay term {median:.3g}x the loss's "
                   "gradient (median weight matrix at init): every step mostly shrinks the weights toward 0 "
                   "instead of fitting the data. Typical: 0.001 .. 0.1 of it.",
                   "Check weight_decay for a typo (5e-4, not 5); stage 4.", "make_optimizer", ratios=ratios)


def penalty_in_step(pipe, report):
    """A penalty written into train_step (loss + lam * sum ||w||^2) adds to each weight's gradient a term
    parallel to the weight itself: the step's gradient minus loss_fn's own gradient at the same weights
    and batch. Its size against loss_fn's gradient is judged like weight_decay's. None when it cannot be
    measured (no step, accumulation, a step that changes the batch: then the difference is not parallel)."""
    rec = steps(pipe)
    if isinstance(rec, str) or rec["first_step"] != 0 or rec["backwards"][0] != 1:
        return None
    model = fresh_model(pipe).train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(rec["params"][0][n])
    x, y = batches_from(pipe, 0, 1, min(pipe["batch_size"], 64))[0]
    seed_all(pipe["seed"])
    with warnings.catch_warnings():                   # the step already ran this loss: its warnings were seen
        warnings.simplefilter("ignore")
        pipe["loss_fn"](model(x), y).backward()
    step_grads, ratios = rec["backward_grads"][0], []
    for n, p in model.named_parameters():
        if n not in rec["params"][0] or n not in step_grads:   # a parameter the forward created (see optimizer_params)
            continue
        g, w = p.grad, rec["params"][0][n]
        if g is None or w.ndim < 2 or not g.norm() > 0 or not w.norm() > 0:
            continue
        extra = (step_grads[n] - g).double().flatten()
        along = (extra @ w.double().flatten()) / (extra.norm() * w.norm() + 1e-300)
        ratios.append((extra.norm() / g.norm()).item() if along > PENALTY_ALONG else 0.0)
    if not ratios:
        return None
    median = sorted(ratios)[len(ratios) // 2]
    note(report, "weight_decay", penalty_over_grad=median)
    if median > PENALTY_RATIO:
        report.add("weight_decay", "error", f"train_step adds to the gradient a pull toward 0 (a term parallel to the "
                   f"weights: an L2 penalty written into the loss) that is {median:.3g}x the loss's own gradient "
                   "(median weight matrix at init): every step mostly shrinks the weights instead of fitting the "
                   "data. The penalty's coefficient is missing or far too large; typical: 1e-5 .. 1e-3.",
                   "Multiply the penalty by a small coefficient (loss + 5e-4 * sum(w.pow(2).sum())), or drop it and "
                   "set the optimizer's weight_decay; stage 4.", "train_step", ratios=ratios)
    return median


# ----------------------------------------------------------------------------- what the loss counts

def class_weights_seen(pipe):
    """The weight the loss gives each class, read from its gradient: one sample per class, uniform
    logits; a class's row of the gradient is proportional to its weight (0 when ignored)."""
    C = pipe["num_classes"]
    z = torch.zeros(C, *pipe["out_shape"], device=pipe["device"], requires_grad=True)
    y = torch.arange(C, device=pipe["device"])
    if pipe["y"].ndim > 1:                             # per-position labels: one class per sample everywhere
        y = y.view(C, *[1] * (pipe["y"].ndim - 1)).expand(C, *pipe["y"].shape[1:])
    out = F.log_softmax(z, 1) if pipe["loss_kind"]["name"] == "nll" else z
    loss = pipe["loss_fn"](out, y)
    if not torch.isfinite(loss):
        return None
    loss.backward()
    w = z.grad.reshape(C, -1).norm(dim=1).double()
    return w / w.max() if w.max() > 0 else w


# A loss that is linear in the model's outputs has no minimum: training drives the outputs to infinity.
# Measured as the second difference along LINEAR_DIRECTIONS random directions, steps of 3x the outputs' size
# (wide enough to cross the kinks of L1 or hinge losses), relative to the first difference. The 9 correct
# pipelines whose loss is not CE/NLL (BCE, focal, Dice + CE, MSE, L1): 3.7-1140; other bugs >= 0.047; BCE with
# its arguments swapped: 0.
LINEAR_DIRECTIONS, LINEAR_TOL = 3, 1e-4


def loss_linear_in_outputs(pipe, report):
    """True (and an error) when loss_fn(outputs, targets) is an affine function of the outputs."""
    x, y = pipe["x"][:64], pipe["y"][:64]
    with torch.no_grad():
        out = fresh_model(pipe).eval()(x)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return False
        g = torch.Generator().manual_seed(pipe["seed"])
        step = 3 * (out.abs().mean().item() + 1)
        curvature = []
        for _ in range(LINEAR_DIRECTIONS):
            d = torch.randn(out.shape, generator=g).to(out) * step
            try:
                lo, mid, hi = (float(pipe["loss_fn"](out + t * d, y)) for t in (-1.0, 0.0, 1.0))
            except Exception:
                return False
            if not all(math.isfinite(v) for v in (lo, mid, hi)) or hi == lo:
                return False
            curvature.append(abs(hi + lo - 2 * mid) / abs(hi - lo))
    note(report, "loss_classes", curvature=min(curvature))
    if min(curvature) > LINEAR_TOL:
        return False
    report.add("loss_classes", "error", "the loss is a linear function of the model's outputs (no curvature along "
               f"{LINEAR_DIRECTIONS} random directions): it has no minimum, so training pushes the outputs to "
               "infinity instead of toward the targets. Usually the loss's arguments are swapped, e.g. "
               "F.binary_cross_entropy_with_logits(target, logits), which reads the outputs as the targets.",
               "Call the loss as loss_fn(outputs, targets): the model's output first; stage 2.", "loss_fn",
               curvature=min(curvature))
    return True


def check_loss_classes(pipe, report):
    """Every class present in the labels must count in the loss, with weights that do not favour the
    frequent classes (nor, with a sampler, invert the prior); class ids must not be fitted as numbers;
    targets must fit the loss (shape, range)."""
    if pipe["several_outputs"]:
        return several_outputs(pipe)
    if pipe["loss_kind"] is None:
        if loss_linear_in_outputs(pipe, report):
            return None
        if loss_targets(pipe, report) or targets_pushed_wrong(pipe, report):
            return None
        trained_prior(pipe, report)
        return regression_on_ids(pipe, report)
    if soft_targets_in_step(pipe, report):
        return None
    C = pipe["num_classes"]
    w = class_weights_seen(pipe)
    if w is None:
        return "the loss is not finite on one sample per class"
    counts = torch.bincount(pipe["y"].reshape(-1).clamp(0, C - 1).cpu(), minlength=C).double()
    present = counts > 0
    absent_classes(pipe, report)
    ignored = [c for c in range(C) if present[c] and w[c] == 0]
    if ignored:
        share = counts[ignored].sum().item() / counts.sum().item()
        report.add("loss_classes", "error", f"class(es) {ignored} ({share:.0%} of the labels) contribute nothing to "
                   "the loss or its gradient: the model is never taught them. ignore_index is set to a real class, "
                   "or their class weight is 0.",
                   "Set ignore_index only to a value no real label takes (the default -100) and give every class "
                   "a weight > 0; stage 2.", "loss_fn", weights=w.tolist())
        return None
    use = present & (w > 0)
    if use.sum() < 2:
        return "fewer than two classes present"
    if w[use].max() / w[use].min() > WEIGHT_SPAN:
        report.add("loss_classes", "error", f"the class weights span {w[use].max() / w[use].min():.3g}x: the "
                   "lightest classes are as good as ignored.", "Use inverse-frequency weights (or their square root) "
                   "at most; stage 2.", "loss_fn", weights=w.tolist())
        return None
    freq = (counts / counts.sum())[use].log()
    if freq.max() - freq.min() < math.log(BALANCED_RATIO):
        return None                                   # balanced classes: any weighting is a choice
    lw = w[use].log()
    slope = (((freq - freq.mean()) * (lw - lw.mean())).sum() / ((freq - freq.mean()) ** 2).sum()).item()
    # the same weights given to the classes in the best order: the rarest class gets the largest weight
    ranked = lw.sort(descending=True).values[freq.argsort().argsort()]
    best = (((freq - freq.mean()) * (ranked - ranked.mean())).sum() / ((freq - freq.mean()) ** 2).sum()).item()
    note(report, "loss_classes", weight_slope=slope, weight_slope_sorted=best)
    if slope > WEIGHT_SLOPE:
        report.add("loss_classes", "error", f"the loss weights classes up as they get more frequent (slope "
                   f"{slope:.2f} of log weight vs log frequency; inverse-frequency weights give -1): the rare "
                   "classes count less than in the plain loss. The weights are the counts, not their inverse.",
                   "Use weight = counts.sum() / (C * counts) (inverse frequency); stage 2.", "loss_fn",
                   weights=w.tolist(), slope=slope)
    elif best < -WEIGHT_ORDER_SIZE and slope - best > WEIGHT_ORDER_GAP:
        report.add("loss_classes", "error", f"the class weights have the sizes of inverse-frequency weights (given "
                   f"in the best order they would have slope {best:.2f} of log weight vs log frequency) but not "
                   f"their order (slope {slope:.2f}): a rare class's weight goes to another class. The weights were "
                   "built in another order than the class ids: Counter(labels).values() (first-seen order), a dict, "
                   "or sorted class names.", "Index the weights by class id: w[k] = N / (C * count[k]) for k in "
                   "range(C); stage 2.", "loss_fn", weights=w.tolist(), slope=slope, slope_sorted=best)
    else:
        trained_prior(pipe, report)                  # the weights are sound: and with the sampler?


def soft_targets_in_step(pipe, report):
    """True (and an error) when train_step hands CrossEntropyLoss float targets (B, C) that are not
    probabilities: it reads float targets as class probabilities, so a teacher's raw logits (where
    softmax(teacher / T) was meant) or rows that do not sum to 1 train toward nothing meaningful. Mixup,
    cutmix and label smoothing make rows of probabilities and pass (a bfloat16 softmax's rounding too)."""
    if pipe["loss_kind"]["name"] != "cross_entropy" or pipe["train_step"] is None:
        return False
    calls = fed_in_step(pipe, batches_from(pipe, 0, 1, min(pipe["batch_size"], 64)))
    t = calls[0][1] if calls else None
    if t is None or not t.is_floating_point() or t.ndim != 2 or t.shape[1] != pipe["num_classes"]:
        return False
    t, sums = t.float(), t.float().sum(1)
    if t.min().item() >= -SOFT_TARGET_TOL and (sums - 1).abs().max().item() <= SOFT_TARGET_TOL:
        return False
    report.add("loss_classes", "error", f"train_step hands CrossEntropyLoss float targets {tuple(t.shape)} whose "
               f"values range {t.min().item():.3g}..{t.max().item():.3g} and whose rows sum to "
               f"{sums.min().item():.3g}..{sums.max().item():.3g}: it reads float targets as class probabilities "
               "(>= 0, summing to 1). A teacher's raw logits where softmax(teacher_logits / T) was meant, or "
               "multi-hot rows.", "Turn the targets into probabilities (F.softmax(teacher_logits / T, dim=1)); "
               "for several labels per sample use BCEWithLogitsLoss; stage 2.", "train_step")
    return True


def absent_classes(pipe, report):
    """Classes the model has an output for that no target names, in a pool large enough to hold every class
    (ABSENT_MIN_SAMPLES per output): the model learns never to predict them. A label conversion that merges
    classes (a mask saved as 0/128/255 and divided by 128), or more outputs than classes."""
    C, y = pipe["num_classes"], pipe["y"].reshape(-1).cpu()
    if len(pipe["y"]) < ABSENT_MIN_SAMPLES * C:
        return
    counts = torch.bincount(y[(y >= 0) & (y < C)], minlength=C)
    absent = [c for c in range(C) if counts[c] == 0]
    if not absent or len(absent) == C:
        return
    report.add("loss_classes", "warning", f"the model outputs {C} class scores, but class(es) {absent} appear in "
               f"none of {len(pipe['y'])} samples' targets: training only teaches the model never to predict "
               "them. A label conversion that merged classes (255 // 128 == 1), or more outputs than classes.",
               "Check the targets' values (torch.unique(y)) against the classes you mean; give the model one "
               "output per class; stage 1.", "loss_fn", absent=absent)


def constant_optimum(pipe, y):
    """Class probabilities of the constant output that minimizes loss_fn on targets y: the prior a model
    that learned nothing from the inputs would settle on (damped Newton steps on the C outputs; no
    torch.optim, whose step() the checks watch). None when the loss has no such single minimum."""
    binary, shape = pipe["loss_kind"] is None, tuple(pipe["out_shape"])
    nll = not binary and pipe["loss_kind"]["name"] == "nll"

    def loss(z):
        out = z.reshape(shape).expand(len(y), *shape)
        return pipe["loss_fn"](F.log_softmax(out, 1) if nll else out, y)
    z = torch.zeros(math.prod(shape), device=pipe["device"])
    try:
        for _ in range(30):
            value = loss(z)
            grad = torch.autograd.functional.jacobian(loss, z)
            hess = torch.autograd.functional.hessian(loss, z)
            step = torch.linalg.solve(hess + 1e-6 * torch.eye(len(z), dtype=z.dtype, device=z.device), grad)
            t = 1.0
            while t > 1e-4 and not loss(z - t * step) <= value:
                t /= 2
            z = z - t * step
            if step.abs().max() * t < 1e-5:
                break
    except Exception:
        return None
    z = z.detach().double().cpu()
    if not torch.isfinite(z).all() or z.abs().max() > 30:
        return None
    return torch.stack([1 - torch.sigmoid(z[0]), torch.sigmoid(z[0])]) if binary else torch.softmax(z, 0)


def trained_prior(pipe, report):
    """A sampler that balances the batches and class weights (or pos_weight) that balance the loss each
    do the job; together they invert the prior, so the rare class becomes the one the model predicts.
    Judged on the prior training pulls toward (constant_optimum on the loader's batches) against the
    data's. Class ids under cross-entropy/NLL, or 0/1 targets under BCE with one output."""
    y_data, out_shape = pipe["y"], tuple(pipe["out_shape"])
    binary = pipe["loss_kind"] is None
    if binary:
        if not (is_bce_with_logits(pipe["loss_fn"]) and out_shape in ((), (1,)) and y_data.numel() == len(y_data)
                and bool(((y_data == 0) | (y_data == 1)).all())):
            return
        C = 2
    else:
        C = pipe["num_classes"]
        if y_data.ndim != 1 or out_shape != (C,) or y_data.is_floating_point():
            return                                      # class ids, one score per class
    y_fed = torch.cat([b.reshape(len(b), *y_data.shape[1:]) for b in pipe["stream"]]) if pipe["stream"] else y_data
    labels = y_data.reshape(-1).long().cpu()
    counts = torch.bincount(labels[(labels >= 0) & (labels < C)], minlength=C).double()   # markers (-1) aside
    present = counts > 0
    if present.sum() < 2 or counts[present].max() / counts[present].min() < BALANCED_RATIO:
        return                                          # balanced data: any weighting is a choice
    prior = constant_optimum(pipe, y_fed.to(pipe["device"]))
    if prior is None or not (prior[present] > 0).all():
        return
    d, r = (counts / counts.sum())[present].log(), prior[present].log()
    d, r = d - d.mean(), r - r.mean()
    slope = ((d @ r) / (d @ d)).item()
    note(report, "loss_classes", prior_slope=slope)
    if PRIOR_INVERTED <= slope <= PRIOR_AMPLIFIED:
        return
    shown = ", ".join(f"{c}: {100 * counts[c] / counts.sum():.2g}% -> {100 * prior[c]:.2g}%"
                      for c in range(C) if present[c])
    fed = "the loader's batches" if pipe["stream"] else "the batches"
    if slope < PRIOR_INVERTED:
        why = ("the rare classes become the ones it predicts most: the imbalance is corrected twice (a sampler "
               "that balances the batches and class weights or pos_weight that balance the loss again)")
        fix = "Balance once: keep the sampler or the loss weights, not both; stage 2."
    else:
        why = ("the frequent classes count even more than in the data: weights or a sampler that favour the "
               "frequent classes (counts where their inverse was meant)")
        fix = "Give the rare classes the larger weight: weight = N / (C * count); stage 2."
    report.add("loss_classes", "warning", f"the constant output that minimizes loss_fn on {fed} (what training "
               f"pulls a model toward before it learns from the inputs) gives the classes the probabilities on the "
               f"right, where the data has those on the left ({shown}; slope {slope:.2f} of log prior on log "
               f"frequency, 1 = the data's, 0 = balanced): {why}.", fix, "loss_fn", prior=prior.tolist(), slope=slope)


def loss_targets(pipe, report):
    """Targets the loss cannot count as meant: outputs and targets that broadcast to a bigger tensor
    ((B, 1) against (B,) compares every output with every target), binary cross-entropy targets outside
    [0, 1] (masks saved as 0/255), probability targets of CrossEntropyLoss that do not sum to 1 (multi-hot).
    Returns True when it added an error (the other target checks are then moot)."""
    y, out_shape = pipe["y"], (len(pipe["y"]),) + tuple(pipe["out_shape"])
    if not y.is_floating_point():                     # class ids for a custom loss (focal...): not compared
        return False
    try:
        joint = torch.broadcast_shapes(out_shape, tuple(y.shape))
    except RuntimeError:
        joint = out_shape
    if math.prod(joint) > max(math.prod(out_shape), y.numel()):
        report.add("loss_classes", "error", f"the model outputs {tuple(out_shape)} and the targets are "
                   f"{tuple(y.shape)}: the loss broadcasts them to {tuple(joint)}, comparing every output with "
                   "every target of the batch, so the model learns the batch mean.",
                   "Make outputs and targets the same shape: out.squeeze(1) or y.unsqueeze(1); stage 2.", "loss_fn")
        return True
    lo, hi = y.min().item(), y.max().item()
    if is_bce_with_logits(pipe["loss_fn"]) or isinstance(pipe["loss_fn"], nn.BCELoss):
        if lo < 0 or hi > 1:
            report.add("loss_classes", "error", f"binary cross-entropy targets range {lo:.3g}..{hi:.3g}, outside "
                       "[0, 1]: the loss is unbounded below and pushes the outputs to infinity (masks saved as "
                       "0/255, labels -1/1?).", "Scale the targets to 0..1 (mask / 255, (y + 1) / 2); stage 1.",
                       "loss_fn")
            return True
    elif isinstance(pipe["loss_fn"], nn.CrossEntropyLoss) and tuple(y.shape) == out_shape and y.ndim == 2:
        sums = y.sum(1)
        if lo < 0 or (sums - 1).abs().max().item() > SUM_TOL:
            report.add("loss_classes", "error", f"CrossEntropyLoss gets float targets whose rows sum to "
                       f"{sums.min().item():.3g}..{sums.max().item():.3g}: it reads them as class probabilities, "
                       "which sum to 1. Multi-hot targets (several labels per sample) make the labels compete "
                       "in one softmax.", "For multi-label targets use nn.BCEWithLogitsLoss (one sigmoid per "
                       "label); for soft labels normalize each row to sum to 1; stage 2.", "loss_fn")
            return True
    return False


def targets_pushed_wrong(pipe, report):
    """0/1 targets shaped like the outputs (multi-label rows, masks): from outputs of 0 the loss must push
    each output up where its target is 1 and down where it is 0. A loss that reads the targets in another
    format pushes them otherwise: MultiLabelMarginLoss reads a row as class indices (a multi-hot row says
    "classes 0 and 1"). True (and an error) when under PUSHED_RIGHT of the pushed outputs go the target's way."""
    y = pipe["y"][:64]
    shape = (len(y),) + tuple(pipe["out_shape"])
    if tuple(y.shape) != shape or y.ndim < 2 or not bool(((y == 0) | (y == 1)).all()) or y.min() == y.max():
        return False
    z = torch.zeros(shape, device=pipe["device"], requires_grad=True)
    try:
        pipe["loss_fn"](z, y).backward()
    except Exception:
        return False
    if z.grad is None or not z.grad.any():
        return False
    pushed = z.grad != 0
    right = (((z.grad < 0) & (y == 1)) | ((z.grad > 0) & (y == 0)))[pushed].float().mean().item()
    note(report, "loss_classes", pushed_right=right)
    if right >= PUSHED_RIGHT:
        return False
    report.add("loss_classes", "error", f"the targets are 0/1 per output (multi-hot or a mask), but from outputs of "
               f"0 {type(pipe['loss_fn']).__name__} pushes only {right:.0%} of them toward their target (up where it "
               "is 1, down where it is 0): the loss reads the targets in another format. MultiLabelMarginLoss "
               "wants the indices of the positive labels padded with -1, not a multi-hot row.",
               "For multi-hot 0/1 targets use nn.BCEWithLogitsLoss (or MultiLabelSoftMarginLoss); stage 2.",
               "loss_fn", pushed_right=right)
    return True


def regression_on_ids(pipe, report):
    y = pipe["y"]
    if not y.is_floating_point() or pipe["out_shape"] not in ((), (1,)):
        return "not a classification loss"
    values = y.reshape(-1).unique()
    K = len(values)
    ids = bool((values == values.round()).all()) and K >= 3 and torch.equal(values.cpu(), torch.arange(K).to(values))
    if not ids:
        return "targets are not class ids 0..K-1"
    if K < ID_TARGET_CLASSES:
        return f"targets 0..{K - 1} may be an ordered scale (ratings): fitting them as numbers can be right"
    report.add("loss_classes", "error", f"the targets are the integers 0..{K - 1} and the loss fits them as numbers "
               "with one output: it treats class 5 as lying between classes 4 and 6 and calls predicting 4 for a "
               "9 worse than predicting 8. Class ids have no order.",
               f"Give the model {K} outputs and use nn.CrossEntropyLoss with integer (long) labels; stage 2.",
               "loss_fn")


# ----------------------------------------------------------------------------- what the model sees

def check_input_layout(pipe, report):
    """Neighbouring pixels are alike along both axes of an image; a view/reshape where a permute was meant
    keeps memory neighbours alike and scrambles the other axis."""
    model = fresh_model(pipe).eval()
    seen = []

    def on_call(name, module, inp, out):
        if not seen and isinstance(module, nn.Conv2d) and inp is not None and inp.ndim == 4:
            seen.append((name, inp.detach()))
    with torch.no_grad():
        trace(model, pipe["x"][:64], on_call)
    if not seen:
        return "no Conv2d sees 4-d inputs"
    name, x = seen[0]
    if min(x.shape[2:]) < 4 or not x.is_floating_point():
        return f"the first conv's input {tuple(x.shape)} is too small to measure"
    x = x.double() - x.double().mean((0, 2, 3), keepdim=True)
    corr = [neighbour_correlation(x, dim) for dim in (3, 2)]   # along W, along H
    hi, lo = max(corr), min(corr)
    note(report, "input_layout", high_corr=hi, ratio=lo / hi if hi > 0 else float("nan"))
    if hi < LAYOUT_MIN_CORR or lo >= LAYOUT_RATIO * hi:
        return None
    axis = "height" if corr[1] < corr[0] else "width"
    report.add("input_layout", "error", f"at '{name}', neighbouring pixels correlate {corr[0]:.2f} along the width "
               f"but {corr[1]:.2f} along the height: the {axis} axis is scrambled. Images reshaped with "
               "view/reshape from (B, H, W, C) to (B, C, H, W) look like this: same values, wrong geometry.",
               "Use x.permute(0, 3, 1, 2) for channels-last images, never view/reshape; stage 1 (look at what "
               "the model sees: plot x[0] as the model gets it).", name, correlations=corr)


def neighbour_correlation(x, dim):
    a, b = x.narrow(dim, 1, x.shape[dim] - 1), x.narrow(dim, 0, x.shape[dim] - 1)
    return ((a * b).sum() / (a.pow(2).sum() * b.pow(2).sum()).sqrt().clamp_min(1e-300)).item()


def check_eval_determinism(pipe, report):
    """In eval mode a model is a function: the same batch gives the same outputs whatever the random state.
    EVAL_SEEDS random states, not two: randomness that fires with probability p per forward (a transform
    such as RandomErasing(p=0.5) inside the model) shows in two forwards only half the time."""
    model = fresh_model(pipe).eval()
    x = pipe["x"][:32]
    runs = []
    for seed in range(1, EVAL_SEEDS + 1):
        calls = []
        seed_all(seed)
        with torch.no_grad():
            out = joined(trace(model, x, lambda n, m, i, o: calls.append((n, i, o))))
        runs.append((out, calls))
    (a, calls_a) = runs[0]
    diffs = [(b - a).abs().max().item() / max(a.abs().max().item(), 1e-12) for b, _ in runs[1:]]
    diff = max(diffs)
    note(report, "eval_determinism", relative_diff=diff)
    if diff <= EVAL_NOISE:
        return None
    calls_b = runs[1 + diffs.index(diff)][1]
    report.add("eval_determinism", "error", f"two eval-mode forwards of the same {len(x)} inputs differ by {diff:.2g} "
               "of the outputs' size: something random ignores model.eval(), e.g. F.dropout(x, p) without "
               "training=self.training, or noise added in forward. Evaluation and predictions are then random.",
               "Use nn.Dropout modules, or pass training=self.training to F.dropout; add noise only when "
               "self.training; stage 2.", random_place(calls_a, calls_b))


def random_place(calls_a, calls_b):
    """The first module whose output differs between the runs: it, or the forward code before it."""
    prev = None
    for (name, ia, oa), (_, ib, ob) in zip(calls_a, calls_b):
        if ia is not None and ib is not None and ia.shape == ib.shape and not torch.equal(ia, ib):
            return f"forward code before '{name}'" + (f" (after '{prev}')" if prev else "")
        if oa is not None and ob is not None and oa.shape == ob.shape and not torch.equal(oa, ob):
            return name
        prev = name
    return f"forward code after '{prev}'" if prev else "forward"



def check_augmentation(pipe, report):
    """A correct augmentation keeps what an image shows, so its label still fits: a classifier fitted on
    unaugmented images classifies the augmented ones about as well (a flipped 6 is a 9)."""
    C, y = pipe["num_classes"], pipe["y"]
    x = pipe["x"]
    if y.ndim >= 3 and x.ndim == 4 and y.shape[-2:] == x.shape[-2:]:
        return paired_geometry(pipe, report)                  # per-pixel targets: does the target move with x?
    if not C or y.ndim != 1 or len(y) < AUG_PROBES + 10 * C:
        return "needs class labels and more pool samples" if C and y.ndim == 1 else "not a classification task"
    seen = augmented_inputs(pipe)
    if isinstance(seen, str):
        return seen
    x_seen, y_seen = seen
    x, ref = pipe["x"][:AUG_PROBES].cpu(), pipe["x"][AUG_PROBES:].cpu()
    if torch.equal(x_seen, x):
        return None                                           # no augmentation in train_step: nothing changes
    if x_seen.shape != x.shape or not x.is_floating_point():
        return f"train_step feeds the model {tuple(x_seen.shape)} for a batch of {tuple(x.shape)}: not comparable"
    clear = y_seen.max(dim=1).values >= 1 - AUG_SHARE        # soft targets that say "a blend" are not judged
    if clear.sum() < AUG_PROBES // 4:
        return f"the loss's targets name one class for only {int(clear.sum())} of {len(x)} samples (mixup?)"
    y_ref = y[AUG_PROBES:].cpu()
    before = (knn_labels(unit_rows(x), unit_rows(ref), y_ref) == y[:AUG_PROBES].cpu())[clear]
    rows = torch.arange(len(x))
    after = torch.zeros(len(x), dtype=torch.bool)
    for seen in (x_seen, shifted_back(x_seen, x)):      # as fed, and shifted back (a mixup partner is no shift)
        after |= y_seen[rows, knn_labels(unit_rows(seen), unit_rows(ref), y_ref)] >= AUG_SHARE
    after = after[clear]                                  # right: a class the loss's target gives weight
    chance = torch.bincount(y_ref, minlength=C).max().item() / len(y_ref)
    a0, a1 = before.float().mean().item(), after.float().mean().item()
    if a0 - chance < 0.2:
        return f"pixels barely predict the label here (nearest-neighbour accuracy {a0:.2f}, chance {chance:.2f})"
    kept = (a1 - chance) / (a0 - chance)
    note(report, "augmentation", kept=kept, accuracy_before=a0, accuracy_after=a1)
    if kept >= AUG_KEPT:
        return None
    labels = y_seen.argmax(dim=1)[clear]
    worst = sorted(range(C), key=lambda c: (after[labels == c].float().mean() - before[labels == c].float().mean())
                   .nan_to_num(0).item())[:2]
    severity = "error" if kept < AUG_BROKEN else "warning"
    report.add("augmentation", severity, f"train_step's augmentation changes what the images show: a nearest-"
               f"neighbour classifier fitted on unaugmented samples gets {a0:.0%} of {len(before)} images right, "
               f"and {a1:.0%} of the same images as train_step feeds them to the model, even after undoing shifts "
               f"(chance {chance:.0%}). They keep {kept:.0%} of its skill; label-preserving flips of clothes, "
               f"crops, small rotations, erasing and noise keep >= 93%. The augmented images no longer match "
               f"their labels (a flipped 6 is a 9, a mirrored 2 a 5, images shuffled apart from their labels); "
               f"classes hit most: {', '.join(str(c) for c in worst)}.",
               "Use only transforms that keep the label for this data (no flips or large rotations for digits, "
               "letters or text), and move images and labels together; stage 1 (plot a batch exactly as "
               "train_step feeds it to the model, with its labels).", "train_step")


def dihedral(t):
    """The 8 flips and rotations of the last two dims (4 when they are not square), named."""
    out = {"as is": t, "flipped left-right": t.flip(-1), "flipped upside down": t.flip(-2),
           "rotated 180": t.flip(-1).flip(-2)}
    if t.shape[-1] == t.shape[-2]:
        tt = t.transpose(-1, -2)
        out.update({"transposed": tt, "rotated 90": tt.flip(-2), "rotated 270": tt.flip(-1),   # as torch.rot90
                    "anti-transposed": tt.flip(-1).flip(-2)})
    return out


def paired_geometry(pipe, report):
    """Per-pixel targets (segmentation, dense regression) must move with their image: for every sample whose
    fed image is a flip or rotation of its pool image, the fed target must be the same flip or rotation of its
    pool target."""
    batches, pairs = batches_from(pipe, 0, 4, STEP_BATCH), []
    for batch, (inputs, target) in zip(batches, fed_in_step(pipe, batches)):
        if not inputs or target is None or inputs[0].shape != batch[0].shape or target.shape != batch[1].shape:
            return "train_step does not feed the model and the loss one image and one target per sample"
        pairs += zip(batch[0].cpu(), batch[1].cpu(), inputs[0], target)
    moved, wrong = 0, []
    for x, y, x_fed, y_fed in pairs:
        xs, ys = dihedral(x), dihedral(y)
        how = [k for k, t in xs.items() if torch.allclose(t, x_fed, atol=1e-5)]
        if not how or "as is" in how:
            continue                                          # not a flip or rotation, or none at all
        moved += 1
        if not any(torch.equal(ys[k], y_fed) for k in how):
            wrong.append((how[0], next((k for k, t in ys.items() if torch.equal(t, y_fed)), "something else")))
    note(report, "augmentation", flipped_samples=moved, target_not_moved=len(wrong))
    if not moved or len(wrong) < max(2, AUG_SHARE * moved):
        return None if moved else "train_step flips or rotates no image"
    image, target = wrong[0]
    report.add("augmentation", "error", f"train_step flips or rotates {moved} of {len(pairs)} images, and in "
               f"{len(wrong)} of them the target does not follow: e.g. the image {image}, its target {target}. The "
               "per-pixel labels then describe another picture.",
               "Apply the same transform to image and target (one random draw, the same dims: dim -1 is the width "
               "of both (N, C, H, W) images and (N, H, W) masks); stage 1 (plot a batch with its masks).",
               "train_step")


def augmented_inputs(pipe):
    """(inputs the model got in train_step, the labels the loss got) for the first AUG_PROBES pool samples,
    or a string saying why they cannot be paired with the unaugmented batch."""
    batches = batches_from(pipe, 0, AUG_PROBES // STEP_BATCH, STEP_BATCH)
    xs, ys = [], []
    for batch, (inputs, target) in zip(batches, fed_in_step(pipe, batches)):
        kept, rows = [], 0
        for t in inputs:                              # the forwards that cover the batch once (R-Drop runs two)
            if rows < len(batch[1]):
                kept.append(t)
                rows += len(t)
        if rows != len(batch[1]) or any(t.shape[1:] != kept[0].shape[1:] for t in kept):
            return "train_step does not feed the model one input per batch sample"
        xs.append(torch.cat(kept))
        ys.append(step_targets([] if target is None else [target], batch[1].cpu(), pipe["num_classes"]))
    return torch.cat(xs), torch.cat(ys)


def step_targets(targets, y, C):
    """(B, C) the share of each class in the target the loss saw: one-hot for integer targets, the soft
    targets themselves (mixup, label smoothing), else one-hot y."""
    t = targets[0] if targets else None
    if t is not None and len(t) == len(y):
        if t.ndim == 1 and not t.is_floating_point() and 0 <= t.min() and t.max() < C:
            return F.one_hot(t, C).double()
        if t.shape == (len(y), C) and t.is_floating_point():
            return t.double()
    return F.one_hot(y, C).double()


def unit_rows(x):
    f = x.flatten(1).double()
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def shifted_back(seen, x):
    """Each augmented image rolled by the shift (up to a quarter of its size) that best matches its original."""
    if seen.ndim != 4:
        return seen
    s = max(1, min(seen.shape[2:]) // 4)
    shifts = [(a, b) for a in range(-s, s + 1) for b in range(-s, s + 1)]
    target = unit_rows(x)
    match = torch.stack([(unit_rows(torch.roll(seen, sh, (2, 3))) * target).sum(1) for sh in shifts])
    return torch.stack([torch.roll(seen[i], shifts[j], (1, 2)) for i, j in enumerate(match.argmax(0).tolist())])


def knn_labels(query, ref, y_ref, k=5):
    return torch.mode(y_ref[(query @ ref.T).topk(k, dim=1).indices], dim=1).values

# ----------------------------------------------------------------------------- train / eval consistency

# train_eval_consistency: where randomness first enters (the first module whose input differs between two
# train-mode forwards), the mean over TRAIN_DRAWS train-mode inputs must equal the eval-mode input: dropout
# and stochastic depth scale by 1/p for this. Only that first point is compared: later nonlinearities add a
# Jensen gap that correct dropout has too (output-level gap of a correct CNN with dropout 0.3-0.5: 0.92).
# Statistic: squared distance of the mean from the eval input / its sampling variance (about 1 when unbiased).
# Clean 0.78-1.32 (stochastic_depth, drop_path fixed, MLPs with dropout 0.1-0.6, a CNN with Dropout2d 0.3 and
# Dropout 0.5, dropout 0.9 scaled correctly); drop_path_unscaled 66.
TRAIN_DRAWS, TRAIN_EVAL_BIAS = 64, 10.0
# ... and the difference must matter: at least TRAIN_EVAL_SHARE of the input's size. spectral_norm's power
# iteration updates its vectors in every train-mode forward (state, not randomness): its mean differs from
# eval by 61x the sampling noise but by 0.1% of the input's size. Bugs over the bias limit: 15-147% (unscaled
# drop path and dropout mask, normalization inside the training branch); correct models under it: 2-6%.
TRAIN_EVAL_SHARE = 0.01
# dropout_rate: share of the nonzero inputs of a dropout layer that it zeroes in train mode. Common p: 0.1-0.5
# (clean <= 0.5); TensorFlow's keep_prob=0.9 passed as PyTorch's p: 0.9.
DROP_WARNING, DROP_ERROR = 0.7, 0.85
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def train_mode_with_norms_in_eval(model):
    """Train mode for everything random (dropout, drop path), eval mode for the norms' running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.eval()
    return model


def inputs_seen(model, x):
    """[(module name, its input)] of every leaf module in call order, and the output, for one forward."""
    calls = []
    with torch.no_grad():
        out = trace(model, x, lambda n, m, i, o: calls.append((n, None if i is None else i.detach().double())))
    return calls + [("the output", joined(out).detach().double())]


# BatchNorm's running statistics must average many batches: after an update, running_mean = (1 - m) * old +
# m * batch mean, so its squared distance to the last batch's mean, in units of one batch mean's sampling
# variance, is about (1 - m)^2 (1 + m / (2 - m)): 0.85 for PyTorch's default m=0.1, 0.33 at m=0.5, 0.018 at
# m=0.9, 1e-4 at Keras' 0.99 read as PyTorch's. Below RUNNING_STATS_LAST_BATCH eval normalizes with one batch.
RUNNING_STATS_LAST_BATCH, RUNNING_STATS_BATCHES = 0.1, 8


def running_stats_last_batch(pipe):
    """(share, layer): per BatchNorm layer, the squared distance of running_mean to the last batch's mean
    over the spread of batch means around their average, after forwards in train mode (no steps); the
    smallest, or None when there is no BatchNorm with running statistics or too few batches."""
    model = fresh_model(pipe).train()
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.momentum is not None]
    x, bs = pipe["x"], max(pipe["batch_size"], 2)
    k = min(RUNNING_STATS_BATCHES, len(x) // bs)
    if not norms or k < 3:
        return None
    means = {n: [] for n, _ in norms}
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: means[n].append(
        a[0].detach().double().transpose(0, 1).reshape(a[0].shape[1], -1).mean(1))) for n, m in norms]
    try:
        with torch.no_grad():
            for i in range(k):
                model(x[i * bs:(i + 1) * bs])
    finally:
        for h in handles:
            h.remove()
    shares = []
    for n, m in norms:
        if len(means[n]) != k:
            continue
        stack = torch.stack(means[n])
        spread = (stack - stack.mean(0)).pow(2).sum(1).mean().item()
        if spread > 1e-12:
            shares.append(((m.running_mean.double() - stack[-1]).pow(2).sum().item() / spread, n, m.momentum))
    return min(shares) if shares else None


def check_train_eval_consistency(pipe, report):
    """What eval mode computes must be the average of what train mode computes: stochastic depth or dropout
    written by hand without the 1/p scaling make eval run another network than the one trained; BatchNorm
    whose running statistics are the last batch's (a momentum meant as Keras' 0.99) normalizes eval with one
    batch."""
    step_reseeds(pipe, report)
    if batchnorm_on_single_samples(pipe, report):
        average_of_train_mode(pipe, report)
        return None
    last = running_stats_last_batch(pipe)
    if last is not None:
        note(report, "train_eval_consistency", running_stats_last_batch=last[0])
        if last[0] < RUNNING_STATS_LAST_BATCH:
            report.add("train_eval_consistency", "warning", f"the running statistics of '{last[1]}' are the last "
                       f"training batch's (squared distance {last[0]:.2g} of a batch mean's spread; an average of "
                       f"many batches is about 1): with momentum={last[2]:g} eval normalizes every input with one "
                       "batch's mean and variance. PyTorch's momentum is the weight of the NEW batch (default "
                       "0.1), Keras' the weight of the old statistics (0.99).",
                       "Use momentum=1 - keras_momentum (0.01), or leave PyTorch's default 0.1; stage 2.",
                       last[1], share=last[0])
            average_of_train_mode(pipe, report)       # a reason to skip that part is no skip of this check
            return None
    return average_of_train_mode(pipe, report)


def random_states():
    """The global python, numpy and torch random states, as comparable values."""
    _, keys, pos, *_ = np.random.get_state()
    return {"python random": random.getstate(), "numpy": (keys.tobytes(), pos),
            "torch": torch.get_rng_state().tolist()}


def step_reseeds(pipe, report):
    """True (and an error) when train_step sets the global seed at every call: the random state after each
    call is then the same, so every step draws the same dropout masks and augmentations. Two calls, each
    from its own random state: only a step that resets the state ends both in the same one (one that draws
    nothing, or draws only on its first call, leaves the second state as it found it)."""
    if not any(p.requires_grad for p in pipe["model"].parameters()):
        return False                                  # nothing to train: optimizer_params says so
    model = fresh_model(pipe).train()
    optimizer = make_optimizer_for(pipe, model)
    after = []
    for k, batch in enumerate(batches_from(pipe, 0, 2, min(pipe["batch_size"], 64))):
        seed_all(pipe["seed"] + 7919 * (k + 1))
        call_step(pipe, model, batch, optimizer)
        after.append(random_states())
    reset = [k for k in after[0] if after[0][k] == after[1][k]]
    if not reset:
        return False
    report.add("train_eval_consistency", "error", f"train_step resets the {' and '.join(reset)} random seed at every "
               "call (the random state after each call is the same): every step draws the same dropout masks, "
               "augmentations and noise, so the same units are dropped at every step and never train, and a "
               "random augmentation is one fixed transform.", "Seed once, before the training loop "
               "(rk.seed_everything(0)), never inside the step; stage 2.", "train_step")
    return True


def batchnorm_on_single_samples(pipe, report):
    """True (and an error) when train_step runs a BatchNorm in train mode on one sample at a time: it then
    normalizes each image by its own statistics (instance norm), while eval uses running averages of those,
    so eval computes features the model never trained on."""
    model = fresh_model(pipe).train()
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if not names:
        return False
    optimizer = make_optimizer_for(pipe, model)
    sizes = {}

    def on_forward(module, args):
        if module.training and args and isinstance(args[0], torch.Tensor):
            sizes.setdefault(names[id(module)], []).append(args[0].shape[0])
    handles = [m.register_forward_pre_hook(on_forward) for m in model.modules() if id(m) in names]
    try:
        call_step(pipe, model, batches_from(pipe, 0, 1, STEP_BATCH)[0], optimizer)
    finally:
        for h in handles:
            h.remove()
    single = [n for n, seen in sizes.items() if seen and max(seen) == 1]
    if not single:
        return False
    report.add("train_eval_consistency", "error", f"train_step runs BatchNorm {listed(single)} in train mode on one sample "
               f"at a time (a batch of {STEP_BATCH} went through as {len(sizes[single[0]])} forwards of 1): BatchNorm "
               "then normalizes each image by its own statistics, while eval normalizes with running averages of "
               "them, so eval computes features the model never trained on.",
               "Forward whole (micro-)batches of several samples, or use GroupNorm/LayerNorm where the batch must "
               "be 1; stage 2.", "train_step")
    return True


def average_of_train_mode(pipe, report):
    """Eval mode's input of the first random module against the average of its train-mode inputs."""
    model = train_mode_with_norms_in_eval(fresh_model(pipe))
    x = pipe["x"][:32]
    draws = []
    for k in range(TRAIN_DRAWS):
        seed_all(pipe["seed"] + 1 + k)
        draws.append(inputs_seen(model, x))
        if k == 1:
            first = next((i for i, ((_, a), (_, b)) in enumerate(zip(*draws)) if a is not None and b is not None
                          and a.shape == b.shape and not torch.equal(a, b)), None)
            if first is None:
                return "the model is not random in train mode (no dropout or stochastic depth)"
    evaluated = inputs_seen(model.eval(), x)
    seed_all(pipe["seed"] + TRAIN_DRAWS + 1)
    again = inputs_seen(model, x)
    if len(again) != len(evaluated) or any((a[1] is None) != (b[1] is None) or (a[1] is not None and not
                                           torch.equal(a[1], b[1])) for a, b in zip(again, evaluated)):
        return "eval mode is random too (see eval_determinism)"
    name, e = evaluated[first]
    if name != draws[0][first][0] or e is None or e.shape != draws[0][first][1].shape:
        return "eval mode calls other modules than train mode"
    stack = torch.stack([d[first][1] for d in draws])
    noise = stack.var(0).sum().item() / TRAIN_DRAWS          # sampling variance of the mean, summed
    bias = (stack.mean(0) - e).pow(2).sum().item() / max(noise, 1e-30)
    share = ((stack.mean(0) - e).norm() / e.norm().clamp_min(1e-30)).item()
    note(report, "train_eval_consistency", bias=bias, share=share)
    if bias <= TRAIN_EVAL_BIAS or share < TRAIN_EVAL_SHARE:
        return None
    where = f"forward code before '{name}'" if name != "the output" else "forward"
    report.add("train_eval_consistency", "error", f"the input of '{name}' averaged over {TRAIN_DRAWS} train-mode "
               f"forwards differs from its eval-mode value by {share:.0%} of its size ({bias:.3g}x what random "
               "sampling explains; BatchNorm held in eval for both): eval runs another network than the one "
               "trained. Dropout or stochastic depth written by hand must scale what it keeps by 1/p "
               "(the keep or survival probability) in training.",
               "Divide the kept activations by the keep probability in train mode (or use nn.Dropout / "
               "torchvision.ops.StochasticDepth); stage 2.", where, bias=bias)


def check_dropout_rate(pipe, report):
    """A dropout layer zeroes p of its units in training: PyTorch's p is the DROP probability, TensorFlow's
    keep_prob the KEEP one, so a ported 0.9 leaves the next layer 10% of its inputs."""
    model = fresh_model(pipe).train()
    shares = []

    def measure(name):
        def hook(module, args, out):
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if inp is not None and isinstance(out, torch.Tensor) and out.shape == inp.shape and (inp != 0).any():
                live = inp != 0
                shares.append((name, ((out == 0) & live).sum().item() / live.sum().item(), module))
        return hook

    handles = [m.register_forward_hook(measure(n)) for n, m in model.named_modules() if isinstance(m, DROPOUTS)]
    if not handles:
        return "no dropout layer (nn.Dropout*)"
    try:
        with torch.no_grad():
            seed_all(pipe["seed"])
            model(pipe["x"][:64])
    finally:
        for h in handles:
            h.remove()
    if not shares:
        return "no dropout layer ran in the forward"
    name, share, module = max(shares, key=lambda s: s[1])
    note(report, "dropout_rate", largest_share=share)
    if share < DROP_WARNING:
        return None
    p = getattr(module, "p", None)
    report.add("dropout_rate", "error" if share >= DROP_ERROR else "warning",
               f"in train mode dropout '{name}' zeroes {share:.0%} of its inputs (p={p}): PyTorch's p is the "
               f"probability to DROP a unit, so the next layer trains on {1 - share:.0%} of them. TensorFlow's "
               "keep_prob is the probability to keep one: keep_prob=0.9 is p=0.1.",
               f"Use nn.Dropout(p=1 - keep_prob), typically p = 0.1 .. 0.5; stage 4 (regularize).", name,
               share=share)


def check_grad_clipping(pipe, report):
    """Clipping acts on the gradient backward has just computed: called before backward (or right after
    zero_grad) it finds no gradient, clips nothing, and the step runs unclipped."""
    rec = steps(pipe)
    if isinstance(rec, str):
        return rec
    if not rec["clips"]:
        return "train_step calls no torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (as seen at run time)"
    empty = [name for name, had_grad in rec["clips"] if not had_grad]
    note(report, "grad_clipping", empty_share=len(empty) / len(rec["clips"]))
    if len(empty) < len(rec["clips"]):
        return None
    report.add("grad_clipping", "error", f"{empty[0]} ran {len(empty)} times in {len(rec['losses'])} calls of "
               "train_step and found no gradient on the model's parameters each time: it runs before "
               "loss.backward() (or after zero_grad), so nothing is clipped and every step is unclipped.",
               "Clip between loss.backward() and optimizer.step() (after scaler.unscale_ with AMP); stage 2.",
               "train_step")
