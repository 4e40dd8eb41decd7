"""A training loop you can read in one screen, which records what you need to debug training.

    history = fit(model, train_loader, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters()),
                  epochs=3, val_loader=val_loader)
    history["loss"]       # one float per optimization step
    history["val_loss"]   # one float per epoch
    history["stopped"]    # why training ended, in words (history["interrupted"]: by Ctrl-C)

Why not Lightning or Keras: the course is about seeing every step. fit is a for-loop over (x, y)
batches around your own model, loss, optimizer and (optionally) your own train_step. The extras
(progress bar, history, callbacks, early stopping, TensorBoard, the divergence guard, Ctrl-C) are a
few lines each.
History is a plain dict of lists, so plots and checks consume it without knowing about fit.
"""
import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .utils import check_device

DIVERGE_FACTOR = 1e4  # a loss 10,000x the first step's is exploding, even while still finite
PER_EPOCH = ("train_loss", "train_acc", "val_loss", "val_acc", "throughput", "data_wait_share")
# throughput: training samples per second. data_wait_share: the fraction of the epoch spent waiting for
# the next batch; near 1 means the data pipeline, not the model, is what makes training slow.


def model_device(model):
    """The device of the model's first parameter (cpu for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def default_train_step(model, batch, loss_fn, optimizer):
    """One optimization step on batch = (x, y). Returns (loss as a float, detached logits); a step
    of your own, with this same signature (preflight takes it too), may return just the loss
    (then fit records no training accuracy). A model with several outputs (a tuple, list or dict of
    tensors) hands all of them to loss_fn, and they come back detached in the same structure."""
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)              # (B, num_classes), or several outputs
    loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item(), detached(logits)


def detached(out):
    """out with every tensor detached, in the same tuple/list/dict structure."""
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, dict):
        return type(out)((k, detached(v)) for k, v in out.items())
    if isinstance(out, (tuple, list)):
        return type(out)(*map(detached, out)) if hasattr(out, "_fields") else type(out)(map(detached, out))
    return out


def new_history():
    return {"step": [], "loss": [], "lr": [],            # one entry per optimization step
            "epoch": [], "epoch_step": [],               # per epoch: its number and its last step
            **{key: [] for key in PER_EPOCH},             # per epoch; nan where not measured
            "stopped": None,                             # why training ended; None while running
            "interrupted": False}                        # True when Ctrl-C ended training


@dataclass
class EarlyStopping:
    """Stop when history[metric] has not improved for `patience` epochs (and keep the best weights)."""
    patience: int = 3            # epochs without improvement before stopping
    min_delta: float = 0.0       # an improvement smaller than this does not count
    metric: str = "val_loss"     # a per-epoch history key; names containing 'acc' are maximized
    restore_best: bool = True    # when fit ends, load the best epoch's weights back into the model
    best: float = field(default=math.nan, init=False)
    best_epoch: int = field(default=0, init=False)
    bad_epochs: int = field(default=0, init=False)
    best_state: dict = field(default=None, init=False, repr=False)

    def start(self):
        self.best, self.best_epoch, self.bad_epochs, self.best_state = math.nan, 0, 0, None

    def update(self, value, epoch, model):
        """Record this epoch's metric; return True when training should stop."""
        sign = -1 if "acc" in self.metric else 1  # compare as "lower is better"
        improved = not math.isnan(value) and (
            self.best_epoch == 0 or sign * value < sign * self.best - self.min_delta)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def message(self, epoch):
        return (f"early stopping after epoch {epoch}: {self.metric} did not improve by more than {self.min_delta} "
                f"for {self.patience} epochs (best {self.best:.4f} at epoch {self.best_epoch}).")

    def restore(self, model, last_epoch):
        """Load the best weights back unless the last epoch was the best; returns a note for history."""
        if not self.restore_best or self.best_state is None or self.best_epoch == last_epoch:
            return ""
        model.load_state_dict(self.best_state)
        return f" Restored the weights of epoch {self.best_epoch}."


def fit(model, train_loader, loss_fn, optimizer, epochs=1, *, val_loader=None, train_step=None,
        callbacks=(), every=1, early_stopping=None, tensorboard_dir=None, device=None, progress=True,
        max_steps=None, scheduler=None, diverge_factor=DIVERGE_FACTOR):
    """Train for `epochs` passes over train_loader (a BatchLoader, DataLoader or any (x, y) iterable).

    callbacks: functions cb(step, model, history), called at step 0 (the untrained model), every
    `every` steps, and once after training (history["stopped"] is then set). Returns the history dict.
    scheduler: a torch.optim.lr_scheduler stepped after every optimization step (e.g. OneCycleLR with
    total_steps = epochs * len(train_loader)); history["lr"] holds the rate each step used.
    progress=False (or the environment variable TQDM_DISABLE=1) turns off the progress bar.

    Ctrl-C (KeyboardInterrupt) ends training and still returns the history so far, marked
    history["interrupted"] = True, with the model in train mode (and early stopping's best weights).
    Divergence stops training loudly: a non-finite loss, a loss diverge_factor times the first step's
    (None: no such check), or non-finite weights or BatchNorm statistics at an epoch's end. The model
    then gets back the weights of the last epoch that ended finite, and the warning says which.
    """
    _check_fit_args(epochs, every, max_steps, val_loader, early_stopping, diverge_factor)
    device = model_device(model) if device is None else check_device(device)
    model.to(device)
    train_step = train_step or default_train_step
    history, step, epoch = new_history(), 0, 0
    writer = _tensorboard_writer(tensorboard_dir)
    if early_stopping is not None:
        early_stopping.start()
    finite = (0, _snapshot(model))  # (epoch, weights): the last weights known finite
    bar = tqdm(total=_total_steps(train_loader, epochs, max_steps), unit="step",
               **({} if progress else {"disable": True}))
    try:
        try:
            _call(callbacks, step, model, history)
            for epoch in range(1, epochs + 1):
                model.train()
                bar.set_description(f"epoch {epoch}/{epochs}")
                meter, start = {"n": 0, "loss_sum": 0.0, "correct": 0, "n_acc": 0, "wait": 0.0}, time.perf_counter()
                diverged = None  # why training diverged, in words
                # ---- one epoch of optimization steps
                for x, y, waited in _timed_batches(train_loader, device):
                    history["lr"].append(optimizer.param_groups[0]["lr"] if optimizer is not None else math.nan)
                    out = train_step(model, (x, y), loss_fn, optimizer)
                    if scheduler is not None:
                        scheduler.step()
                    loss, logits = out if isinstance(out, tuple) else (out, None)
                    loss, step = float(loss), step + 1
                    history["step"].append(step)
                    history["loss"].append(loss)
                    _accumulate(meter, loss, logits, y, waited)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    if writer:
                        writer.add_scalar("train/loss_per_step", loss, step)
                    diverged = _loss_diverged(loss, history["loss"][0], diverge_factor, step)
                    if diverged:  # stop loudly: every later step would be wasted
                        break
                    if step % every == 0:
                        _call(callbacks, step, model, history)
                    if max_steps is not None and step >= max_steps:
                        history["stopped"] = f"reached max_steps={max_steps} (epoch {epoch})."
                        break
                # ---- end of the epoch: summary, validation, early stopping
                seconds = time.perf_counter() - start
                if meter["n"] == 0:
                    raise ValueError(f"train_loader yielded no batches in epoch {epoch}: is it empty, or a one-shot "
                                     "iterator (a generator) that epoch 1 used up? Pass a loader or a list of batches.")
                if not diverged and not _all_finite(model):  # e.g. BatchNorm running_var overflowed
                    diverged = (f"weights or BatchNorm statistics became inf/nan in epoch {epoch}, though the loss "
                                "stayed finite: lower the learning rate (try 10x smaller), or clip gradients.")
                if diverged:  # put the last finite weights back, and never evaluate the broken ones
                    history["stopped"] = diverged + _put_back(model, *finite)
                    warnings.warn(history["stopped"], stacklevel=2)
                    val = (math.nan, math.nan)
                else:
                    finite = (epoch, _snapshot(model))
                    val = evaluate(model, val_loader, loss_fn, device) if val_loader is not None else (math.nan, math.nan)
                _end_epoch(history, epoch, step, meter, seconds, val, writer)
                if early_stopping is not None and history["stopped"] is None:
                    if early_stopping.update(history[early_stopping.metric][-1], epoch, model):
                        history["stopped"] = early_stopping.message(epoch)
                if history["stopped"] is not None:
                    break
        except KeyboardInterrupt:  # Ctrl-C: keep what was learned so far
            history["interrupted"] = True
            history["stopped"] = (f"interrupted (KeyboardInterrupt) in epoch {max(epoch, 1)} after step {step}: "
                                  "the history holds every step until then.")
            warnings.warn(history["stopped"], stacklevel=2)
        model.train()
        if history["stopped"] is None:
            history["stopped"] = f"finished {epochs} epochs."
        if early_stopping is not None:  # after Ctrl-C the weights may be mid-epoch: always restore the best
            last = None if history["interrupted"] or not history["epoch"] else history["epoch"][-1]
            history["stopped"] += early_stopping.restore(model, last)
        _call(callbacks, step, model, history)
    finally:
        bar.close()
        if writer:
            writer.close()
    return history


@torch.no_grad()
def evaluate(model, loader, loss_fn, device=None):
    """(mean loss, accuracy) over a loader in eval mode (dropout off, BatchNorm running statistics).
    loss_fn must average over the batch (PyTorch's default reduction='mean')."""
    device = model_device(model) if device is None else check_device(device)
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    try:  # Ctrl-C or an error mid-way must not leave the model in eval mode
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)  # (B, num_classes)
            loss_sum += loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no batches (empty split?).")
    return loss_sum / n, correct / n


@torch.no_grad()
def predict(model, data, batch_size=512, device=None):
    """Softmax probabilities (N, num_classes) on the CPU for a float tensor of inputs (N, C, H, W)
    or a loader of (x, y) batches. The loader must not shuffle, or rows would not match your labels."""
    device = model_device(model) if device is None else check_device(device)
    if torch.is_tensor(data):
        if not data.is_floating_point():
            raise ValueError(f"predict got a {data.dtype} tensor: pass the normalized float inputs the model "
                             "trained on (e.g. a BatchLoader with shuffle=False and the training mean/std).")
        batches = data.split(batch_size)
    else:
        if getattr(data, "shuffle", False) or isinstance(getattr(data, "sampler", None),
                                                         torch.utils.data.RandomSampler):
            raise ValueError("predict got a loader that shuffles: the probabilities would not line up with "
                             "your labels. Build it with shuffle=False.")
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
    was_training = model.training
    model.eval()
    try:
        probs = [model(x.to(device, non_blocking=True)).softmax(1).cpu() for x in batches]  # [(B, num_classes)]
    finally:
        model.train(was_training)
    return torch.cat(probs)


def snapshot_predictions(x_fixed, every=10, key="snapshots"):
    """A fit callback: every `every` steps, store the softmax probabilities on the fixed batch x_fixed.

    history[key] becomes a list of {"step": int, "probs": (B, num_classes) CPU tensor}, including step 0
    and the last step; widgets.prediction_dynamics plays it back. The model's train/eval mode is kept.
    """
    def callback(step, model, history):
        snapshots = history.setdefault(key, [])
        if step % every and history["stopped"] is None:
            return
        if snapshots and snapshots[-1]["step"] == step:
            return
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                probs = model(x_fixed.to(model_device(model))).softmax(1).cpu()
        finally:
            model.train(was_training)
        snapshots.append({"step": step, "probs": probs})
    return callback


# ----------------------------------------------------------------------------- helpers of fit

def _timed_batches(loader, device):
    """Yield (x, y, seconds spent waiting for this batch), with x and y moved to device."""
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            return
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x, y, time.perf_counter() - start


def _loss_diverged(loss, first, factor, step):
    """Why this step's loss says training diverged, in words; None while it looks sane."""
    if not math.isfinite(loss):
        return (f"loss became {loss} at step {step}: lower the learning rate (try 10x smaller), check inputs and "
                "labels for nan/inf, or clip gradients.")
    if factor is not None and first > 0 and loss > factor * first:
        return (f"loss exploded to {loss:.3g} at step {step}, over {factor:g} times the first step's {first:.3g}: "
                "lower the learning rate (try 10x smaller), or clip gradients (diverge_factor=None turns this "
                "check off, e.g. for a model resumed at a near-zero loss).")
    return None


def _snapshot(model):
    """A copy of the model's weights and buffers, to put back if training diverges. Kept on the CPU:
    one copy per epoch costs a transfer, not a second model's worth of GPU memory."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}


def _put_back(model, epoch, weights):
    """Load a _snapshot taken at the end of `epoch` (0: before training); returns a note for history."""
    model.load_state_dict(weights)
    when = f"the end of epoch {epoch}" if epoch else "before training"
    return f" The model holds its weights from {when}, the last finite ones."


def _all_finite(model):
    """True when every floating weight and buffer (BatchNorm's running statistics too) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _accumulate(meter, loss, logits, y, waited):
    meter["n"] += len(y)
    meter["loss_sum"] += loss * len(y)
    meter["wait"] += waited
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and isinstance(y, torch.Tensor) and y.ndim == 1:  # class-index labels: accuracy makes sense
        meter["correct"] += (logits.argmax(1) == y).sum().item()
        meter["n_acc"] += len(y)


def _end_epoch(history, epoch, step, meter, seconds, val, writer):
    history["epoch"].append(epoch)
    history["epoch_step"].append(step)
    history["train_loss"].append(meter["loss_sum"] / meter["n"])
    history["train_acc"].append(meter["correct"] / meter["n_acc"] if meter["n_acc"] else math.nan)
    history["val_loss"].append(val[0])
    history["val_acc"].append(val[1])
    history["throughput"].append(meter["n"] / seconds)                       # samples per second
    history["data_wait_share"].append(min(1.0, meter["wait"] / seconds))     # 0..1 of the epoch's time
    if writer:
        for key in PER_EPOCH:
            if not math.isnan(history[key][-1]):
                writer.add_scalar(f"epoch/{key}", history[key][-1], step)


def _call(callbacks, step, model, history):
    for callback in callbacks:
        callback(step, model, history)


def _total_steps(loader, epochs, max_steps):
    try:
        total = len(loader) * epochs
    except TypeError:  # an iterable without a length
        return max_steps
    return total if max_steps is None else min(total, max_steps)


def _tensorboard_writer(log_dir):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import
    return SummaryWriter(str(log_dir))


def _check_fit_args(epochs, every, max_steps, val_loader, early_stopping, diverge_factor):
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}: pass a whole number of epochs >= 1.")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r}: callbacks run every `every` steps, a whole number >= 1.")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps={max_steps!r}: pass a whole number >= 1, or None for no limit.")
    if diverge_factor is not None and not (isinstance(diverge_factor, (int, float)) and diverge_factor > 1):
        raise ValueError(f"diverge_factor={diverge_factor!r}: pass a number > 1 (how many times the first "
                         "step's loss counts as exploding), or None to turn the check off.")
    if early_stopping is not None:
        if early_stopping.metric not in PER_EPOCH:
            raise ValueError(f"EarlyStopping(metric={early_stopping.metric!r}): use one of {PER_EPOCH}.")
        if early_stopping.metric.startswith("val_") and val_loader is None:
            raise ValueError(f"EarlyStopping watches {early_stopping.metric!r} but fit got no val_loader: "
                             "pass val_loader=..., or EarlyStopping(metric='train_loss').")
