"""The instruments preflight's checks share: gather a pool of samples from any kind of `train`, run
the model with hooks, call the learner's train_step while recording what a loop never shows, and read
what the loss function computes. No check lives here (preflight_checks.py), and nothing here imports
preflight.py, so the two never import each other.
"""
import collections.abc
import contextlib
import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, default_collate

from .checks import NotApplicable, first_line
from .rng import seed_all

POOL_SIZE = 2048      # samples drawn across `train`; every check uses (part of) this pool
PROBE_SIZE = 256      # samples in the forward-only checks
SCAN_LIMIT = 30_000   # most samples read from a loader that has no indexable dataset
STREAM_LIMIT = 2048   # samples of a DataLoader's own batches read to check their order
STEP_BATCH = 32       # largest batch in the checks that take many steps (their cost grows with it)

WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d, nn.RNNBase, nn.MultiheadAttention, nn.Embedding)


class BadInput(ValueError):
    """An argument preflight cannot work with; the message names it and says how to fix it."""


class StepFailed(Exception):
    """train_step raised after it had already run fine: the check that was training reports it."""


# ----------------------------------------------------------------------------- the data

def _tensor(v, what):
    if isinstance(v, torch.Tensor):
        return v
    try:
        return torch.as_tensor(np.asarray(v))
    except Exception:
        raise BadInput(f"train: {what} must be tensors or arrays, got {type(v).__name__}.") from None


def _pair(item, what):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        kind = f"a {type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
        raise BadInput(f"train: {what} must be an (x, y) pair, got {kind}; wrap it so it yields (inputs, targets).")
    return item


def _is_pair(item):
    return isinstance(item, (tuple, list)) and len(item) == 2


def _is_batch(pair):
    """(x, y) with a batch dimension on both, e.g. one item of list(loader)."""
    x, y = pair
    return all(hasattr(v, "shape") and len(v.shape) >= 1 for v in pair) and len(x) == len(y)


def _is_map_style(ds):
    return hasattr(ds, "__getitem__") and hasattr(ds, "__len__") and not isinstance(ds, IterableDataset)


def _from_dataset(ds, n, gen, collate):
    if len(ds) == 0:
        raise BadInput("train: the dataset is empty; check the split or the path you loaded.")
    idx = torch.randperm(len(ds), generator=gen)[:n].tolist()
    items = [_pair(ds[i], "each item of the dataset") for i in idx]
    x, y = _pair(collate(items), "a collated batch")
    return _tensor(x, "inputs"), _tensor(y, "targets")


def _scan(batches, n, gen, limit):
    """Read batches in their order (up to `limit` samples): their labels, and a uniform sample of n rows."""
    pool_x = pool_y = last = None
    seen, stream, repeats = 0, [], 0
    for batch in batches:
        x, y = _pair(batch, "each batch of the loader")
        x, y = _tensor(x, "inputs").detach().cpu(), _tensor(y, "targets").detach().cpu()
        if len(x) != len(y):
            raise BadInput(f"train: a batch has {len(x)} inputs but {len(y)} targets.")
        repeats += int(last is not None and last.shape == x.shape and torch.equal(last, x))
        stream.append(y)
        last = x
        if pool_x is None or len(pool_x) < n:    # fill the pool first
            k = n if pool_x is None else n - len(pool_x)
            pool_x = x[:k].clone() if pool_x is None else torch.cat([pool_x, x[:k]])
            pool_y = y[:k].clone() if pool_y is None else torch.cat([pool_y, y[:k]])
            seen, x, y = seen + min(k, len(x)), x[k:], y[k:]
        if len(x):                               # reservoir sampling: row t replaces a slot w.p. n/(t+1)
            t = seen + torch.arange(len(x))
            slot = (torch.rand(len(x), generator=gen) * (t + 1)).long()
            keep = slot < n
            pool_x[slot[keep]], pool_y[slot[keep]] = x[keep], y[keep]
            seen += len(x)
        if seen >= limit:
            break
    if pool_x is None or len(pool_x) == 0:
        raise BadInput("train: the loader yielded no batches; is the dataset empty, or drop_last=True "
                       "with fewer samples than batch_size?")
    return pool_x, pool_y, (stream, repeats)


def gather(train, n, seed):
    """(x, y, stream, batch_size): n samples spread over all of `train`, and a loader's own batches:
    stream is (labels of each batch in order, how many batches equal the one before) or None.

    A label-sorted loader must not bias the pool, so the pool is drawn from the loader's dataset when
    it has one (or sampled across a whole epoch), while `stream` keeps the loader's own order.
    """
    gen = torch.Generator().manual_seed(seed)
    if isinstance(train, collections.abc.Iterator):
        raise BadInput(f"train is a one-shot iterator ({type(train).__name__}, e.g. iter(loader) or a generator): "
                       "preflight would use up the batches your training loop is about to read. Pass the loader "
                       "itself, (X, y), or list(...) of the batches.")
    if isinstance(train, (tuple, list)) and train and _is_pair(train[0]):   # a list of batches or of samples
        if _is_pair(train[0]) and _is_batch(train[0]):
            x, y, stream = _scan(train, n, gen, SCAN_LIMIT)
            return x, y, stream, len(stream[0][0])
        x, y = _from_dataset(train, n, gen, default_collate)
        return x, y, None, 64
    if isinstance(train, (tuple, list)):
        if len(train) != 2:
            raise BadInput(f"train as a tuple must be (X, y), got {len(train)} items.")
        X, y = _tensor(train[0], "X and y"), _tensor(train[1], "X and y")
        if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
            raise BadInput(f"train: X has {len(X) if X.ndim else 'no'} samples but y has "
                           f"{len(y) if y.ndim else 'no'}; pass inputs and targets of the same split.")
        if len(X) == 0:
            raise BadInput("train: X and y are empty; check the split you loaded.")
        idx = torch.randperm(len(X), generator=gen)[:n]
        return X[idx.to(X.device)], y[idx.to(y.device)], None, 64
    if isinstance(train, DataLoader) and train.batch_size and _is_map_style(train.dataset):
        x, y = _from_dataset(train.dataset, n, gen, train.collate_fn)
        stream = _scan(train, 1, gen, STREAM_LIMIT)[2]
        return x, y, stream, train.batch_size
    if isinstance(train, IterableDataset):
        x, y, _ = _scan(_chunks(train, 64), n, gen, SCAN_LIMIT)
        return x, y, None, 64
    if _is_map_style(train):
        x, y = _from_dataset(train, n, gen, default_collate)
        return x, y, None, 64
    if hasattr(train, "__iter__"):
        x, y, stream = _scan(train, n, gen, SCAN_LIMIT)
        return x, y, stream, len(stream[0][0])
    raise BadInput(f"train must be (X, y), a Dataset of (x, y) or a loader of (x, y) batches; "
                   f"got {type(train).__name__}.")


def _chunks(samples, size):
    """Collate an iterable of (x, y) samples into batches."""
    chunk = []
    for item in samples:
        chunk.append(_pair(item, "each item of the dataset"))
        if len(chunk) == size:
            yield default_collate(chunk)
            chunk = []
    if chunk:
        yield default_collate(chunk)


# ----------------------------------------------------------------------------- running the model

class ModelFailed(Exception):
    """The model raised inside forward; `where` is the innermost module that was running."""

    def __init__(self, where, error):
        super().__init__(f"{where}: {error}")
        self.where, self.error = where, error


def first_tensor(v):
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (tuple, list)) and v and isinstance(v[0], torch.Tensor):
        return v[0]
    return None


def output_parts(out):
    """The tensors a model returned: [out] for one tensor, the items of a tuple/list or the values of a
    dict (several heads); None when they are not all tensors."""
    parts = [out] if isinstance(out, torch.Tensor) else list(out.values()) if isinstance(out, dict) \
        else list(out) if isinstance(out, (tuple, list)) else None
    return parts if parts and all(isinstance(p, torch.Tensor) for p in parts) else None


def rebuild(like, parts):
    """parts in the container `like` came in (tuple, list, namedtuple, dict), so loss_fn can read them."""
    if isinstance(like, torch.Tensor):
        return parts[0]
    if isinstance(like, dict):
        return type(like)(zip(like.keys(), parts))
    return type(like)(*parts) if hasattr(like, "_fields") else type(like)(parts)


def batch_size_of(parts):
    """The batch size of a model's outputs: the largest first dimension among them (a learned loss weight
    returned beside the outputs, e.g. one log-variance per task, has no batch dimension)."""
    return max((p.shape[0] for p in parts if p.ndim), default=0)


def per_sample(parts, n=None):
    """Which of the outputs are per sample (batch first); the others (learned loss weights, a temperature)
    are the same for every sample, so the checks of per-sample properties leave them out."""
    n = batch_size_of(parts) if n is None else n
    return [p.ndim > 0 and p.shape[0] == n for p in parts]


def joined(out):
    """All per-sample outputs side by side as one (B, k) tensor: the checks that only compare outputs (does
    anything vary, mix across the batch, change between runs) then treat several heads as one."""
    if isinstance(out, torch.Tensor):
        return out
    parts = output_parts(out)
    return torch.cat([p.reshape(len(p), -1).float() for p, s in zip(parts, per_sample(parts)) if s], 1)


def cat_outputs(outs):
    """The outputs of several batches concatenated along the batch, container kept (an output that is not
    per sample is taken from the first batch)."""
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    lists = [output_parts(o) for o in outs]
    flags = per_sample(lists[0])                       # the first batch is the full one
    return rebuild(outs[0], [torch.cat(ps) if f else ps[0] for ps, f in zip(zip(*lists), flags)])


def trace(model, x, on_call=None):
    """Run model(x), calling on_call(name, module, input, output) after each leaf module, in call order.

    on_call sees the tensors before any later inplace op can overwrite them. If forward raises,
    ModelFailed names the innermost module that was running.
    """
    stack, handles = [], []

    def enter(name):
        return lambda module, args: stack.append(name)

    def leave(name, leaf):
        def hook(module, args, out):
            stack.pop()
            if leaf and on_call is not None:
                on_call(name, module, first_tensor(args), first_tensor(out))
        return hook

    for name, m in model.named_modules():
        leaf = bool(name) and not any(True for _ in m.children())
        handles.append(m.register_forward_pre_hook(enter(name or type(m).__name__)))
        handles.append(m.register_forward_hook(leave(name, leaf)))
    try:
        out = model(x)
    except Exception as e:
        raise ModelFailed(stack[-1] if stack else type(model).__name__, e) from None
    finally:
        for h in handles:
            h.remove()
    return out


def fresh_model(pipe):
    """A deep copy of the caller's model on the check device, as the caller left it (mode included)."""
    m = copy.deepcopy(pipe["model"]).to(pipe["device"])
    for p in m.parameters():
        p.grad = None
    return m


def make_optimizer_for(pipe, model):
    """The learner's optimizer for a copy of the model (its type checked)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise NotApplicable("the model has no trainable parameters (see optimizer_params)")
    opt = pipe["make_optimizer"](model.parameters())
    if not isinstance(opt, torch.optim.Optimizer):
        raise BadInput("make_optimizer must return a torch.optim.Optimizer built from the params it is "
                       f"given (e.g. lambda params: torch.optim.Adam(params, lr=1e-3)); got {type(opt).__name__}.")
    pipe["own_optimizers"].add(opt)
    return opt


def foreign_params(model, optimizer):
    """Tensors the optimizer updates that are not the model's: stepping it would change another model."""
    own = {id(p) for p in model.parameters()}
    return [p for g in optimizer.param_groups for p in g["params"] if id(p) not in own]


def to_float(loss):
    """The loss a train_step returned: a float, a one-element tensor, or the first item of a tuple
    (rk.train.default_train_step returns (loss, logits)); None if it returned none."""
    if isinstance(loss, (tuple, list)) and loss:
        loss = loss[0]
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return loss.item()
    if isinstance(loss, (int, float)):
        return float(loss)
    return None


def call_step(pipe, model, batch, optimizer):
    """One call of the learner's train_step; returns the loss as a float (measured if it returned none)."""
    try:
        loss = to_float(pipe["train_step"](model, batch, pipe["loss_fn"], optimizer))
    except BadInput:
        raise
    except Exception as e:
        if pipe["cache"].get("step_ran"):
            raise StepFailed(f"train_step raised {type(e).__name__}: {first_line(e)}") from None
        raise BadInput(f"train_step raised {type(e).__name__}: {first_line(e)}. It is called as "
                       "train_step(model, (x, y), loss_fn, optimizer) and must return the loss.") from None
    pipe["cache"]["step_ran"] = True
    if loss is None:
        with torch.no_grad():
            loss = float(pipe["loss_fn"](model(batch[0]), batch[1]))
    return loss


CLIPPERS = ("clip_grad_norm_", "clip_grad_value_")


@contextlib.contextmanager
def clipping_watched(model, seen):
    """Record each torch.nn.utils clip_grad_* call on this model's parameters as (name, whether any of
    them held a nonzero gradient then). Calls through a name imported before preflight are not seen."""
    own = {id(p) for p in model.parameters()}
    utils, module = torch.nn.utils, torch.nn.utils.clip_grad
    saved = {name: (getattr(utils, name), getattr(module, name)) for name in CLIPPERS}

    def spy(name, original):
        def clip(parameters, *args, **kwargs):
            params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            if any(id(p) in own for p in params):
                seen.append((name, any(p.grad is not None and bool(p.grad.any()) for p in params)))
            return original(params, *args, **kwargs)
        return clip

    for name, (original, _) in saved.items():
        setattr(utils, name, spy(name, original))
        setattr(module, name, getattr(utils, name))
    try:
        yield seen
    finally:
        for name, (a, b) in saved.items():
            setattr(utils, name, a)
            setattr(module, name, b)


def run_steps(pipe, model, optimizer, batches, reseed=None, restore=False, until_steps=None):
    """Run the learner's train_step on each batch, recording what a loop never shows.

    Returns a dict with, per call: losses; grads ({param name: grad or None} when optimizer.step() ran,
    or at the end of the call if step() never ran); backward_grads (each .grad right after backward
    accumulated into it, before any clipping, unscaling or zeroing; missing names were not reached by
    backward); first_grads (the same right after the call's first backward: with optimizer.step(closure),
    as LBFGS takes, the step evaluates the closure several times at other weights, and only the first
    evaluation is at the call's starting weights); closures (whether step() got a closure); step_moves
    (how far the call's first optimizer.step() moved the weights, L2 over all of them, or None);
    backwards (how many backward passes reached the parameters); step_calls; params
    (snapshots: before the first call, then after each). training: model.training at each forward.
    reseed: re-seed the RNGs before every call; restore: put the first weights back before every call
    (so calls on one batch are identical whatever the optimizer did); until_steps: stop once
    optimizer.step() has run this many times (a step that accumulates gradients steps only every k calls).
    """
    named = list(model.named_parameters())
    rec = {"losses": [], "grads": [], "backward_grads": [], "backwards": [], "step_calls": [], "training": [],
           "params": [{n: p.detach().clone() for n, p in named}], "clips": [], "first_grads": [],
           "closures": [], "step_moves": []}
    at_step, after_backward, first_backward, fired, closure, stepped = [], {}, {}, {}, [], []

    def on_step(opt, args, kwargs):
        at_step.append({n: None if p.grad is None else p.grad.detach().clone() for n, p in named})
        closure.append(any(callable(a) for a in (*args, *kwargs.values())))   # args may hold the optimizer
        if not stepped:
            stepped.append([p.detach().clone() for _, p in named])

    def on_step_done(opt, args, kwargs):
        if len(stepped) == 1:                     # how far the call's first step() moved the weights
            stepped.append(sum((p.detach().double() - q.double()).pow(2).sum() for (_, p), q in zip(named, stepped[0])))

    def on_backward(name):
        def hook(p):
            after_backward[name] = p.grad.detach().clone()
            first_backward.setdefault(name, after_backward[name])
            fired[name] = fired.get(name, 0) + 1
        return hook

    handles = [model.register_forward_pre_hook(lambda module, args: rec["training"].append(module.training)),
               optimizer.register_step_pre_hook(on_step), optimizer.register_step_post_hook(on_step_done)]
    handles += [p.register_post_accumulate_grad_hook(on_backward(n)) for n, p in named if p.requires_grad]
    try:
        for batch in batches:
            at_step.clear()
            after_backward.clear()
            first_backward.clear()
            fired.clear()
            closure.clear()
            stepped.clear()
            if restore:
                with torch.no_grad():
                    for n, p in named:
                        p.copy_(rec["params"][0][n])
            if reseed is not None:
                seed_all(reseed)
            with clipping_watched(model, rec["clips"]):
                rec["losses"].append(call_step(pipe, model, batch, optimizer))
            rec["step_calls"].append(len(at_step))
            rec["grads"].append(at_step[0] if at_step else
                                {n: None if p.grad is None else p.grad.detach().clone() for n, p in named})
            rec["backward_grads"].append(dict(after_backward))
            rec["first_grads"].append(dict(first_backward))
            rec["closures"].append(any(closure))
            rec["step_moves"].append(float(stepped[1]) ** 0.5 if len(stepped) == 2 else None)
            rec["backwards"].append(max(fired.values(), default=0))
            rec["params"].append({n: p.detach().clone() for n, p in named})
            if until_steps is not None and sum(rec["step_calls"]) >= until_steps:
                break
    finally:
        for h in handles:
            h.remove()
    return rec


def fed_in_step(pipe, batches):
    """What the learner's train_step feeds, on a fresh copy trained call after call on `batches`: per call,
    (the inputs of each forward run with gradients on, the target of the first loss_fn call or None), on
    the CPU. The checks compare them with the batch they handed in (augmentation, input scale)."""
    model = fresh_model(pipe).train()
    optimizer = make_optimizer_for(pipe, model)
    got, calls = {}, []

    def on_forward(module, args):
        if args and isinstance(args[0], torch.Tensor) and torch.is_grad_enabled():
            got["inputs"].append(args[0].detach().cpu())

    def loss_fn(out, target, *args, **kwargs):
        if isinstance(target, torch.Tensor) and got["target"] is None:
            got["target"] = target.detach().cpu()
        return pipe["loss_fn"](out, target, *args, **kwargs)

    handle = model.register_forward_pre_hook(on_forward)
    try:
        for batch in batches:
            got.update(inputs=[], target=None)
            call_step({**pipe, "loss_fn": loss_fn}, model, batch, optimizer)
            calls.append((got["inputs"], got["target"]))
    finally:
        handle.remove()
    return calls


def batches_from(pipe, start, count, size):
    """`count` batches of `size` pool samples from index `start` on, wrapping around the pool."""
    n = len(pipe["y"])
    out = []
    for b in range(count):
        idx = (torch.arange(size) + start + b * size) % n
        out.append((pipe["x"][idx], pipe["y"][idx]))
    return out


# ----------------------------------------------------------------------------- the loss function

def loss_kind(loss_fn, C, device):
    """What loss_fn computes, found by calling it: {"name": "cross_entropy"|"nll", "smoothing", "scale"}.

    Works for modules, F.cross_entropy and lambdas alike; None when it is neither (MSE, weighted...).
    """
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return {"name": "cross_entropy", "smoothing": float(loss_fn.label_smoothing),
                "scale": 1.0 if loss_fn.reduction != "sum" else None}
    g = torch.Generator().manual_seed(0)
    found = []
    for _ in range(2):
        z = (torch.randn(16, C, generator=g) * 2).to(device)
        y = torch.randint(0, C, (16,), generator=g).to(device)
        try:
            with torch.no_grad():
                got = float(loss_fn(z, y))
        except Exception:
            return None
        nll = F.nll_loss(z, y).item()
        ce = F.cross_entropy(z, y).item()
        uniform = -F.log_softmax(z, 1).mean().item()   # cross-entropy against the uniform target
        eps = (got - ce) / (uniform - ce)              # label smoothing solves got = (1-eps) ce + eps uniform
        found.append({"nll": abs(got - nll) < 1e-4 * (1 + abs(nll)),
                      "ce": abs(got - ce) < 1e-4 * (1 + ce), "eps": eps})
    if all(f["ce"] for f in found):
        return {"name": "cross_entropy", "smoothing": 0.0, "scale": 1.0}
    if all(f["nll"] for f in found):
        return {"name": "nll", "smoothing": 0.0, "scale": 1.0}
    if 0 < found[0]["eps"] <= 1 and abs(found[0]["eps"] - found[1]["eps"]) < 1e-4:
        return {"name": "cross_entropy", "smoothing": found[0]["eps"], "scale": 1.0}
    return None


def class_scores(out):
    """(N, C) scores from outputs (B, C, ...) with classes on dim 1."""
    return out.movedim(1, -1).reshape(-1, out.shape[1]) if out.ndim > 2 else out


def constant_baseline(pipe, y, steps=300):
    """The best input-independent output (one vector c for every sample) for targets y.

    Returns c: loss_fn(c, y) is the loss a model that ignores its input can reach. For cross-entropy
    and NLL it is the log of the label frequencies (smoothed like the targets, weighted like the loss):
    the label-marginal entropy. For any other loss_fn, c is fitted by gradient descent.
    """
    kind = pipe["loss_kind"]
    if kind is not None and len(pipe["out_shape"]) == 1 and y.ndim == 1:
        C = pipe["num_classes"]
        freq = torch.bincount(y[(y >= 0) & (y < C)].cpu(), minlength=C).double()
        weight = getattr(pipe["loss_fn"], "weight", None)
        if isinstance(weight, torch.Tensor):
            freq = freq * weight.detach().double().cpu()
        q = (1 - kind["smoothing"]) * freq / freq.sum().clamp_min(1e-12) + kind["smoothing"] / C
        return q.clamp_min(1e-12).log().float().to(y.device)
    like = [] if pipe["out_shape"] is not None else output_parts(pipe["out_like"])
    shapes = [pipe["out_shape"]] if pipe["out_shape"] is not None else \
        [p.shape[1:] if s else p.shape for p, s in zip(like, per_sample(like))]  # several heads: one constant per head
    cs = [torch.zeros(s, device=y.device, requires_grad=True) for s in shapes]
    opt = torch.optim.Adam(cs, lr=0.1)
    pipe["own_optimizers"].add(opt)
    c = cs[0] if pipe["out_shape"] is not None else cs
    for _ in range(steps):
        opt.zero_grad()
        constant_loss(pipe, c, y).backward()
        opt.step()
    return c.detach() if pipe["out_shape"] is not None else [t.detach() for t in cs]


def constant_value(pipe, c, y):
    """constant_loss as a float (no graph: a loss_fn may add terms that need gradients)."""
    with torch.no_grad():
        return float(constant_loss(pipe, c, y))


def constant_loss(pipe, c, y):
    if isinstance(c, list):                            # several outputs: each head's constant, in their container
        flags = per_sample(output_parts(pipe["out_like"]))   # an output shared by all samples stays as it is
        return pipe["loss_fn"](rebuild(pipe["out_like"], [t.expand(len(y), *t.shape) if f else t
                                                          for t, f in zip(c, flags)]), y)
    out = c.expand(len(y), *c.shape)
    if pipe["loss_kind"] and pipe["loss_kind"]["name"] == "nll":
        out = F.log_softmax(out, 1)                    # NLLLoss expects log-probabilities
    return pipe["loss_fn"](out, y)


def loss_floor(pipe):
    """The lowest loss a perfect model can get: 0, or the entropy of the smoothed target."""
    kind = pipe["loss_kind"]
    if kind is None or kind["name"] != "cross_entropy" or not kind["smoothing"]:
        return 0.0
    eps, C = kind["smoothing"], pipe["num_classes"]
    hi, lo = 1 - eps + eps / C, eps / C                # smoothed target: hi on the label, lo elsewhere
    return -(hi * math.log(hi) + (C - 1) * lo * math.log(lo))


# ----------------------------------------------------------------------------- setup

def ignored_by_own_loss(loss_fn, out, y, labels, C):
    """Labels outside 0..C-1 that are one negative marker (-1 for "not annotated") which a loss function
    without an ignore_index handles itself: every other label is a class, and the loss is finite on a batch
    that holds the marker (F.cross_entropy would raise on it, so a loss that runs masks or clamps it)."""
    if hasattr(loss_fn, "ignore_index") or labels.max() >= C or labels.min() >= 0:
        return False
    marker = labels.min()
    if (labels[labels < 0] != marker).any() or not (y == marker).any():
        return False
    try:
        with torch.no_grad():
            loss = loss_fn(out, y)
    except Exception:
        return False
    return isinstance(loss, torch.Tensor) and loss.numel() == 1 and bool(torch.isfinite(loss))


def setup(model, train, loss_fn, make_optimizer, train_step, num_classes, seed, device):
    """Gather the pool, run one forward, and validate shapes, labels and the loss on it."""
    x, y, stream, batch_size = gather(train, POOL_SIZE, seed)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x, y = x.to(device), y.to(device)
    problems = []   # (check, severity, message, hint, where) found while setting up
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x.reshape(len(x), -1))).any(1).sum().item()
        problems.append(("input_scale", "error", f"{bad} of {len(x)} sampled inputs contain NaN or inf: every "
                         "loss and gradient they touch is NaN.", "Find and fix or drop them (stage 1).", "train"))
        keep = torch.isfinite(x.reshape(len(x), -1)).all(1)
        if not keep.any():
            raise BadInput("train: every sampled input contains NaN or inf; fix the data (stage 1).")
        x, y = x[keep], y[keep]
    pipe = {"model": model, "loss_fn": loss_fn, "make_optimizer": make_optimizer, "train_step": train_step,
            "x": x, "y": y, "stream": stream and stream[0], "stream_repeats": stream and stream[1],
            "batch_size": int(batch_size), "device": device, "seed": seed, "problems": problems, "cache": {}}
    probe_x, probe_y = x[:PROBE_SIZE], y[:PROBE_SIZE]
    try:
        with torch.no_grad():
            out = trace(fresh_model(pipe), probe_x)
    except ModelFailed as f:
        where = f"'{f.where}'"
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype_hint = ("" if x.is_floating_point() else
                      f" The inputs are {x.dtype}: convert them to float and normalize (stage 1).")
        if x.is_floating_point() and param is not None and x.dtype != param.dtype:   # a model that casts is fine
            dtype_hint = (f" The inputs are {x.dtype} but the model's parameters are {param.dtype}: convert X "
                          "with X.float() (numpy: X.astype(np.float32)), or keep float32 weights under autocast.")
        raise BadInput(f"model raised {type(f.error).__name__} in {where} on a batch of inputs of shape "
                       f"{tuple(probe_x.shape)} ({probe_x.dtype}): {first_line(f.error)}.{dtype_hint} Make "
                       "the model accept train's inputs (check in_features/channels and reshapes).") from None
    parts = output_parts(out)
    if parts is None:
        raise BadInput(f"model returned a {type(out).__name__}; preflight needs a tensor of outputs, or a "
                       "tuple/list/dict of tensors (one per head).")
    several = None
    if len(parts) > 1 or not isinstance(out, torch.Tensor):
        flags = per_sample(parts, len(probe_x))
        if not any(flags):
            bad = [tuple(p.shape) for p in parts]
            raise BadInput(f"model returned a {type(out).__name__} with outputs of shapes {bad} for a batch of "
                           f"{len(probe_x)} samples: every output must have the batch as its first dimension.")
        several = (f"a {type(out).__name__} of {len(parts)} outputs ("
                   + ", ".join(str(tuple(p.shape[1:])) for p, f in zip(parts, flags) if f) + " per sample"
                   + "".join(f", {tuple(p.shape)} shared" for p, f in zip(parts, flags) if not f) + ")")
    if several is None and (out.ndim == 0 or out.shape[0] != len(probe_x)):
        raise BadInput(f"model returned shape {tuple(out.shape)} for a batch of {len(probe_x)} samples: a "
                       "view/reshape in forward folds the batch dimension; use x.flatten(1) or "
                       "x.view(x.size(0), -1).")
    classify = (several is None and not y.is_floating_point() and y.dtype != torch.bool and out.ndim >= 2
                and out.shape[1] >= 2 and tuple(y.shape[1:]) == tuple(out.shape[2:]))
    C = out.shape[1] if classify else None
    if num_classes is not None:
        if several is not None:
            raise BadInput(f"num_classes={num_classes} but the model returns {several}; leave num_classes=None "
                           "(preflight cannot tell which output holds the class scores).")
        if not classify:
            raise BadInput(f"num_classes={num_classes} but the model outputs shape {tuple(out.shape)} for "
                           f"targets of shape {tuple(probe_y.shape)} ({probe_y.dtype}); for classification "
                           "the model must output (batch, num_classes) scores and the targets be integer labels.")
        if C != num_classes:
            problems.append(("output_activation", "error", f"the model outputs {C} scores per sample but "
                             f"num_classes={num_classes}: {abs(C - num_classes)} classes are "
                             + ("never predicted." if C < num_classes else "wasted outputs that CrossEntropy "
                                "still pushes down, and the loss at init is off."),
                             f"Set the last layer's out_features to {num_classes} (or fix num_classes); stage 2.",
                             "model"))
    if classify and len(y.unique()) == 1:
        problems.append(("labels", "warning", f"all {y.numel()} sampled labels are class {y.reshape(-1)[0].item()}: "
                         "a model can reach zero loss by always predicting it, without looking at the inputs.",
                         "Check the split or the filter that built train (one class only?); stage 1.", "train"))
    if classify:
        ignore = getattr(loss_fn, "ignore_index", -100)
        labels = y[y != ignore]
        if len(labels) and (labels.min() < 0 or labels.max() >= C):
            src = f"num_classes={num_classes}" if num_classes == C else f"the model outputs {C} scores"
            refusal = BadInput(f"train: labels range from {labels.min().item()} to {labels.max().item()} but "
                               f"{src}; labels must be 0..{C - 1} (remap them, or fix num_classes / the last layer).")
            if not ignored_by_own_loss(loss_fn, out, probe_y, labels, C):
                raise refusal
    try:
        with torch.no_grad():
            loss = loss_fn(out, probe_y)
    except Exception as e:
        shape = several or tuple(out.shape)
        raise BadInput(f"loss_fn raised {type(e).__name__} on (model outputs {shape}, targets "
                       f"{tuple(probe_y.shape)} {probe_y.dtype}): {first_line(e)}. loss_fn(outputs, targets) "
                       "must accept the model's outputs and train's targets.") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise BadInput("loss_fn must return a scalar tensor (one number per batch, e.g. reduction='mean'), "
                       f"got {type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}.")
    pipe.update(num_classes=C, out_shape=None if several else tuple(out.shape[1:]), several_outputs=several,
                out_like=out,
                loss_kind=loss_kind(loss_fn, C, device) if classify else None)
    return pipe
