"""Decision records (recipe_kit/lineage.py): what one notebook decides, the next one reads."""
import json

import pytest
import torch

import recipe_kit as rk
from recipe_kit import lineage


def test_a_saved_record_is_read_back_with_its_evidence(tmp_path):
    path = lineage.save(3, "fashion-mnist", tmp_path, {"architecture": "vgg_cnn", "width": 16, "stages": 2},
                        {"val_gain": 0.004, "val_se": 0.002})
    assert path == tmp_path / "decisions" / "03_fashion-mnist.json"
    record = lineage.load(3, "fashion-mnist", tmp_path)
    assert record["decision"]["architecture"] == "vgg_cnn" and record["evidence"]["val_se"] == 0.002
    assert "vgg_cnn" in lineage.describe(record)
    assert json.loads(path.read_text())["stage"] == 3          # human-readable plain JSON


def test_a_folder_dataset_gets_a_file_name_without_slashes(tmp_path):
    path = lineage.save(4, "/data/my/images", tmp_path, {"augment": None}, {})
    assert path.parent == tmp_path / "decisions" and "/" not in path.name


def test_no_record_anywhere_says_which_notebook_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(lineage, "COMMITTED", tmp_path / "nothing-committed")
    with pytest.raises(FileNotFoundError, match="run notebook 5 first"):
        lineage.load(5, "mnist", tmp_path)


def test_run_alone_falls_back_to_the_committed_reference_record(tmp_path, monkeypatch, capsys):
    committed = tmp_path / "committed"
    monkeypatch.setattr(lineage, "COMMITTED", committed)
    lineage.save(3, "fashion-mnist", tmp_path / "elsewhere", {"architecture": "course_cnn", "width": 32}, {})
    committed.mkdir()
    (tmp_path / "elsewhere" / "decisions" / "03_fashion-mnist.json").rename(committed / "03_fashion-mnist.json")
    record = lineage.load(3, "cifar10", tmp_path / "runs")       # nothing in runs/: the committed record
    assert record["decision"]["architecture"] == "course_cnn"
    assert "using the committed record" in capsys.readouterr().out


def test_unserializable_evidence_fails_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError):
        lineage.save(3, "mnist", tmp_path, {"lr": 1e-3}, {"model": torch.nn.Linear(2, 2)})
    assert not (tmp_path / "decisions").exists()


def test_build_makes_the_named_network_and_dropout_keeps_the_initial_weights():
    vgg = lineage.build({"architecture": "vgg_cnn", "width": 4, "stages": 2}, 1, 10, 28)
    assert vgg(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    torch.manual_seed(0)
    plain = rk.vgg_cnn(1, 10, width=4)
    torch.manual_seed(0)
    dropped = lineage.build({"architecture": "vgg_cnn", "width": 4, "stages": 2, "dropout": 0.3}, 1, 10, 28)
    assert sum(isinstance(m, torch.nn.Dropout) for m in dropped) == 2
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), dropped.parameters()))
    cnn = lineage.build({"architecture": "course_cnn", "width": 8}, 3, 10, 32)
    assert cnn(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="expected 'vgg_cnn' or 'course_cnn'"):
        lineage.build({"architecture": "resnet", "width": 8}, 1, 10, 28)


@pytest.mark.parametrize("total_steps", [3, 4, 5, 8, 196])
def test_one_cycle_schedule_runs_on_short_runs(total_steps):
    """One epoch of a small dataset can be 4 steps: at pct_start 0.25 OneCycleLR's warm-up would span
    one step and divide by zero; the warm-up is stretched to 2 steps instead, long runs are unchanged."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = lineage.schedule(optimizer, {"schedule": "one-cycle", "lr": 0.1}, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.1) and rates[0] < 0.1 and rates[-1] < 0.01
    assert scheduler.total_steps == total_steps and (total_steps < 8 or scheduler._schedule_phases[0]["end_step"] == 0.25 * total_steps - 1)


def test_one_cycle_schedule_refuses_too_few_steps():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="at least 3 steps"):
        lineage.schedule(optimizer, {"schedule": "one-cycle", "lr": 0.1}, 2)
