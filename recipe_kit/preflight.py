"""preflight: the silent bugs of a training pipeline, caught in seconds before the long run (stage 2).

    report = preflight(model, (X, y), nn.CrossEntropyLoss(), lambda params: torch.optim.Adam(params, 1e-3))
    print(report)                 # or just `report` in Jupyter: a checklist
    report.raise_for_errors()     # in a script or CI

Why: a pipeline with softmax before CrossEntropyLoss, a missing zero_grad or labels shifted by one
still runs, and its loss still goes down. Each check here runs the learner's own pieces (model,
loss_fn, make_optimizer, train_step, data) on copies, looks where a training loop never looks, and
says in numbers what it saw, where, and which recipe stage to go back to.

Nothing the caller owns is changed: the model is deep-copied, the python/numpy/torch/cuda random
states, a loader's generator and epoch are restored, and the model is compared and restored at the end.
This file runs the checks and guards the caller's state; the instruments live in pipeline.py and
the checks in preflight_checks.py.
"""
import contextlib
import copy
import weakref

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from . import preflight_checks as checks
from . import preflight_mechanisms as mechanisms
from .checks import run_check
from .pipeline import BadInput, ModelFailed, StepFailed, setup
from .pipeline import loss_floor, loss_kind  # noqa: F401 (re-exported: tests and notebooks use them)
from .report import Report
from .rng import preserved_rng, seed_all
from .train import default_train_step  # the same standard step fit() uses

# name -> (cost, what it catches). "fast": static, forward and a few steps; "full": hundreds of steps.
CHECKS = {
    "input_scale": ("fast", "inputs at the first layer far from mean 0 / std 1 (e.g. raw 0..255 pixels)"),
    "loss_at_init": ("fast", "loss at init far from -log(1/C) or the label-marginal entropy"),
    "output_activation": ("fast", "softmax into CrossEntropyLoss, logits into NLLLoss"),
    "input_dependence": ("fast", "outputs that do not depend on the input"),
    "batch_independence": ("fast", "samples influencing each other's outputs across the batch"),
    "dead_activations": ("fast", "ReLUs that output zero for every input"),
    "grad_norms": ("fast", "vanishing or exploding per-layer gradients at init"),
    "optimizer_params": ("fast", "trainable parameters missing from the optimizer, or foreign ones in it"),
    "param_grads": ("fast", "parameters that never receive a gradient"),
    "step_updates": ("fast", "a step that changes nothing (lr=0, no step()) or blows the weights up"),
    "zero_grad": ("fast", "gradients accumulating across steps (missing optimizer.zero_grad())"),
    "train_mode": ("fast", "model in eval mode during the train step"),
    "batch_order": ("fast", "label-sorted batches from a loader that does not shuffle"),
    "registered_params": ("fast", "tensors that shape the output but are not in model.parameters() (a python list of layers)"),
    "shared_modules": ("fast", "one layer object registered at several places ([layer] * n): they share weights"),
    "model_linearity": ("fast", "weight layers stacked with no activation between them: one affine map"),
    "weight_decay": ("fast", "weight decay orders of magnitude too strong for the gradient"),
    "loss_classes": ("fast", "classes the loss ignores or weights inversely, class ids fitted as numbers, "
                             "targets outside the loss's range or shape"),
    "input_layout": ("fast", "image axes scrambled at the first conv (view where permute was meant)"),
    "eval_determinism": ("fast", "eval-mode outputs that change from run to run (F.dropout left on)"),
    "augmentation": ("fast", "augmentation in train_step that changes what an image shows, so its label no "
                             "longer fits (flips on digits)"),
    "train_eval_consistency": ("fast", "eval-mode outputs unlike the average train-mode output (drop path "
                                       "or dropout without the 1/p scaling)"),
    "grad_clipping": ("fast", "gradient clipping that runs before backward: nothing is clipped"),
    "dropout_rate": ("fast", "dropout that zeroes most units in training (keep_prob passed as p)"),
    "lr_schedule": ("full", "a learning rate that collapses within 200 steps (a per-epoch schedule stepped per batch)"),
    "overfit_batch": ("full", "cannot overfit one small batch, divergence, NaN"),
    "beats_baseline": ("full", "a short run that does not beat an input-independent model on held-out "
                               "samples (labels misaligned with inputs)"),
}

def preflight(model, train, loss_fn, make_optimizer, train_step=None, num_classes=None, *,
              skip=(), budget="full", seed=0, device=None):
    """Run the pipeline checks; returns a Report titled "preflight".

    train: (X, y) tensors/arrays, a Dataset of (x, y), or a loader of (x, y) batches (used as given,
    so its batching and order are checked too). make_optimizer(params) -> torch.optim.Optimizer.
    train_step(model, batch, loss_fn, optimizer) -> loss, default `rk.train.default_train_step`.
    budget: "fast" (forward and a few steps, about a second) or "full" (adds the hundreds-of-steps checks).
    """
    skip = _check_arguments(model, loss_fn, make_optimizer, train_step, num_classes, skip, budget)
    report = Report("preflight")
    own = weakref.WeakSet()             # the optimizers preflight builds; any other one stepped is the caller's
    with preserved_state(model, train) as saved, foreign_steps_undone(own) as foreign:
        seed_all(seed)
        pipe = setup(model, train, loss_fn, make_optimizer, train_step or default_train_step,
                     num_classes, seed, device)
        pipe["own_optimizers"], pipe["foreign_optimizers"] = own, foreign
        report.details["setup"] = {k: pipe[k] for k in ("num_classes", "loss_kind", "batch_size", "device")}
        for problem in pipe["problems"]:
            report.add(*problem)
        for name, (cost, _) in CHECKS.items():
            if name in skip:
                report.skipped.append((name, "in skip="))
            elif cost == "full" and budget == "fast":
                report.skipped.append((name, 'needs hundreds of steps: run with budget="full"'))
            else:
                seed_all(seed)
                check = getattr(checks, "check_" + name, None) or getattr(mechanisms, "check_" + name)
                run_check(name, check, pipe, report, reraise=BadInput, explain=explain)
        checks.check_caller_model_untouched(pipe, saved, report)
    checks.check_caller_optimizer_untouched(foreign, model, report)
    return report


def _check_arguments(model, loss_fn, make_optimizer, train_step, num_classes, skip, budget):
    """Argument errors that need no computation: raise at once, naming the argument and the fix."""
    if not isinstance(model, nn.Module):
        raise BadInput(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    lazy = [n for n, p in model.named_parameters() if is_lazy(p)]
    if lazy:
        raise BadInput(f"model has {len(lazy)} uninitialized lazy parameters ({', '.join(lazy[:3])}): they get their "
                       "shape at the first forward. Run one first, model(x[:1]), then build the optimizer and call "
                       "preflight (PyTorch's LazyModule recipe).")
    if not callable(loss_fn):
        raise BadInput(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}; "
                       "pass e.g. nn.CrossEntropyLoss() (an instance, with the parentheses).")
    if isinstance(loss_fn, type):
        raise BadInput(f"loss_fn is the class {loss_fn.__name__}, not an instance: pass {loss_fn.__name__}().")
    if not callable(make_optimizer) or isinstance(make_optimizer, torch.optim.Optimizer):
        raise BadInput("make_optimizer must be a function params -> optimizer, e.g. "
                       "lambda params: torch.optim.Adam(params, lr=1e-3), so preflight can build one "
                       f"for its copy of the model; got {type(make_optimizer).__name__}.")
    if train_step is not None and not callable(train_step):
        raise BadInput("train_step must be a function (model, batch, loss_fn, optimizer) -> loss, or None "
                       f"for the standard step; got {type(train_step).__name__}.")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise BadInput(f"num_classes must be an int >= 2 or None (read from the model's output), "
                       f"got {num_classes!r}.")
    if budget not in ("fast", "full"):
        raise BadInput(f'budget must be "fast" or "full", got {budget!r}.')
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    unknown = [s for s in skip if s not in CHECKS]
    if unknown:
        raise BadInput(f"skip has unknown check name(s) {unknown}; valid names: {', '.join(CHECKS)}.")
    return set(skip)


def explain(name, e, report):
    """Known failures inside a check, said as a Problem: a step that failed after running fine, a model
    that raised on the check's batch."""
    if isinstance(e, StepFailed):
        report.add(name, "error", f"{e} while this check trained a copy of the model.",
                   "Often a NaN/inf loss from a too-high lr; run the step by hand to see it; stage 2.", "train_step")
        return True
    if isinstance(e, ModelFailed):
        report.crashed.append((name, f"{type(e.error).__name__}: {e.error} (in model '{e.where}')"))
        return True
    return False


# ----------------------------------------------------------------------------- state the caller owns

def _data_generators(train):
    """torch.Generators that iterating `train` would advance (a DataLoader's or its sampler's)."""
    found = []
    for owner in (train, getattr(train, "sampler", None), getattr(train, "batch_sampler", None),
                  getattr(getattr(train, "batch_sampler", None), "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


@contextlib.contextmanager
def preserved_state(model, train):
    """Everything preflight could disturb is put back: RNGs, loader generators and epoch, the model,
    the number of torch threads (the checks run on one)."""
    gens = [(g, g.get_state()) for g in _data_generators(train)]
    epoch = getattr(train, "epoch", None)            # BatchLoader counts epochs to seed each one
    tensors = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
               if isinstance(v, torch.Tensor)}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the checks' batches are small: threads cost more than they gain (benchmarks/checks_cost.py)
    try:
        with preserved_rng():
            yield {"tensors": tensors, "grads": grads}
    finally:
        torch.set_num_threads(threads)
        for g, state in gens:
            g.set_state(state)
        if isinstance(epoch, int):
            train.epoch = epoch
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                if k in tensors and not torch.equal(v, tensors[k]):
                    v.copy_(tensors[k])
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@contextlib.contextmanager
def foreign_steps_undone(own):
    """Watch every optimizer.step() in the process: one on an optimizer preflight did not build (a global
    `optimizer` inside train_step) is recorded, and its state and parameters are put back on exit."""
    seen = {}   # id -> (optimizer, state_dict copy, [(param, value copy)])
    inside = [0]   # how deep we are in steps of preflight's own optimizers

    def before_step(opt, args, kwargs):
        if opt in own:
            inside[0] += 1
        elif not inside[0] and id(opt) not in seen:   # one stepped by an own optimizer's step() is its part
            params = [p for g in opt.param_groups for p in g["params"]]
            seen[id(opt)] = (opt, copy.deepcopy(opt.state_dict()), [(p, p.detach().clone()) for p in params])

    def after_step(opt, args, kwargs):
        if opt in own:
            inside[0] -= 1

    handles = [register_optimizer_step_pre_hook(before_step), register_optimizer_step_post_hook(after_step)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        for opt, state, params in seen.values():
            opt.load_state_dict(state)
            with torch.no_grad():
                for p, value in params:
                    p.copy_(value)
