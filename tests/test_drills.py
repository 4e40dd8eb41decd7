"""Every drill is a real silent bug: its intended check flags it as an error, and feedback works."""
import pytest

import recipe_kit as rk
from recipe_kit import drills


def test_at_least_twelve_drills_covering_data_and_pipeline_bugs():
    assert len(drills.DRILLS) >= 12
    assert {d.kind for d in drills.DRILLS} == {"data", "pipeline"}
    assert [d.number for d in drills.DRILLS] == list(range(1, len(drills.DRILLS) + 1))
    for drill in drills.DRILLS:
        assert drill.bug in drills.BUG_CLASSES
        assert drill.bug.replace("_", " ") not in drill.symptom.lower(), "the symptom must not give the answer"


@pytest.mark.parametrize("drill", drills.DRILLS, ids=lambda d: f"{d.number}-{d.bug}")
def test_the_checks_find_each_drill(drill):
    parts = drill.build()
    run = rk.preflight if drill.kind == "pipeline" else rk.audit_data
    report = run(*parts, budget=drill.budget)
    assert drill.check in {p.check for p in report.errors}, str(report)


def test_feedback():
    drill = drills.get(1)
    right = drill.answer("Missing zero-grad")
    assert right.correct and "zero_grad" in str(right) and str(right).startswith("✓")
    wrong = drill.answer("softmax_before_cross_entropy")
    assert not wrong.correct and "'zero_grad' check" in wrong.message
    unknown = drill.answer("cosmic rays")
    assert not unknown.correct and "not a bug class" in unknown.message
    with pytest.raises(ValueError, match="numbered 1.."):
        drills.get(99)
    assert "Drill 1 (pipeline)" in str(drill) and "rk.preflight" in str(drill)
