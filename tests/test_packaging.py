"""recipe_kit as a package: its dependencies are its imports, `import recipe_kit` stays light, and a
regular (non-editable) install works from a folder outside the repository without writing next to it."""
import ast
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Imported indirectly: torch.utils.tensorboard needs the tensorboard package.
USED_THROUGH_ANOTHER = {"tensorboard"}


def declared(*extras):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]
    return {importlib.metadata.metadata(line.split(">")[0].split("<")[0].split("=")[0].strip())["Name"].lower()
            .replace("_", "-") for line in lines}


def imported_distributions():
    """The installed distributions whose modules recipe_kit's files import (at the top or inside functions)."""
    owners = importlib.metadata.packages_distributions()
    found = set()
    for path in (ROOT / "recipe_kit").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "recipe_kit":
                    continue
                assert top in owners, f"{path.name} imports {top}, which no installed distribution provides"
                found |= {d.lower().replace("_", "-") for d in owners[top]}
    return found


def test_declared_dependencies_are_exactly_what_recipe_kit_imports():
    runtime = declared()
    imported = imported_distributions()
    # recipe_kit.classroom, grading, sandbox and learner: run by ./course (open, student, grade)
    course_only = {"nbformat", "nbclient", "nbgrader", "jupyter-client", "jupyter-core"}
    assert imported - runtime - course_only == set(), "imported but not declared in [project] dependencies"
    assert course_only <= declared("course")
    assert runtime - imported - USED_THROUGH_ANOTHER == set(), "declared but never imported"


def test_import_recipe_kit_loads_no_heavy_optional_library():
    heavy = ["matplotlib", "seaborn", "pandas", "optuna", "sqlalchemy", "scipy", "ipywidgets", "cleanlab"]
    out = subprocess.run([sys.executable, "-c", f"import recipe_kit, sys; print([m for m in {heavy} if m in sys.modules])"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", "benchmarks/import_time.py shows what import recipe_kit costs"
    out = subprocess.run([sys.executable, "-c", "import recipe_kit as rk; print(rk.plots.__name__, "
                          "rk.search.__name__, 'plots' in dir(rk))"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["recipe_kit.plots", "recipe_kit.search", "True"]   # loaded on first use


OUTSIDE_SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    from pathlib import Path
    import torch, torch.nn as nn
    import recipe_kit as rk
    from recipe_kit import data, search

    home = Path(os.environ["HOME"])
    assert Path(rk.__file__).is_relative_to(sys.prefix), rk.__file__   # the installed copy, not the repo
    assert data.DATA_DIR == home / ".cache" / "recipe-kit" / "datasets", data.DATA_DIR
    assert search.RUNS_DIR == home / ".local" / "share" / "recipe-kit" / "runs", search.RUNS_DIR
    torch.manual_seed(0)
    x = torch.randint(0, 256, (200, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(200) % 4
    x[y == 1, :, :4] = 255                                          # some signal to learn
    train, test = rk.Images(x[:160], y[:160], ("a", "b", "c", "d")), rk.Images(x[160:], y[160:], ("a", "b", "c", "d"))
    print("audit:", rk.audit_data(train, test, budget="fast").ok is not None)
    model = rk.mlp(64, 4, hidden=(16,))
    xf = (x.float() / 255 - 0.5) / 0.3
    report = rk.preflight(model, (xf[:160], y[:160]), nn.CrossEntropyLoss(),
                          lambda p: torch.optim.Adam(p, lr=1e-2), budget="fast")
    print("preflight:", len(report.problems) >= 0)
    loader = rk.BatchLoader(train.images, train.labels, 32, mean=(0.5,), std=(0.3,))
    h = rk.fit(model, loader, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-2), 2, progress=False)
    print("fit:", h["stopped"])
    study = search.open_study("outside", heartbeat_s=None)            # the default storage, in RUNS_DIR
    study.optimize(search.toy_objective, n_trials=2)
    print("search:", search.default_storage())
    if (data.DEBIAN_DIR / "fashion-mnist").is_dir():              # a real dataset, cached in the user cache
        print("data:", len(rk.load_dataset("fashion-mnist", "test")))
''')


def files_under(folder):
    return {p.relative_to(folder) for p in Path(folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_non_editable_install_works_outside_the_repository(tmp_path):
    """A wheel of recipe_kit in a fresh venv that reuses this environment's packages (no torch download)."""
    src, wheels, venv, work, home = (tmp_path / n for n in ("src", "wheels", "venv", "work", "home"))
    for name in ("pyproject.toml", "README.md"):                 # build from a copy: no build/ in the repo
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((ROOT / name).read_bytes())
    (src / "recipe_kit").mkdir()
    for path in (ROOT / "recipe_kit").glob("*.py"):
        (src / "recipe_kit" / path.name).write_bytes(path.read_bytes())
    run = lambda *args, **kw: subprocess.run(args, check=True, capture_output=True, text=True, **kw)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", str(wheels), str(src))
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    child = venv / "bin" / "python"
    child_site = Path(run(str(child), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # this environment's packages (torch...) after the venv's own, as --system-site-packages would add them
    (child_site / "_reuse_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(str(child), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(next(wheels.glob("*.whl"))))

    work.mkdir(), home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIPE_", "XDG_", "PYTHON"))}
    env.update(HOME=str(home), TMPDIR=str(work), OMP_NUM_THREADS="1", TQDM_DISABLE="1", MPLBACKEND="Agg")
    repo_before = run("git", "status", "--porcelain", "--ignored", cwd=ROOT).stdout
    venv_before = files_under(venv)
    (work / "script.py").write_text(OUTSIDE_SCRIPT)
    result = subprocess.run([str(child), "script.py"], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fit: finished 2 epochs." in result.stdout and "audit: True" in result.stdout
    assert f"search: sqlite:///{home}/.local/share/recipe-kit/runs/search.db" in result.stdout

    assert files_under(venv) == venv_before, "wrote into the installed package's folders"
    assert run("git", "status", "--porcelain", "--ignored", cwd=ROOT).stdout == repo_before, "wrote into the repo"
    written = {p.parts[:3] if p.parts[0] == ".local" else p.parts[:2] for p in files_under(home)}
    assert written <= {(".cache", "recipe-kit"), (".local", "share", "recipe-kit"), (".cache", "matplotlib"),
                       (".config", "matplotlib")}, written     # the user cache and data folders only
    assert (home / ".local" / "share" / "recipe-kit" / "runs" / "search.db").is_file()
    if Path("/usr/share/datasets/fashion-mnist").is_dir():      # Debian's package: ./course test installs it
        assert "data: 10000" in result.stdout
        assert (home / ".cache" / "recipe-kit" / "datasets" / "fashion-mnist" / "test.npz").is_file()
