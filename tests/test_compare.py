"""rk.paired_gain and rk.right_on: the comparison every decision of the course rests on."""
import math

import pytest
import torch
import torch.nn as nn

import recipe_kit as rk


def test_paired_gain_counts_only_the_images_the_two_disagree_on():
    old = torch.tensor([True, True, False, False, True, False, True, True])
    new = torch.tensor([True, True, True, False, True, True, True, False])   # 2 newly right, 1 newly wrong
    gain, se = rk.paired_gain(new, old)
    assert gain == pytest.approx(1 / 8) and se == pytest.approx(math.sqrt(3) / 8)
    assert rk.paired_gain(old, new) == (pytest.approx(-1 / 8), pytest.approx(math.sqrt(3) / 8))   # antisymmetric


def test_identical_models_gain_nothing_with_zero_uncertainty():
    right = torch.rand(1000) > 0.3
    assert rk.paired_gain(right, right.clone()) == (0.0, 0.0)


def test_the_paired_se_is_smaller_than_the_unpaired_one_when_models_mostly_agree():
    torch.manual_seed(0)
    old = torch.rand(10000) < 0.9
    new = old.clone()
    flip = torch.randperm(10000)[:300]
    new[flip] = ~new[flip]
    _, se = rk.paired_gain(new, old)
    unpaired = math.sqrt(2 * 0.9 * 0.1 / 10000)
    assert se == pytest.approx(math.sqrt(300) / 10000) and se < unpaired / 2


def test_paired_gain_rejects_scores_of_different_images():
    with pytest.raises(ValueError, match="same loader"):
        rk.paired_gain(torch.ones(5, dtype=torch.bool), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="same N > 0"):
        rk.paired_gain(torch.ones(0, dtype=torch.bool), torch.ones(0, dtype=torch.bool))


def test_right_on_scores_each_image_of_a_loader_in_order():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (20,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    loader = rk.BatchLoader(images, labels, 6, shuffle=False, mean=[100.0], std=[50.0])
    right = rk.right_on(model, loader, labels)
    x = torch.cat([x for x, _ in loader])
    assert right.dtype == torch.bool and torch.equal(right, model(x).argmax(1) == labels)


def test_lineage_builds_the_optimizer_and_schedule_a_setting_names():
    params = [nn.Parameter(torch.zeros(3))]
    sgd = rk.lineage.optimizer(params, {"optimizer": "SGD", "lr": 0.1, "weight_decay": 5e-4, "schedule": "one-cycle"})
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    cycle = rk.lineage.schedule(sgd, {"schedule": "one-cycle", "lr": 0.1}, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        cycle.step()
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and lrs.index(max(lrs)) in (24, 25) and lrs[-1] < 1e-4
    adam = rk.lineage.optimizer(params, {"optimizer": "Adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant"})
    assert isinstance(adam, torch.optim.AdamW) and rk.lineage.schedule(adam, {"schedule": "constant"}, 10) is None
    with pytest.raises(ValueError, match="expected 'SGD' or 'Adam'"):
        rk.lineage.optimizer(params, {"optimizer": "RMSprop", "lr": 1e-3, "weight_decay": 0.0})
    with pytest.raises(ValueError, match="one-cycle"):
        rk.lineage.schedule(adam, {"schedule": "cosine"}, 10)
