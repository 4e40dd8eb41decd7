"""Calibration: does a predicted confidence of 0.9 mean right 90% of the time?

    T = fit_temperature(val_logits, val_labels)          # one number, fitted on held-out data
    probs = (test_logits / T).softmax(1)                  # same argmax, so the same accuracy
    table = reliability(probs, test_labels)               # per-bin confidence vs accuracy, and the ECE

Why it matters: modern networks are overconfident (Guo et al. 2017), and a decision that uses the
probability (a threshold, a cost, an ensemble weight) silently inherits the error. Temperature
scaling divides the logits by one scalar T fitted on validation data: the cheapest fix, and it
never changes which class wins. ECE is measured with torchmetrics; `reliability` adds the per-bin
table a reliability diagram draws (plots.reliability_diagrams).
"""
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error


def fit_temperature(logits, labels, max_iter=100):
    """The T > 0 that minimizes the NLL of softmax(logits / T) on (logits, labels): fit it on validation data."""
    logits, labels = torch.as_tensor(logits).float().detach(), torch.as_tensor(labels).long()
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"fit_temperature: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be "
                         "(N, num_classes) and (N,): pass raw logits, not probabilities or argmaxes.")
    log_t = torch.zeros(1, requires_grad=True)             # optimize log T, so T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.exp().item()


def reliability(probs, labels, n_bins=15):
    """Bin predictions by confidence (max probability): per bin the mean confidence, accuracy and count,
    and the expected calibration error (ECE: the count-weighted mean |accuracy - confidence|)."""
    probs, labels = torch.as_tensor(probs).float(), torch.as_tensor(labels).long()
    if not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-3):
        raise ValueError("reliability expects probabilities whose rows sum to 1: apply softmax to logits first.")
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * n_bins).ceil().long() - 1, 0, n_bins - 1)    # (N,) bin k: (k/n, (k+1)/n]
    count = torch.bincount(bins, minlength=n_bins).float()
    mean_conf = torch.bincount(bins, confidence, minlength=n_bins) / count.clamp(min=1)
    accuracy = torch.bincount(bins, correct, minlength=n_bins) / count.clamp(min=1)
    ece = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    return {"confidence": mean_conf.tolist(), "accuracy": accuracy.tolist(), "count": count.long().tolist(),
            "ece": ece.item(), "n_bins": n_bins}
