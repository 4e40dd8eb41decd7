"""Correct but advanced pipelines get no error from preflight, and every check ran or says why not.

A false alarm teaches a learner to ignore the checks: these are the practices a careful practitioner
uses (recipe_kit/correct_pipelines.py), on real Fashion-MNIST subsets and scikit-learn's digits.
"""
import pytest

import recipe_kit as rk
from recipe_kit.correct_pipelines import CORRECT
from recipe_kit.preflight import CHECKS, preflight

N = 2000


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:N], train.labels[:N]


@pytest.mark.parametrize("pipeline", CORRECT, ids=[p.name for p in CORRECT])
def test_correct_advanced_pipeline_has_no_error(pipeline, fmnist):
    report = preflight(*pipeline.build(*fmnist), budget="full")
    assert report.ok, str(report)
    assert {w.check for w in report.warnings} <= pipeline.warnings, str(report)
    accounted = set(report.checks_run) | {name for name, _ in report.skipped}
    assert set(CHECKS) <= accounted, str(report)          # each check ran, or says why it does not apply
    assert all(reason for _, reason in report.skipped)


def test_catalog_covers_the_advanced_practices():
    names = {p.name for p in CORRECT}
    assert {"gradient_accumulation", "amp_grad_scaler", "bf16_autocast", "ema_of_weights", "mixup_soft_targets",
            "frozen_pretrained_backbone", "class_weighted_loss", "bce_one_output", "one_cycle_per_step",
            "label_smoothing", "gradient_clipping", "digits_8x8", "colour_32x32"} <= names
    assert all(p.description for p in CORRECT)
