"""A short multiple-choice quiz per stage, from the notebooks' interview questions, with explanations.

    rk.quiz.quiz(2)                      # a widget: pick answers, press "Check"
    rk.quiz.score(2, [1, 0, 2])          # plain data: (correct count, feedback lines), for tests and scripts

Why: interview prep is recall under pressure; a wrong pick followed by the reason sticks better than
rereading. The explanations are the model answers of the notebooks' collapsible blocks.
"""
from dataclasses import dataclass

import ipywidgets as widgets

from .widgets import Panel


@dataclass(frozen=True)
class Question:
    prompt: str
    choices: tuple
    answer: int          # index into choices
    explanation: str


Q = Question
QUESTIONS = {
    1: [Q("You get a new image dataset. What comes first?",
          ("Train a strong baseline model to see how hard it is",
           "Look at thousands of examples, class balance and pixel statistics per split, and duplicates",
           "Pick the augmentations from a paper on a similar dataset"), 1,
          "Inspect before modelling: what you see (ambiguous classes, shortcuts, duplicates, scale "
          "differences between splits) decides the pipeline, and a model would hide it."),
      Q("Test accuracy is suspiciously higher than validation accuracy. Most likely cause?",
        ("Train/test leakage: test images that are (shifted, re-encoded) copies of train images",
         "The test set is easier by chance", "Dropout is off at test time"), 0,
        "Check near-duplicates across splits with a shift-tolerant comparison; leakage makes test "
        "accuracy measure memory."),
      Q("The audit flags 3% of labels as suspicious on a clean public dataset. What do you do?",
        ("Drop them all before training", "Look at a ranked sample: fix real errors, keep ambiguous ones",
         "Ignore the audit"), 1,
        "A few percent of ambiguous labels is normal; dropping hard examples inflates accuracy. Fix what is "
        "wrong, keep what is ambiguous, report the effect.")],
    2: [Q("Loss at initialization for 10 balanced classes, with a well-initialized classifier?",
          ("0", "1.0", "2.303 = -log(1/10)", "Depends on the learning rate"), 2,
          "A fresh classifier should be maximally unsure: uniform probabilities, so the cross-entropy is "
          "log(10). On imbalanced data: the label entropy (init the final bias to log prior)."),
      Q("Your model's loss does not go down. The first experiment?",
        ("Try a bigger model", "Overfit a single batch of a few examples",
         "Add batch normalization", "Train for longer"), 1,
        "If 8 examples cannot be driven to ~zero loss, the bug is in the pipeline (zero_grad, optimizer "
        "params, train mode, labels), not in capacity or data."),
      Q("Why train the same model on all-zero inputs?",
        ("To initialize the weights", "To measure what can be learned without the data: the label prior",
         "To regularize"), 1,
        "An input-independent baseline is the floor a real model must clearly beat; if it does not, the "
        "input path is broken or the labels are misaligned.")],
    3: [Q("Why make the model overfit before regularizing?",
          ("Overfitting is the goal", "To separate 'cannot fit' (capacity, optimizer, bug) from 'does not "
           "generalize'", "Regularization only works on overfit models"), 1,
          "If it cannot fit the training set, regularization only makes it worse; once it can, each "
          "regularizer is a measurable trade."),
      Q("The training loss becomes NaN after a few hundred steps. First thing to try?",
        ("Lower the learning rate 10x", "Add dropout", "Use a bigger batch", "Switch to SGD"), 0,
        "Too high a learning rate is the usual cause; also check inputs for NaN/inf, log(0) in custom "
        "losses, and gradient norms (clip if they spike)."),
      Q("You changed the architecture and the learning rate together and accuracy improved. What do you "
        "know?", ("Both changes helped", "The architecture helped", "Little: the effects cannot be separated"), 2,
        "Change one thing at a time against the same baseline and seed; effects can cancel or hide.")],
    4: [Q("What is usually the most effective regularizer?",
          ("Dropout", "More real training data", "Weight decay", "A smaller batch"), 1,
          "More data beats every other regularizer; then augmentation (fake more data), pretraining, "
          "smaller models, decay, dropout, early stopping."),
      Q("A model regularized heavily from the first run has a high training loss. What can you conclude?",
        ("It is underfitting because of the regularizers", "It has a bug", "Nothing yet: it could be "
         "either, which is why you overfit first"), 2,
        "Regularizing from the start hides whether the model can fit at all."),
      Q("Adam with weight_decay=1e-2 barely changes the weights that have large gradients. Why, and the fix?",
        ("Weight decay needs a smaller learning rate", "Adam rescales the added L2 gradient per parameter, so "
         "large-gradient weights barely decay; use AdamW, which decays the weights directly",
         "Weight decay only acts on biases"), 1,
        "Adam's weight_decay adds wd * w to the gradient, which the per-parameter normalization then shrinks "
        "where gradients are large. AdamW (decoupled decay) multiplies every weight by 1 - lr * wd each step."),
      Q("Train accuracy 99%, validation 85%. Two runs with and without dropout differ by 0.2 points on "
        "10,000 validation images. What do you conclude?",
        ("Dropout helped", "Dropout hurt", "Nothing: the standard error is about 0.36 points, so 0.2 is noise"), 2,
        "sqrt(p (1 - p) / n) = sqrt(0.85 * 0.15 / 10000) = 0.36%; a difference under about two standard errors "
        "(and under the epoch-to-epoch jitter) is not evidence. Repeat with more seeds, or train longer.")],
    5: [Q("Why random search rather than grid search at the same budget?",
          ("It is faster per trial", "It tries many more distinct values of each hyperparameter, and "
           "usually only a few matter", "It always finds the optimum"), 1,
          "With n trials a grid tries only n^(1/d) values per axis; random search tries n values on the "
          "axis that matters (Bergstra & Bengio 2012)."),
      Q("How should the learning rate be sampled?",
        ("Uniformly between 1e-5 and 1e-1", "Log-uniformly between 1e-5 and 1e-1", "From a grid of 3 values"), 1,
        "The learning rate acts multiplicatively; uniform sampling would spend 90% of trials above 1e-2."),
      Q("An LR range test's loss is flat up to 1e-4, falls until 3e-2, then blows up. Which learning rate?",
        ("1e-4, where it starts to move", "About 3e-3: well inside the falling part, a tenth of where it turns up",
         "3e-2, the lowest loss", "1.0, the largest tried"), 1,
        "The minimum is at the edge of divergence; a tenth of it (or the steepest fall) is a safe start. Read it "
        "as a range, then confirm with a few short trials."),
      Q("After 40 trials the best-so-far curve has not risen by more than the seed-to-seed noise in the last "
        "15. What now?",
        ("Run 100 more trials", "Stop tuning: spend the compute on a longer run, more data or an ensemble",
         "Switch to grid search"), 1,
        "Tuning has diminishing returns: once the best trial stops improving by more than the noise, more "
        "trials mostly select lucky seeds (overfitting the validation set). Stage 6 pays more now.")],
    6: [Q("Which usually gives a reliable last 1-2% of accuracy?",
          ("An ensemble of independently trained models", "A different random seed", "A larger test set"), 0,
          "Ensembles average out independent errors; distillation can compress them back into one model."),
      Q("What does temperature scaling change?",
        ("The predicted class", "The confidence of predictions, not their ranking", "The training loss"), 1,
        "Dividing logits by a temperature fitted on validation calibrates probabilities without changing "
        "argmax accuracy.")],
}


def score(stage, answers):
    """(number correct, one feedback line per question) for answer indices (None = unanswered)."""
    questions = _questions(stage)
    if len(answers) != len(questions):
        raise ValueError(f"stage {stage} has {len(questions)} questions, got {len(answers)} answers.")
    lines, correct = [], 0
    for k, (q, a) in enumerate(zip(questions, answers), start=1):
        ok = a == q.answer
        correct += ok
        verdict = "✓" if ok else ("–" if a is None else "✗")
        lines.append(f"{verdict} Q{k}: {q.choices[q.answer]}. {q.explanation}")
    return correct, lines


def quiz(stage):
    """Radio buttons for each question of a stage, and a Check button that explains every answer."""
    questions = _questions(stage)
    pickers = [widgets.RadioButtons(options=[(c, i) for i, c in enumerate(q.choices)], value=None,
                                    layout=widgets.Layout(width="auto")) for q in questions]
    feedback = widgets.HTML()
    check = widgets.Button(description="Check")

    def on_check(_):
        correct, lines = score(stage, [p.value for p in pickers])
        feedback.value = (f"<b>{correct} / {len(questions)}</b><br>" + "<br>".join(lines))
    check.on_click(on_check)
    rows = []
    for k, (q, picker) in enumerate(zip(questions, pickers), start=1):
        rows += [widgets.HTML(f"<b>Q{k}.</b> {q.prompt}"), picker]
    text = "\n".join(f"Q{k}. {q.prompt}\n" + "\n".join(f"   ({chr(97 + i)}) {c}" for i, c in enumerate(q.choices))
                     for k, q in enumerate(questions, start=1))
    box = Panel(rows + [check, feedback], lambda: f"quiz, stage {stage}:\n{text}", lambda: None)
    box.add_class("rk-quiz")
    return box


def _questions(stage):
    if stage not in QUESTIONS:
        raise ValueError(f"stage={stage!r}: the quiz has stages {sorted(QUESTIONS)}.")
    return QUESTIONS[stage]
