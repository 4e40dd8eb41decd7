"""preflight's augmentation check: an augmentation that changes what an image shows (so its label no longer
fits) is flagged and named; label-preserving augmentations, mixup and plain steps stay quiet.

Real Fashion-MNIST and scikit-learn's digits, small CNNs, one thread (conftest.py).
"""
import pytest
import torch
import torch.nn as nn

import recipe_kit as rk
from recipe_kit.bugs import adam, small_cnn, standard_step, standardize
from recipe_kit.bugs_blind import BLIND, digits, digits_cnn
from recipe_kit.correct_pipelines import CORRECT
from recipe_kit.loader import random_crop, random_erase, random_flip
from recipe_kit.preflight import CHECKS, preflight
from recipe_kit.preflight_mechanisms import AUG_KEPT

OTHERS = tuple(c for c in CHECKS if c != "augmentation")


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:2000], train.labels[:2000]


def augmented(aug):
    def step(model, batch, loss_fn, optimizer):
        x, y = batch
        return standard_step(model, (aug(x), y), loss_fn, optimizer)
    return step


def judged(model, data, step):
    report = preflight(model, data, nn.CrossEntropyLoss(), adam(), step, budget="fast", skip=OTHERS)
    return report, report.details.get("stats", {}).get("augmentation", {}).get("kept")


def test_flips_on_digits_are_named(fmnist):
    bug = next(b for b in BLIND if b.name == "flips_on_digits")
    report = preflight(*bug.build(*fmnist), budget="fast", skip=OTHERS)
    (problem,) = [p for p in report.problems if p.check == "augmentation"]
    assert "no longer match their labels" in problem.message and "flipped 6 is a 9" in problem.message
    assert report.details["stats"]["augmentation"]["kept"] < AUG_KEPT      # measured 0.59-0.65


def test_images_shuffled_apart_from_labels_is_an_error(fmnist):
    g = torch.Generator().manual_seed(0)
    report, kept = judged(small_cnn(), (standardize(fmnist[0]), fmnist[1]),
                          augmented(lambda x: x[torch.randperm(len(x), generator=g)]))
    assert [p.severity for p in report.problems if p.check == "augmentation"] == ["error"], str(report)
    assert kept < 0.5                                                    # measured 0.22


@pytest.mark.parametrize("name", ["flip", "flip+crop4+erase", "noise"])
def test_label_preserving_augmentations_on_clothes_pass(name, fmnist):
    g = torch.Generator().manual_seed(0)
    aug = {"flip": lambda x: random_flip(x, g),
           "flip+crop4+erase": lambda x: random_erase(random_crop(random_flip(x, g), 4, g), g),
           "noise": lambda x: x + 0.2 * torch.randn(x.shape, generator=g)}[name]
    report, kept = judged(small_cnn(), (standardize(fmnist[0]), fmnist[1]), augmented(aug))
    assert "augmentation" in report.passed, str(report)
    assert kept >= AUG_KEPT                                              # measured 0.97-1.0


@pytest.mark.parametrize("padding", [1, 2])
def test_crops_on_digits_pass(padding):
    g = torch.Generator().manual_seed(0)
    report, kept = judged(digits_cnn(), digits(), augmented(lambda x: random_crop(x, padding, g)))
    assert "augmentation" in report.passed, str(report)
    assert kept >= AUG_KEPT                                              # measured 0.99-1.0


def test_mixup_and_steps_without_augmentation_pass(fmnist):
    for p in CORRECT:
        if p.name in ("mixup_soft_targets", "gradient_accumulation", "amp_grad_scaler"):
            report = preflight(*p.build(*fmnist), budget="fast", skip=OTHERS)
            assert "augmentation" in report.passed, f"{p.name}:\n{report}"
