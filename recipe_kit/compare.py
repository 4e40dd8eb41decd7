"""Is the new model better than the old one? Score both on the same images, with the paired standard error.

Two models scored on the same N images agree about most of them; only the images on which one is
right and the other wrong carry information about which is better. With d such disagreements, the
standard error of the accuracy difference is sqrt(d) / N (the paired, McNemar-style estimate): much
smaller than that of two independent accuracies, so a real difference resolves with fewer images.
The course keeps a change only when its gain is at least twice this standard error.
"""
import torch

from .train import predict


def right_on(model, loader, labels):
    """(N,) bool: which images of a non-shuffling loader the model classifies correctly."""
    return predict(model, loader).argmax(1) == torch.as_tensor(labels)


def paired_gain(right_new, right_old):
    """Accuracy of new minus old on the same images, and its standard error: (difference, se).

    right_new, right_old: (N,) bool tensors, image by image (e.g. from right_on)."""
    right_new, right_old = torch.as_tensor(right_new), torch.as_tensor(right_old)
    if right_new.shape != right_old.shape or right_new.dim() != 1 or len(right_new) == 0:
        raise ValueError(f"paired_gain needs two (N,) tensors for the same N > 0 images, got shapes "
                         f"{tuple(right_new.shape)} and {tuple(right_old.shape)}: score both models on the same loader.")
    difference = right_new.float().mean().item() - right_old.float().mean().item()
    return difference, (right_new != right_old).sum().item() ** 0.5 / len(right_new)
