"""The interview quiz: every question well-formed, scoring and feedback, the widget's check button."""
import pytest

from recipe_kit import quiz


def test_every_stage_has_well_formed_questions():
    assert sorted(quiz.QUESTIONS) == [1, 2, 3, 4, 5, 6]
    for stage, questions in quiz.QUESTIONS.items():
        assert len(questions) >= (3 if stage in (4, 5) else 2), stage  # notebooks 4 and 5 end with theirs
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


@pytest.mark.parametrize("stage", [4, 5])
def test_stage_4_and_5_quizzes_score_and_render(stage):
    questions = quiz.QUESTIONS[stage]
    assert 3 <= len(questions) <= 4
    correct, lines = quiz.score(stage, [q.answer for q in questions])
    assert correct == len(questions) and all(line.startswith("✓") for line in lines)
    correct, lines = quiz.score(stage, [(q.answer + 1) % len(q.choices) for q in questions])
    assert correct == 0 and all(line.startswith("✗") and q.explanation in line for q, line in zip(questions, lines))
    box = quiz.quiz(stage)
    assert sum(hasattr(c, "options") for c in box.children) == len(questions)
    assert f"quiz, stage {stage}:" in box.summary() and questions[-1].prompt in box.summary()
