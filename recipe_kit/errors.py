"""Error analysis: the examples a model gets most wrong, and the classes it confuses.

    table = rk.errors.predictions_table(model, val_loader, classes=val.classes)  # one row per example
    rk.top_losses(model, val_loader, classes=val.classes, k=16)     # the k highest-loss rows
    rk.most_confused(model, val_loader, classes=val.classes)        # (true, predicted, count) pairs
    rk.plots.top_losses(table, val.images, val.classes)             # look at them
    rk.widgets.error_browser(table, val.images, val.classes)        # page through them

Why: accuracy says how often the model is wrong, not about what. The highest-loss validation images
are where the recipe loops back to stage 1: some are label errors, some ambiguous, some a visible
gap (a class the model never learned to tell apart), and each calls for a different next step.
Plain data (pandas DataFrames) comes out; plots and widgets consume it. fastai's Interpretation
(plot_top_losses, most_confused) is the reference.
"""
import pandas as pd
import torch

from .train import model_device

COLUMNS = ["index", "true", "predicted", "confidence", "p_true", "loss"]


def _batches(data, labels, batch_size):
    """(x, y or None) batches of a float tensor (N, C, H, W) or of a loader that does not shuffle."""
    if torch.is_tensor(data):
        if not data.is_floating_point():
            raise ValueError(f"data is a {data.dtype} tensor: pass the normalized float inputs the model trained "
                             "on, or a loader built with shuffle=False (e.g. a BatchLoader with the train mean/std).")
        if labels is None:
            raise ValueError("labels=None with a tensor of inputs: pass labels (N,) class indices, one per image.")
        return [(x, None) for x in data.split(batch_size)]
    if getattr(data, "shuffle", False) or isinstance(getattr(data, "sampler", None), torch.utils.data.RandomSampler):
        raise ValueError("data is a loader that shuffles: rows would not line up with the images. Build it with "
                         "shuffle=False.")
    return _loader_batches(data)


def _loader_batches(loader):
    epoch = getattr(loader, "epoch", None)  # a BatchLoader counts its epochs: looking must not shift them
    try:
        for b in loader:
            yield (b[0], b[1]) if isinstance(b, (tuple, list)) else (b, None)
    finally:
        if epoch is not None:
            loader.epoch = epoch


@torch.no_grad()
def predictions_table(model, data, labels=None, classes=None, batch_size=512):
    """One row per example: index, true, predicted, confidence (p of the predicted class), p_true
    (p of the true class) and loss (cross-entropy, -log p_true), plus true_name and predicted_name
    when classes are given.

    data: normalized float inputs (N, C, H, W), or a loader that does not shuffle (then labels
    default to its y). The model is run in eval mode and left in the mode it was in.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        log_probs, seen = [], []
        for x, y in _batches(data, labels, batch_size):
            log_probs.append(model(x.to(device)).float().log_softmax(1).cpu())  # (B, num_classes)
            if y is not None:
                seen.append(torch.as_tensor(y).cpu())
    finally:
        model.train(was_training)
    if not log_probs:
        raise ValueError("data yielded no batches (empty split?).")
    log_probs = torch.cat(log_probs)                                        # (N, num_classes)
    if labels is None:
        if not seen:
            raise ValueError("labels=None but the loader yields no labels: pass labels.")
        labels = torch.cat(seen)
    labels = torch.as_tensor(labels).cpu().long()
    if labels.shape != (len(log_probs),):
        raise ValueError(f"labels has shape {tuple(labels.shape)} but the model saw {len(log_probs)} examples: "
                         "pass one class index per example, in the order of data.")
    if len(labels) and (labels.min() < 0 or labels.max() >= log_probs.shape[1]):
        raise ValueError(f"labels span {labels.min()}..{labels.max()} but the model has {log_probs.shape[1]} "
                         "outputs: pass class indices (0..num_classes-1).")
    log_p_true = log_probs.gather(1, labels[:, None])[:, 0]                 # (N,)
    log_conf, predicted = log_probs.max(1)                                  # (N,), (N,)
    table = pd.DataFrame({"index": range(len(labels)), "true": labels.numpy(), "predicted": predicted.numpy(),
                          "confidence": log_conf.exp().numpy(), "p_true": log_p_true.exp().numpy(),
                          "loss": (-log_p_true).numpy()})
    if classes is not None:
        if len(classes) != log_probs.shape[1]:
            raise ValueError(f"classes has {len(classes)} names but the model has {log_probs.shape[1]} outputs.")
        table["true_name"] = [classes[i] for i in table["true"]]
        table["predicted_name"] = [classes[i] for i in table["predicted"]]
    return table


def rank_losses(table, k=16):
    """The k rows of a predictions_table with the highest loss, highest first (ties: lower index first)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: pass a positive whole number of examples.")
    return table.sort_values(["loss", "index"], ascending=[False, True], kind="stable").head(k).reset_index(drop=True)


def confused_pairs(table, min_count=1):
    """(true, predicted, count) for every wrong pair seen at least min_count times, most frequent first;
    with true_name and predicted_name if the table has names."""
    wrong = table[table["true"] != table["predicted"]]
    keys = ["true", "predicted"] + (["true_name", "predicted_name"] if "true_name" in table else [])
    pairs = wrong.groupby(keys).size().reset_index(name="count")
    pairs = pairs[pairs["count"] >= min_count]
    order = ["count", "true", "predicted"]
    return pairs.sort_values(order, ascending=[False, True, True], kind="stable").reset_index(drop=True)


def top_losses(model, data, labels=None, classes=None, k=16, batch_size=512):
    """The k examples with the highest loss: index, true, predicted, confidence, p_true, loss (a DataFrame).
    Arguments as predictions_table; for plots or several views, build that table once instead."""
    return rank_losses(predictions_table(model, data, labels, classes, batch_size), k)


def most_confused(model, data, labels=None, classes=None, min_count=1, batch_size=512):
    """Class pairs the model confuses: true, predicted, count (a DataFrame), most frequent first."""
    return confused_pairs(predictions_table(model, data, labels, classes, batch_size), min_count)
