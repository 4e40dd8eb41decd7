"""Time each course notebook top to bottom, as a learner's "Restart & Run All" would, against its budget.

    .venv/bin/python benchmarks/notebooks.py [notebooks/01_*.ipynb ...]

Budgets (2 CPU cores): notebooks 1-5 at most 4 minutes each, notebook 6 at most 6; all six under 20.
Executes copies in a temporary folder; the committed notebooks are not modified. Notebook 6
ensembles the models notebooks 3-5 save in runs/models/: run alone, it is timed with the ones
already in this checkout's runs/models/ (as after a learner's run-through), else it trains stand-ins.
"""
import shutil
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


def run(path, workdir):
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return time.perf_counter() - start


def main(paths):
    paths = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    total, over = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", workdir)
        if (ROOT / "runs" / "models").is_dir():            # what notebooks 3-5 saved, for notebook 6 run alone
            shutil.copytree(ROOT / "runs" / "models", Path(tmp) / "runs" / "models")
        for path in paths:
            seconds = run(path, workdir)
            budget = BUDGET_S.get(path.name[:2], DEFAULT_BUDGET_S)
            total += seconds
            flag = "ok" if seconds <= budget else "OVER BUDGET"
            over += [path.name] if seconds > budget else []
            print(f"{path.name:45s} {seconds:6.1f} s  (budget {budget} s, {seconds / budget:4.0%})  {flag}", flush=True)
    print(f"{'total':45s} {total:6.1f} s  (budget {TOTAL_BUDGET_S} s, {total / TOTAL_BUDGET_S:4.0%})")
    return 1 if over or total > TOTAL_BUDGET_S else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
