"""The interview quiz: every question well-formed, scoring and feedback, the widget's check button."""
import pytest

from recipe_kit import quiz


def test_every_stage_has_well_formed_questions():
    assert sorted(quiz.QUESTIONS) == [1, 2, 3, 4, 5, 6]
    for questions in quiz.QUESTIONS.values():
        assert len(questions) >= 2
        for q in questions:
            assert 0 <= q.answer < len(q.choices) and len(set(q.choices)) == len(q.choices) and q.explanation


def test_score_counts_and_explains():
    right = [q.answer for q in quiz.QUESTIONS[2]]
    correct, lines = quiz.score(2, right)
    assert correct == len(right) and all(line.startswith("✓") for line in lines)
    wrong = [(a + 1) % len(q.choices) for a, q in zip(right, quiz.QUESTIONS[2])]
    wrong[0] = None
    correct, lines = quiz.score(2, wrong)
    assert correct == 0 and lines[0].startswith("–") and lines[1].startswith("✗")
    assert "log(10)" in lines[0]  # the explanation comes with every answer
    with pytest.raises(ValueError, match="has 3 questions"):
        quiz.score(2, [0])
    with pytest.raises(ValueError, match="stages"):
        quiz.quiz(9)


def test_widget_check_button_scores_the_picked_answers():
    box = quiz.quiz(1)
    pickers = [c for c in box.children if hasattr(c, "options")]
    button = next(c for c in box.children if getattr(c, "description", "") == "Check")
    for picker, q in zip(pickers, quiz.QUESTIONS[1]):
        picker.value = q.answer
    button.click()
    assert f"<b>{len(pickers)} / {len(pickers)}</b>" in box.children[-1].value
    assert "Q1. You get a new image dataset" in box.summary()
