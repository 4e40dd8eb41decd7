"""Bad input that used to reach torch (issue 17): each gets a message naming the argument and the fix."""
import pytest
import torch
import torch.nn as nn

from recipe_kit.audit import audit_data
from recipe_kit.bugs import mlp
from recipe_kit.preflight import BadInput, preflight

gen = torch.Generator().manual_seed(0)
X = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=gen)
Y = torch.arange(60) % 10


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


@pytest.mark.parametrize("make", [lambda b: iter(b), lambda b: (batch for batch in b)], ids=["iter", "generator"])
def test_a_one_shot_iterator_is_refused_before_it_is_used_up(make):
    batches = [(X[i:i + 20].float() / 255, Y[i:i + 20]) for i in range(0, 60, 20)]
    train = make(batches)
    with pytest.raises(BadInput, match=r"train is a one-shot iterator .*Pass the loader itself"):
        preflight(mlp(), train, nn.CrossEntropyLoss(), adam, budget="fast")
    assert len(list(train)) == 3, "the caller's batches are all still there"


@pytest.mark.parametrize("train,test,arg", [((X[:1], Y[:1]), None, "train"), ((X, Y), (X[:1], Y[:1]), "test")])
def test_audit_with_one_sample_names_the_split(train, test, arg):
    with pytest.raises(ValueError, match=rf"{arg} has 1 sample: .*at least 2"):
        audit_data(train, test)


def test_a_single_class_dataset_is_a_warning():
    report = audit_data((X, torch.zeros(60, dtype=torch.long)), budget="fast")
    assert report.ok and not report.crashed
    (warning,) = [p for p in report.warnings if p.check == "class_balance"]
    assert "all 60 samples are class '0'" in warning.message
    pre = preflight(mlp(), (X.float() / 255, torch.full((60,), 3)), nn.CrossEntropyLoss(), adam, budget="fast")
    assert any(p.check == "labels" and "class 3" in p.message for p in pre.warnings), str(pre)


@pytest.mark.parametrize("train,test,classes,match", [
    ((X, Y), None, 5, r"train labels go up to 9 but classes has 5 entries: pass classes="),
    ((X, Y % 5), (X, Y), ("a", "b", "c", "d", "e"), r"test labels go up to 9 but classes has 5 entries"),
])
def test_labels_beyond_the_classes_given(train, test, classes, match):
    with pytest.raises(ValueError, match=match):
        audit_data(train, test, classes)
