""""Debug this training loop" drills: a broken pipeline, one silent bug, you name the bug class.

    import recipe_kit as rk
    drill = rk.drills.DRILLS[0]
    print(drill)                         # the symptom, as someone asking for help would report it
    parts = drill.build()                # pipeline drills: (model, train, loss_fn, make_optimizer, train_step)
    rk.preflight(*parts)                 # data drills: (train, test) for rk.audit_data(*parts)
    drill.answer("missing_zero_grad")    # feedback: right or wrong, and why

Why: "my model isn't learning, what do you do?" is answered with a method, not a guess. Each drill
describes only the symptom; the evidence comes from running the checks; the answer is one of
BUG_CLASSES. Pipeline drills reuse recipe_kit.bugs (so every drill is also a test of preflight);
data drills plant one bug in a small Fashion-MNIST sample for audit_data.
"""
from dataclasses import dataclass
from typing import Callable

import torch

from . import bugs
from .data import Images, load_dataset


@dataclass(frozen=True)
class Drill:
    number: int
    kind: str           # "pipeline" (diagnose with rk.preflight) or "data" (with rk.audit_data)
    symptom: str        # what is reported; never the cause
    bug: str            # the answer: one of BUG_CLASSES
    check: str          # the check whose error is the evidence
    explanation: str    # why it fails silently, and the fix
    build: Callable     # () -> the broken parts, from a small seeded Fashion-MNIST sample
    budget: str = "fast"  # the cheapest checks budget that shows the evidence

    def __str__(self):
        tool = "rk.preflight(*parts)" if self.kind == "pipeline" else "rk.audit_data(*parts)"
        return (f"Drill {self.number} ({self.kind}): {self.symptom}\n"
                f"  parts = drill.build(); report = {tool[:-1]}, budget={self.budget!r}); "
                f"then drill.answer(<one of rk.drills.BUG_CLASSES>)")

    def answer(self, guess):
        """Feedback on a guessed bug class: a Feedback that prints as a short explanation."""
        guess = str(guess).strip().lower().replace(" ", "_").replace("-", "_")
        if guess not in BUG_CLASSES:
            return Feedback(False, f"'{guess}' is not a bug class of the drills; choose one of "
                                   f"rk.drills.BUG_CLASSES ({len(BUG_CLASSES)} names).")
        if guess == self.bug:
            return Feedback(True, f"Correct: {self.bug}. {self.explanation}")
        return Feedback(False, f"Not {guess}. Look for the error of the '{self.check}' check in the report, "
                               "and read its message: it names the cause.")


@dataclass(frozen=True)
class Feedback:
    correct: bool
    message: str

    def __str__(self):
        return ("✓ " if self.correct else "✗ ") + self.message

    __repr__ = __str__


# ----------------------------------------------------------------------------- the data of the drills

def _sample(n_train=3000, n_test=600, seed=0):
    """A seeded class-balanced-ish sample of Fashion-MNIST train and test."""
    g = torch.Generator().manual_seed(seed)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    tr = torch.randperm(len(train), generator=g)[:n_train]
    te = torch.randperm(len(test), generator=g)[:n_test]
    return (Images(train.images[tr], train.labels[tr], train.classes),
            Images(test.images[te], test.labels[te], test.classes))


def pipeline(bug_name):
    """build() of a pipeline drill: the planted bug from recipe_kit.bugs on a 3000-image sample."""
    bug = bugs.BY_NAME[bug_name]

    def build():
        train, _ = _sample()
        return bug.build(train.images, train.labels)
    return build


def test_labels_shifted():
    train, test = _sample()
    return train, Images(test.images, (test.labels + 1) % 10, test.classes)   # BUG: off-by-one label map


def test_copied_from_train():
    train, test = _sample()
    images = test.images.clone()
    images[:200] = torch.roll(train.images[:200], shifts=1, dims=3)          # BUG: shifted train copies
    labels = test.labels.clone()
    labels[:200] = train.labels[:200]
    return train, Images(images, labels, test.classes)


def train_labels_shuffled():
    train, test = _sample()
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    return Images(train.images, train.labels[perm], train.classes), test      # BUG: join on the wrong key


def test_scaled_differently():
    train, test = _sample()
    return (train.images.float() / 255, train.labels), (test.images.float(), test.labels)  # BUG: 0..1 vs 0..255


def class_missing_from_train():
    train, test = _sample()
    keep = train.labels != 6                                                   # BUG: a filter dropped 'Shirt'
    return Images(train.images[keep], train.labels[keep], train.classes), test


def labels_noisy():
    train, test = _sample()
    g = torch.Generator().manual_seed(2)
    flip = torch.rand(len(train), generator=g) < 0.25                          # BUG: 25% of labels random
    labels = torch.where(flip, torch.randint(0, 10, (len(train),), generator=g), train.labels)
    return Images(train.images, labels, train.classes), test


def _drill(number, kind, bug, check, symptom, explanation, build, budget="fast"):
    return Drill(number, kind, symptom, bug, check, explanation, build, budget)


DRILLS = [
    _drill(1, "pipeline", "missing_zero_grad", "zero_grad",
           "The training loss drops for a few dozen steps, then swings wildly; a lower learning rate only "
           "delays it.",
           "Without optimizer.zero_grad(), backward() adds each new gradient to all the previous ones, so every "
           "step applies a growing sum. Zero the gradients at the start of every step.", pipeline("missing_zero_grad")),
    _drill(2, "pipeline", "softmax_before_cross_entropy", "output_activation",
           "The model trains, but even on training data the loss plateaus far above zero and predictions are "
           "never confident.",
           "CrossEntropyLoss applies log_softmax itself; a Softmax layer before it squashes the logits into "
           "[0, 1], so the loss can never get small. Return raw logits.", pipeline("softmax_before_cross_entropy")),
    _drill(3, "pipeline", "param_missing_from_optimizer", "optimizer_params",
           "After swapping in a new classifier head, the loss barely moves and accuracy stays near a "
           "linear model's, whatever the learning rate.",
           "The optimizer was built from a subset of the parameters, so the head keeps its random init. Build "
           "the optimizer from model.parameters() after the model is final.", pipeline("param_missing_from_optimizer")),
    _drill(4, "pipeline", "unnormalized_inputs", "input_scale",
           "Since the images are read from PNG files directly, the loss at the first step is huge and "
           "training is unstable.",
           "Raw 0..255 pixels are ~100x larger than the standardized inputs the init assumes, so logits start "
           "huge. Standardize with the train mean and std.", pipeline("unnormalized_inputs")),
    _drill(5, "pipeline", "labels_shifted", "beats_baseline",
           "The model overfits a single batch perfectly, but validation accuracy stays at chance level.",
           "Each image carries its neighbour's label: a batch can be memorized, but nothing generalizes. "
           "Look at the batch just before the net and fix the indexing that pairs images with labels.",
           pipeline("labels_shifted"), budget="full"),
    _drill(6, "pipeline", "sorted_unshuffled_loader", "batch_order",
           "The loss curve is a saw-tooth that repeats every epoch, and the model favours whichever class it "
           "saw last.",
           "The data is stored grouped by class and the loader does not shuffle, so each batch holds one class "
           "and each step drags the model toward it. Shuffle the training loader.",
           pipeline("sorted_unshuffled_loader")),
    _drill(7, "pipeline", "batch_mixing_view", "batch_independence",
           "A hand-written flatten was added; accuracy changes with the batch size used at evaluation.",
           "A reshape that puts the batch dimension in the wrong place mixes pixels of different samples. Use "
           "x.flatten(1) or x.view(x.shape[0], -1).", pipeline("batch_mixing_view")),
    _drill(8, "pipeline", "forward_ignores_input", "input_dependence",
           "The loss falls to about 2.30 and stays there; every image gets the same prediction.",
           "The forward pass never uses its input (multiplied by zero, overwritten, detached), so the model can "
           "only learn the class prior. Trace x through forward.", pipeline("forward_ignores_input")),
    _drill(9, "pipeline", "dead_relus", "dead_activations",
           "The loss does not move at all from the first step; the first layer's gradients are exactly zero.",
           "A large negative bias makes every ReLU output 0, and a dead ReLU passes no gradient. Use the default "
           "init (or a small positive bias).", pipeline("dead_relus")),
    _drill(10, "pipeline", "eval_mode_in_step", "train_mode",
           "Dropout was added to fight overfitting, and nothing changed at all: the curves are identical.",
           "model.eval() inside the training step turns dropout off (and freezes BatchNorm statistics). Call "
           "model.train() before training and model.eval() only for evaluation.", pipeline("eval_mode_in_step")),
    _drill(11, "pipeline", "lr_far_too_high", "step_updates",
           "The loss is NaN from the second step on.",
           "A learning rate of 1e3 (a typo for 1e-3) throws the weights far away in one step. Lower it; an LR "
           "range test finds a sane value.", pipeline("lr_far_too_high")),
    _drill(12, "pipeline", "detached_features", "param_grads",
           "Only the last layer seems to learn; accuracy is stuck at what a linear model on random features "
           "gets.",
           "A .detach() between the feature extractor and the head stops gradients, so the features never "
           "train. Remove it (detach only what must not train).", pipeline("detached_features")),
    _drill(13, "data", "test_labels_shifted", "label_map",
           "Validation accuracy on a held-out part of train is 85%; on the official test set it is 3%.",
           "The test labels use another numbering (here: shifted by one). Map test labels through the train "
           "class list and check a confusion matrix between the splits.", test_labels_shifted),
    _drill(14, "data", "test_copied_from_train", "near_leakage",
           "A small CNN scores far higher on the test set than on validation; the team wants to publish.",
           "A third of the test images are train images shifted by one pixel: test accuracy measures memory. "
           "Deduplicate across splits with a shift-tolerant comparison.", test_copied_from_train, budget="full"),
    _drill(15, "data", "train_labels_shuffled", "label_signal",
           "No architecture beats chance on validation, yet training accuracy slowly climbs.",
           "The labels were joined to the images by the wrong key, so they carry no information about them. "
           "Check that nearest neighbours agree on labels; fix the join.", train_labels_shuffled),
    _drill(16, "data", "test_scaled_differently", "value_range",
           "Validation accuracy is good, test accuracy is near chance; the test set came from another export "
           "script.",
           "Train is on the 0..1 scale and test on 0..255: the model sees test inputs 255x too bright. Apply "
           "one preprocessing function to every split.", test_scaled_differently),
    _drill(17, "data", "class_missing_from_train", "class_balance",
           "One class is never predicted on the test set.",
           "A filtering step dropped every training image of that class, so the model cannot know it exists. "
           "Compare class counts per split before training.", class_missing_from_train),
    _drill(18, "data", "labels_noisy", "label_issues",
           "Training accuracy plateaus around 75% even with a large model, and the confusion matrix looks "
           "uniformly smeared.",
           "A quarter of the labels are random. Find them with confident learning (cleanlab), fix or drop them, "
           "and measure test accuracy on clean labels.", labels_noisy, budget="full"),
]

BUG_CLASSES = sorted({d.bug for d in DRILLS})


def get(number):
    """Drill by its number (1-based, as printed)."""
    for drill in DRILLS:
        if drill.number == number:
            return drill
    raise ValueError(f"no drill {number}: drills are numbered 1..{len(DRILLS)}.")
