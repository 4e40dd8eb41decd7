"""preflight: every planted bug is flagged as an error by the check meant for it, correct pipelines get
no error, the caller's model/data/random states are untouched, bad input gets a clear ValueError.

Runs on real Fashion-MNIST subsets with small models, one thread (conftest.py).
"""
import hashlib
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import recipe_kit as rk
from recipe_kit.bugs import CATALOG, mlp, small_cnn, standard_step, standardize
from recipe_kit.preflight import CHECKS, loss_floor, loss_kind, preflight
from recipe_kit.report import ChecksFailed

N = 2000   # Fashion-MNIST training images used per pipeline


@pytest.fixture(scope="module")
def fmnist():
    train = rk.load_dataset("fashion-mnist", "train")
    return train.images[:N], train.labels[:N]


def adam(lr=1e-3):
    return lambda params: torch.optim.Adam(params, lr=lr)


# ----------------------------------------------------------------------------- (a) planted bugs

@pytest.mark.parametrize("bug", CATALOG, ids=[b.name for b in CATALOG])
def test_planted_bug_is_an_error_of_its_check(bug, fmnist):
    report = preflight(*bug.build(*fmnist), budget=bug.budget)
    mine = [p for p in report.problems if p.check == bug.check and p.severity == bug.severity]
    assert mine, f"{bug.name} not flagged by {bug.check} as an {bug.severity}:\n{report}"
    assert bug.severity == "warning" or not report.ok
    assert any(ch.isdigit() for ch in mine[0].message), "messages give numbers"
    assert "stage" in mine[0].hint.lower(), "hints say which recipe stage to return to"


def test_catalog_covers_every_check_with_distinct_bug_classes():
    names = [b.name for b in CATALOG]
    assert len(names) >= 14 and len(set(names)) == len(names)
    assert all(b.check in CHECKS and b.budget in ("fast", "full") and b.description for b in CATALOG)
    assert all(b.severity in ("error", "warning") for b in CATALOG)
    assert {b.check for b in CATALOG} == set(CHECKS), "every check is proven by at least one planted bug"


def test_fast_budget_catches_the_fast_bugs_without_long_checks(fmnist):
    bug = next(b for b in CATALOG if b.name == "missing_zero_grad")
    report = preflight(*bug.build(*fmnist), budget="fast")
    assert "zero_grad" in {p.check for p in report.errors}
    skipped = dict(report.skipped)
    assert set(skipped) >= {"overfit_batch", "beats_baseline"} and "budget" in skipped["overfit_batch"]
    assert "overfit_batch" not in report.checks_run


def test_lr_that_produces_nan_is_also_caught_by_the_long_run(fmnist):
    bug = next(b for b in CATALOG if b.name == "lr_far_too_high")
    report = preflight(*bug.build(*fmnist), budget="full")
    assert {"step_updates", "overfit_batch"} <= {p.check for p in report.errors}


def test_problems_point_at_the_culprit(fmnist):
    def where(name, check):
        bug = next(b for b in CATALOG if b.name == name)
        report = preflight(*bug.build(*fmnist), budget="fast")
        return next(p.where for p in report.errors if p.check == check)

    assert where("param_missing_from_optimizer", "optimizer_params") == "4.weight, 4.bias"
    assert where("detached_features", "param_grads") == "features.1"
    assert where("dead_relus", "dead_activations") == "2"          # the ReLU of mlp()
    assert "fc1" in where("batch_mixing_view", "batch_independence")  # the reshape right before fc1
    assert where("softmax_before_cross_entropy", "output_activation") == "1"
    assert where("unnormalized_inputs", "input_scale") == "1"      # the first Linear


# ----------------------------------------------------------------------------- (b) correct pipelines

class Residual(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x):
        h = self.stem(x)
        return self.head(torch.relu(h + self.block(h)))


def course_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def clipped_step(model, batch, loss_fn, optimizer):
    x, y = batch
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return loss.detach()


def tensors(images, labels):
    return standardize(images), labels


CORRECT = {
    "mlp": lambda im, lb: (mlp(), tensors(im, lb), nn.CrossEntropyLoss(), adam(), None),
    "course_cnn_batchnorm": lambda im, lb: (course_cnn(), tensors(im, lb), nn.CrossEntropyLoss(), adam(3e-4), None),
    "dropout": lambda im, lb: (mlp(128, dropout=0.5), tensors(im, lb), nn.CrossEntropyLoss(), adam(), None),
    "layernorm_gelu": lambda im, lb: (nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.LayerNorm(64), nn.GELU(),
                                                    nn.Linear(64, 10)), tensors(im, lb), nn.CrossEntropyLoss(),
                                      adam(), None),
    "residual_block": lambda im, lb: (Residual(), tensors(im, lb), nn.CrossEntropyLoss(), adam(), None),
    "label_smoothing": lambda im, lb: (mlp(), tensors(im, lb), nn.CrossEntropyLoss(label_smoothing=0.1), adam(),
                                       None),
    "sgd_momentum": lambda im, lb: (small_cnn(), tensors(im, lb), nn.CrossEntropyLoss(),
                                    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), None),
    "adamw_custom_step_clipping": lambda im, lb: (mlp(), tensors(im, lb), F.cross_entropy,
                                                  lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05),
                                                  clipped_step),
    "dataloader_shuffled": lambda im, lb: (mlp(), DataLoader(TensorDataset(*tensors(im, lb)), batch_size=64,
                                                             shuffle=True), nn.CrossEntropyLoss(), adam(),
                                           standard_step),
    "batchloader": lambda im, lb: (small_cnn(), rk.BatchLoader(im, lb, batch_size=128, mean=(0.2860,),
                                                               std=(0.3530,)), nn.CrossEntropyLoss(), adam(), None),
    "log_softmax_nll": lambda im, lb: (nn.Sequential(mlp(), nn.LogSoftmax(dim=1)), tensors(im, lb), nn.NLLLoss(),
                                       adam(), None),
    "plain_sgd_learns_slowly": lambda im, lb: (mlp(), tensors(im, lb), nn.CrossEntropyLoss(),
                                               lambda p: torch.optim.SGD(p, lr=0.01), None),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_pipeline_has_no_error(name, fmnist):
    report = preflight(*CORRECT[name](*fmnist), budget="full")
    assert report.ok, str(report)
    ran = set(report.checks_run)
    assert {"overfit_batch", "beats_baseline", "zero_grad", "batch_independence"} <= ran, str(report)
    if name in ("dataloader_shuffled", "batchloader"):
        assert "batch_order" in report.passed


def test_imbalanced_classes_are_a_warning_with_the_log_prior_hint(fmnist):
    images, labels = fmnist
    keep = torch.cat([(labels == 0).nonzero()[:, 0], (labels != 0).nonzero()[:150, 0]])
    report = preflight(mlp(), tensors(images[keep], labels[keep]), nn.CrossEntropyLoss(), adam(), budget="fast")
    assert report.ok
    init = [p for p in report.warnings if p.check == "loss_at_init"]
    assert init and "log(class prior)" in init[0].hint
    assert init[0].details["prior"] < init[0].details["uniform"] - 0.3


# ----------------------------------------------------------------------------- the caller's state

def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rng_digest():
    py = repr(random.getstate()).encode()
    npy = repr(np.random.get_state()[1].tolist()).encode() + str(np.random.get_state()[2]).encode()
    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return hashlib.sha256(py + npy).hexdigest(), digest(*states)


def test_model_data_and_random_states_are_untouched(fmnist):
    images, labels = fmnist
    x, y = tensors(images, labels)
    model = small_cnn()
    model(x[:4]).sum().backward()                       # the caller may hold gradients too
    loader_gen = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=loader_gen)
    batch_loader = rk.BatchLoader(images, labels, batch_size=128, mean=(0.2860,), std=(0.3530,))
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                            # preflight runs on one thread, then gives 2 back
    try:
        preflight(mlp(), (x, y), nn.CrossEntropyLoss(), adam(), budget="fast")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for train in ((x, y), loader, batch_loader):
        before = (digest(*model.state_dict().values()), digest(*[p.grad for p in model.parameters()]),
                  digest(x, y, images, labels), rng_digest(), digest(loader_gen.get_state()), batch_loader.epoch,
                  [m.training for m in model.modules()])
        preflight(model, train, nn.CrossEntropyLoss(), adam(), budget="full" if train is loader else "fast")
        after = (digest(*model.state_dict().values()), digest(*[p.grad for p in model.parameters()]),
                 digest(x, y, images, labels), rng_digest(), digest(loader_gen.get_state()), batch_loader.epoch,
                 [m.training for m in model.modules()])
        assert after == before


def test_a_step_that_trains_a_global_model_is_caught_and_undone(fmnist):
    x, y = tensors(*fmnist)
    model = mlp()

    def global_step(m, batch, loss_fn, optimizer):        # BUG: uses `model`, not its argument m
        optimizer.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    make = lambda params: torch.optim.Adam(model.parameters(), lr=1e-3)  # BUG: ignores params
    before = digest(*model.state_dict().values())
    report = preflight(model, (x, y), nn.CrossEntropyLoss(), make, global_step, budget="fast")
    assert digest(*model.state_dict().values()) == before
    assert {"optimizer_params"} <= {p.check for p in report.errors}
    skipped = dict(report.skipped)
    assert "another model" in skipped["step_updates"] and "make_optimizer" in skipped["zero_grad"]

    report = preflight(model, (x, y), nn.CrossEntropyLoss(), adam(), global_step, budget="fast")
    assert digest(*model.state_dict().values()) == before
    assert {"caller_untouched", "param_grads"} <= {p.check for p in report.errors}


# ----------------------------------------------------------------------------- script/CI use

def test_raise_for_errors_skip_and_budget(fmnist):
    bug = next(b for b in CATALOG if b.name == "softmax_before_cross_entropy")
    with pytest.raises(ChecksFailed, match="output_activation"):
        preflight(*bug.build(*fmnist), budget="fast").raise_for_errors()
    report = preflight(*bug.build(*fmnist), budget="fast", skip=("output_activation",))
    assert ("output_activation", "in skip=") in report.skipped
    assert "output_activation" not in report.checks_run
    ok = preflight(*CORRECT["mlp"](*fmnist), budget="fast")
    assert ok.raise_for_errors() is ok
    assert set(ok.details["seconds"]) <= set(CHECKS)


def test_unknown_skip_name_lists_valid_names(fmnist):
    with pytest.raises(ValueError, match="overfit_batch") as e:
        preflight(*CORRECT["mlp"](*fmnist), skip=("overfit",))
    assert "'overfit'" in str(e.value)
    with pytest.raises(ValueError, match="budget"):
        preflight(*CORRECT["mlp"](*fmnist), budget="slow")


def test_label_smoothing_floor_is_the_entropy_of_the_smoothed_target():
    C, eps = 10, 0.1
    pipe = {"loss_kind": loss_kind(nn.CrossEntropyLoss(label_smoothing=eps), C, "cpu"), "num_classes": C}
    target = torch.full((C,), eps / C)
    target[3] += 1 - eps
    best = F.cross_entropy(target.log()[None], torch.tensor([3]), label_smoothing=eps).item()
    assert loss_floor(pipe) == pytest.approx(best, rel=1e-5)
    assert loss_floor({"loss_kind": loss_kind(nn.CrossEntropyLoss(), C, "cpu"), "num_classes": C}) == 0


def test_loss_kind_is_found_by_calling_the_loss():
    assert loss_kind(F.cross_entropy, 10, "cpu")["name"] == "cross_entropy"
    smooth = loss_kind(lambda o, y: F.cross_entropy(o, y, label_smoothing=0.2), 10, "cpu")
    assert smooth["name"] == "cross_entropy" and smooth["smoothing"] == pytest.approx(0.2, abs=1e-4)
    assert loss_kind(nn.NLLLoss(), 10, "cpu")["name"] == "nll"
    assert loss_kind(lambda o, y: (o ** 2).mean(), 10, "cpu") is None


# ----------------------------------------------------------------------------- bad input

def no_torch_traceback(error):
    """The ValueError is raised by preflight itself, not chained onto an error from deep inside torch."""
    return error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("change, argument", [
    (dict(loss_fn=42), "loss_fn"),
    (dict(loss_fn=nn.CrossEntropyLoss), "loss_fn"),
    (dict(make_optimizer=None), "make_optimizer"),
    (dict(make_optimizer=lambda params: "adam"), "make_optimizer"),
    (dict(train_step="step"), "train_step"),
    (dict(num_classes=1), "num_classes"),
    (dict(model=lambda x: x), "model"),
])
def test_bad_arguments_name_the_argument(change, argument, fmnist):
    args = dict(zip(("model", "train", "loss_fn", "make_optimizer", "train_step"), CORRECT["mlp"](*fmnist)))
    args.update(change)
    with pytest.raises(ValueError, match=argument):
        preflight(**args, budget="fast")


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_bad_data_and_shapes_get_clear_messages(fmnist):
    x, y = tensors(*fmnist)
    loss, make = nn.CrossEntropyLoss(), adam()
    cases = [
        ((mlp(), (x[:0], y[:0])), "empty"),
        ((mlp(), (x[:10], y[:9])), "10 samples but y has 9"),
        ((mlp(), (x, y + 5)), "labels must be 0..9"),
        ((nn.Sequential(nn.Flatten(), nn.Linear(700, 10)), (x, y)), "'1'"),    # the Linear that raised
        ((mlp(), (fmnist[0], y)), "torch.uint8: convert them to float"),
        ((mlp(), (x.double(), y)), "float64"),
        ((mlp(), TensorDataset(x[:0], y[:0])), "empty"),
        ((mlp(), [x, y, y]), "(X, y)"),
    ]
    for (model, train), expected in cases:
        with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")) as e:
            preflight(model, train, loss, make, budget="fast")
        assert no_torch_traceback(e.value)
    with pytest.raises(ValueError, match="labels must be 0..9") as e:
        preflight(mlp(), (x, y + 2), loss, make, num_classes=10, budget="fast")
    with pytest.raises(ValueError, match="loss_fn raised") as e:
        preflight(mlp(), (x, y), nn.MSELoss(), make, budget="fast")
    assert no_torch_traceback(e.value)


def test_wrong_num_classes_is_an_error_problem(fmnist):
    report = preflight(*CORRECT["mlp"](*fmnist), num_classes=12, budget="fast")
    problem = next(p for p in report.errors if p.check == "output_activation")
    assert "outputs 10 scores" in problem.message and "num_classes=12" in problem.message


# ----------------------------------------------------------------------------- rendering

def test_report_renders_as_text_and_html(fmnist):
    bug = next(b for b in CATALOG if b.name == "unnormalized_inputs")
    report = preflight(*bug.build(*fmnist), budget="fast")
    text = str(report)
    assert text.startswith("preflight: ") and "✗ input_scale [1]:" in text and "hint:" in text
    assert all(name in text for name in report.passed)
    assert "overfit_batch skipped" in text
    page = report._repr_html_()
    assert page.count("<li") == len(report.problems) + len(report.passed) + len(report.skipped)
    assert "input_scale" in page and "<b>preflight</b>" in page
