"""Time each course notebook top to bottom, as a learner's "Restart & Run All" would, against its budget.

    .venv/bin/python benchmarks/notebooks.py [--avx2] [--write] [notebooks/01_*.ipynb ...]

Budgets (2 CPU cores): notebooks 1-5 at most 4 minutes each, notebook 6 at most 6; all six under 20,
on CPUs with fast bfloat16 and on AVX2-only CPUs alike. --avx2 runs the kernels as on an AVX2-only
CPU (recipe_kit.cpu.AVX2_ENV: no AVX-512, no AMX, so bfloat16 is off), which is how to measure the
slow path on a bigger machine. The first line printed says which path ran.
--write saves each executed notebook back into notebooks/ (the committed outputs), recording in its
metadata the CPU path that made them (tests/test_portability.py checks the record is there).
Executes copies in a temporary folder; the committed notebooks are not modified. Each notebook
starts from what the earlier ones saved in runs/ (models, and decision records: recipe_kit/lineage.py):
run alone, it is timed with this checkout's runs/ (as after a learner's run-through). With --write,
what the run saved goes back into runs/, and its decision records also into recipe_kit/decisions/
(the committed records a notebook falls back to when run alone).
Machine speed drifts (10-20% between runs of this shared machine), so beside each notebook the script
times a fixed reference workload (reference_speed: rk.vgg_cnn training steps in float32 channels-last,
2 threads, in a fresh process with the notebooks' environment) before and after it, and also reports
the notebook's time scaled to REFERENCE_S, the reference speed of the machine the budgets are set
for. A notebook is over budget when its scaled time is; the raw time is printed beside it.
--write also makes the saved notebook light (see lighten): a widget output whose static picture or
text serves keeps only that, and no widget state is saved for it. --lighten NOTEBOOK... does just
that to committed notebooks, without running them.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = {"06": 6 * 60}  # notebook number prefix -> seconds; the rest get DEFAULT_BUDGET_S
DEFAULT_BUDGET_S = 4 * 60
TOTAL_BUDGET_S = 20 * 60
# Seconds per 50 000 images of the reference workload on the budgets' machine: this Xeon capped to AVX2
# measured 21.9 s when the budgets were set, an AVX2-only AMD EPYC 21.4 s (docs/notebook6_paths.md).
REFERENCE_S = 21.9
REFERENCE_CODE = """
import time, torch, torch.nn as nn, recipe_kit as rk
torch.set_num_threads(2); torch.manual_seed(0)
model = rk.vgg_cnn(width=16).to(memory_format=torch.channels_last)
x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (256,))
opt, loss_fn, best = torch.optim.AdamW(model.parameters(), 1e-3), nn.CrossEntropyLoss(), float("inf")
for r in range(4):                       # round 0 warms up (oneDNN picks its kernels); best of the rest
    start = time.perf_counter()
    for _ in range(8):
        rk.train.default_train_step(model, (x, y), loss_fn, opt)
    best = best if r == 0 else min(best, (time.perf_counter() - start) / 8)
print(best * 50000 / 256)
"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BARE_WIDGET_REPR = re.compile(r"^\s*[A-Z]\w*\((children|value|layout|description|options|index|outputs)=")


def static_fallback(data):
    """What an output shows where no live widget runs: its PNG, or its text unless that is only the
    widget's class repr (ipywidgets' default, e.g. "VBox(children=(...))"); None when it has neither."""
    if "image/png" in data:
        return "image/png"
    text = "".join(data.get("text/plain", ""))
    return "text/plain" if text.strip() and not BARE_WIDGET_REPR.match(text) else None


def lighten(notebook):
    """Drop saved widget state where a static fallback serves; returns the bytes of state dropped.

    JupyterLab renders a widget output with the widget's own renderer whenever the output has the
    widget-view mimetype: without a live kernel that is the saved state, and without saved state it
    shows "Error displaying widget: model not found", not the PNG beside it. nbconvert (nbviewer,
    GitHub) skips a widget view whose model is not in the saved state and renders the next mimetype
    (PNG, then text), but rejects a notebook whose metadata.widgets lacks "state". So an output with
    a static fallback (recipe_kit's Panels carry a PNG and a summary, the quiz its questions as text)
    loses its widget-view entry and keeps the fallback; a run of the cell shows the live widget again.
    Outputs without a fallback keep their view and the saved state it needs (its model and the models
    it references); metadata.widgets is removed when nothing needs it.
    """
    widgets = notebook.metadata.get("widgets", {})
    state = widgets.get(WIDGET_STATE, {}).get("state", {})
    before = len(json.dumps(widgets)) if widgets else 0
    needed, todo = set(), []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            if static_fallback(data):
                del data[WIDGET_VIEW]
            else:
                todo.append(data[WIDGET_VIEW]["model_id"])
    while todo:  # the models a kept view references: children, layouts, styles
        model_id = todo.pop()
        if model_id in state and model_id not in needed:
            needed.add(model_id)
            todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model_id]))
    if needed:
        widgets[WIDGET_STATE]["state"] = {k: v for k, v in state.items() if k in needed}
    else:
        notebook.metadata.pop("widgets", None)
    after = len(json.dumps(notebook.metadata["widgets"])) if needed else 0
    return before - after


def run(path, workdir, write=False, made_on="", out=None):
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    seconds = time.perf_counter() - start
    if write or out:
        notebook.metadata["recipe_course"] = {"outputs_made_on": made_on}
        lighten(notebook)
        nbformat.write(notebook, path if write else Path(out) / path.name)
    return seconds


def reference_speed():
    """Seconds per 50 000 images of the reference workload, as the notebooks' kernels would run it now."""
    out = subprocess.run([sys.executable, "-c", REFERENCE_CODE], capture_output=True, text=True, check=True)
    return float(out.stdout)


def cpu_path():
    """recipe_kit.cpu.describe() as the notebooks' kernels will see it (they inherit this environment)."""
    code = "import torch; torch.set_num_threads(2); import recipe_kit; print(recipe_kit.cpu.describe())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def keep_what_was_saved(runs):
    """Copy the run's models and decision records into this checkout: runs/, and recipe_kit/decisions/."""
    for saved in ("models", "decisions"):
        if (runs / saved).is_dir():
            shutil.copytree(runs / saved, ROOT / "runs" / saved, dirs_exist_ok=True)
    (ROOT / "recipe_kit" / "decisions").mkdir(exist_ok=True)
    for record in sorted((runs / "decisions").glob("*.json")):
        shutil.copy(record, ROOT / "recipe_kit" / "decisions" / record.name)
        print("committed record:", Path("recipe_kit/decisions") / record.name)


def main(paths, avx2=False, write=False, out=None):
    if avx2:
        from recipe_kit.cpu import AVX2_ENV
        os.environ.update(AVX2_ENV)
    made_on = cpu_path()
    print("CPU path:", made_on, flush=True)
    paths = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    total, total_scaled, over = 0.0, 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", workdir)
        for saved in ("models", "decisions"):              # what earlier notebooks saved, for one run alone
            if (ROOT / "runs" / saved).is_dir():
                shutil.copytree(ROOT / "runs" / saved, Path(tmp) / "runs" / saved)
        try:
            speed = reference_speed()
            for path in paths:
                seconds = run(path, workdir, write, made_on, out)
                speed_after = reference_speed()
                reference = (speed + speed_after) / 2         # the machine's speed around this notebook
                scaled = seconds * REFERENCE_S / reference
                budget = BUDGET_S.get(path.name[:2], DEFAULT_BUDGET_S)
                total += seconds
                total_scaled += scaled
                flag = "ok" if scaled <= budget else "OVER BUDGET"
                over += [path.name] if scaled > budget else []
                print(f"{path.name:32s} {seconds:6.1f} s, reference {reference:4.1f} s -> {scaled:6.1f} s at "
                      f"{REFERENCE_S} s  (budget {budget} s, {scaled / budget:4.0%})  {flag}", flush=True)
                speed = speed_after
        finally:                                            # a notebook that fails keeps what the others saved
            if write:
                keep_what_was_saved(Path(tmp) / "runs")
    print(f"{'total':32s} {total:6.1f} s, {' ' * 16} -> {total_scaled:6.1f} s at {REFERENCE_S} s  "
          f"(budget {TOTAL_BUDGET_S} s, {total_scaled / TOTAL_BUDGET_S:4.0%})")
    return 1 if over or total_scaled > TOTAL_BUDGET_S else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="default: all six, in order")
    parser.add_argument("--avx2", action="store_true", help="run as on an AVX2-only CPU (bfloat16 off)")
    parser.add_argument("--write", action="store_true", help="save the executed notebooks into notebooks/")
    parser.add_argument("--out", help="save the executed notebooks into this folder instead (e.g. another CPU path's outputs)")
    parser.add_argument("--lighten", action="store_true",
                        help="only drop saved widget state where a static fallback serves (no run)")
    args = parser.parse_args()
    if args.lighten:
        for path in args.notebooks:
            notebook = nbformat.read(path, as_version=4)
            dropped = lighten(notebook)
            nbformat.write(notebook, path)
            print(f"{path}: {dropped / 1024:.0f} KB of widget state dropped, now {Path(path).stat().st_size / 1024:.0f} KB")
        sys.exit(0)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    sys.exit(main(args.notebooks, avx2=args.avx2, write=args.write, out=args.out))
