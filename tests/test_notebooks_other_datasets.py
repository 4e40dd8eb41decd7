"""Every notebook runs unchanged on another dataset: a small CIFAR-10-format folder written here.

The default dataset (Fashion-MNIST, 1 channel, 28x28) is run by nbval with its outputs compared;
this test proves the parameters cell is the only thing to change for 3 channels at 32x32.
The images are learnable (each class a coloured square at its own place, plus noise), so the
exercise check cells that assert a model learned something still mean something here.
"""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recipe_kit import lineage

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_become_one_with_the_data.ipynb", "02_skeleton_and_baselines.ipynb", "03_overfit.ipynb",
             "04_regularize.ipynb", "05_tune.ipynb", "06_squeeze.ipynb"]


def learnable_cifar_like(n, rng):
    """(n, 3072) uint8 rows in CIFAR's layout (R plane, G plane, B plane) and labels 0..9."""
    labels = rng.integers(0, 10, n)
    images = rng.normal(60, 25, (n, 3, 32, 32))
    for i, label in enumerate(labels):
        top, left = 4 + 6 * (label // 5) * 2, 2 + 6 * (label % 5)
        images[i, label % 3, top:top + 8, left:left + 6] += 150      # class = colour and position
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-cifar") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 240) for i in range(1, 6)] + [("test_batch", 300)]:
        rows, labels = learnable_cifar_like(n, rng)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels}, f)
    return folder.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One runs/ folder for the module: notebook 6 ensembles what notebooks 3-5 saved there."""
    return tmp_path_factory.mktemp("runs")


def printed(notebook_path):
    """Everything the executed notebook's code cells printed to stdout."""
    cells = json.loads(Path(notebook_path).read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"]
                   if o["output_type"] == "stream" and o["name"] == "stdout")


def first_conv_in_channels(checkpoint_path):
    state = torch.load(checkpoint_path, map_location="cpu")["state_dict"]
    return state["0.weight"].shape[1]                                  # Conv2d weight: (out, in, k, k)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_on_a_cifar10_format_folder(notebook, cifar_folder, runs, tmp_path):
    out = tmp_path / notebook
    parameters = {"DATASET": str(cifar_folder)}
    if notebook[:2] in ("03", "04", "05", "06"):
        parameters["MODELS_DIR"] = str(runs / "models")
    if notebook[:2] in ("02", "03", "04", "05", "06"):                # decision records: each reads the last
        parameters["RUNS_DIR"] = str(runs)
    papermill.execute_notebook(str(ROOT / "notebooks" / notebook), str(out), cwd=str(ROOT / "notebooks"),
                               kernel_name="python3", parameters=parameters, progress_bar=False)
    assert '"output_type": "error"' not in out.read_text()
    text = printed(out)
    assert "Exercise 1: correct" in text                               # the check cells ran to the end
    saved = sorted((runs / "models").glob(f"{notebook[:2]}_*.pt"))
    if notebook[:2] in ("03", "04", "05"):                            # they save a model for notebook 6
        assert len(saved) == 1 and first_conv_in_channels(saved[0]) == 3   # built for 3-channel input
    else:                                                              # it printed the 3-channel shape
        assert "(1200, 3, 32, 32)" in text or "(960, 3, 32, 32)" in text or "of (3, 32, 32)" in text
    if notebook[:2] in ("02", "03", "04", "05"):                      # it recorded its decision, for this dataset
        assert lineage.record_path(int(notebook[:2]), str(cifar_folder), runs).exists()
    if notebook[:2] in ("04", "05", "06"):                            # it started from the records of this run
        assert "using the committed record" not in text
    if notebook.startswith("06"):
        assert "is missing" not in text and "members: stage 3, stage 4, stage 5" in text   # the saved models
