"""A learner's working copies: blank exercises, solutions on demand, and edits never overwritten."""
import json
from pathlib import Path

import nbformat
import pytest

import recipe_kit as rk
from recipe_kit import learner
from recipe_kit.classroom import STUB, is_solution

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "03_overfit.ipynb"


def solution_sources(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if is_solution(c)]


def test_copies_of_every_notebook_have_blank_exercises(tmp_path):
    results = learner.make_copies(tmp_path)
    names = sorted(p.name for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p, _, _ in results] == names and len(names) == 6
    assert {status for _, status, _ in results} == {"created"}
    for name in names:
        sources = solution_sources(tmp_path / name)
        assert sources and all(STUB in s and "### BEGIN SOLUTION" not in s for s in sources), name
        assert solution_sources(NOTEBOOKS_DIR / name) != sources  # the book keeps its solutions
    assert (tmp_path / "README.md").exists()
    assert {status for _, status, _ in learner.make_copies(tmp_path)} == {"unchanged"}


def test_solution_reveals_the_books_answer_without_markers():
    answer = rk.solution(3, 1)
    assert "def param_count(model):" in answer and "return sum(p.numel()" in answer
    assert "### BEGIN SOLUTION" not in answer and STUB not in answer
    assert answer._repr_markdown_().startswith("```python\n") and repr(answer) == str(answer)
    namespace = {}
    exec(answer, namespace)  # the revealed code runs as is, pasted over the stub
    import torch.nn as nn
    assert namespace["param_count"](nn.Linear(10, 3)) == 33
    with pytest.raises(ValueError, match=r"has exercises \[1, 2\]"):
        rk.solution(3, 7)
    with pytest.raises(ValueError, match="stages are"):
        rk.solution(9, 1)


def new_course_version(tmp_path, text):
    """A changed instructor notebook (as after `git pull`) at a path of its own."""
    nb = nbformat.read(NOTEBOOKS_DIR / NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(text))
    source = tmp_path / "course" / NOTEBOOK
    source.parent.mkdir(exist_ok=True)
    nbformat.write(nb, source)
    return source


def test_an_edited_copy_is_kept_and_the_new_version_goes_beside_it(tmp_path):
    copies = tmp_path / "copies"
    learner.make_copies(copies, [NOTEBOOKS_DIR / NOTEBOOK])
    mine = nbformat.read(copies / NOTEBOOK, as_version=4)
    exercise = next(c for c in mine.cells if is_solution(c))
    exercise.source = exercise.source.replace(STUB, "return 42  # my own attempt")
    nbformat.write(mine, copies / NOTEBOOK)
    edited = (copies / NOTEBOOK).read_bytes()

    [(_, status, message)] = learner.make_copies(copies, [NOTEBOOKS_DIR / NOTEBOOK])
    assert status == "kept" and "kept your edited" in message
    [(_, status, message)] = learner.make_copies(copies, [new_course_version(tmp_path, "new in v2")])
    assert status == "beside" and "new version is beside it" in message
    assert (copies / NOTEBOOK).read_bytes() == edited  # the learner's work, byte for byte
    [beside] = copies.glob("03_overfit.new-*.ipynb")
    assert beside.name in message and nbformat.read(beside, as_version=4).cells[0].source == "new in v2"
    assert all(STUB in s for s in solution_sources(beside))


def test_an_unedited_copy_follows_the_course_and_running_it_is_not_editing(tmp_path):
    copies = tmp_path / "copies"
    learner.make_copies(copies, [NOTEBOOKS_DIR / NOTEBOOK])
    ran = nbformat.read(copies / NOTEBOOK, as_version=4)
    for cell in ran.cells:  # what running and saving changes: outputs, counts, metadata
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [nbformat.v4.new_output("stream", text="ran\n")], 1
    ran.metadata["widgets"] = {"state": {}}
    nbformat.write(ran, copies / NOTEBOOK)
    [(_, status, _)] = learner.make_copies(copies, [new_course_version(tmp_path, "new in v2")])
    assert status == "updated"
    assert nbformat.read(copies / NOTEBOOK, as_version=4).cells[0].source == "new in v2"
    assert not list(copies.glob("*.new-*.ipynb"))


def test_a_copy_without_a_record_is_never_overwritten(tmp_path):
    """A copy we did not write (or a lost manifest) counts as the learner's own."""
    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / NOTEBOOK).write_text("not even a notebook")
    [(_, status, _)] = learner.make_copies(copies, [NOTEBOOKS_DIR / NOTEBOOK])
    assert status == "beside" and (copies / NOTEBOOK).read_text() == "not even a notebook"
    manifest = json.loads((copies / learner.MANIFEST).read_text())
    assert NOTEBOOK not in manifest  # still not ours: a later run must not overwrite it either
    (copies / learner.MANIFEST).write_text("{damaged")
    [(_, status, _)] = learner.make_copies(copies, [NOTEBOOKS_DIR / NOTEBOOK])
    assert status == "beside" and (copies / NOTEBOOK).read_text() == "not even a notebook"
    with pytest.raises(ValueError, match="choose another folder"):
        learner.make_copies(NOTEBOOKS_DIR, [NOTEBOOKS_DIR / NOTEBOOK])


def test_command_line_and_course_open_make_copies_before_jupyter(tmp_path, capsys):
    assert learner.main(["copies", str(tmp_path)]) == 0 and capsys.readouterr().out.count("created") == 6
    assert learner.main(["solution", "1", "9"]) == 1 and "has exercises [1, 2, 3]" in capsys.readouterr().err
    assert learner.main(["solution", "1", "1"]) == 0 and "def class_counts" in capsys.readouterr().out
    script = (ROOT / "course").read_text()
    branch = script.split("\n  open)", 1)[1].split(";;", 1)[0]
    assert branch.index("recipe_kit.learner copies my-notebooks") < branch.index("jupyter\" lab")
    assert "my-notebooks/01_" in branch and "my-notebooks/" in (ROOT / ".gitignore").read_text().split()


def test_no_exercise_is_answered_elsewhere_in_its_notebook():
    """An exercise's solution must not be given away by another cell of the same notebook: its function is
    defined nowhere else, and none of its solution lines (longer than a trivial `return x`) appears elsewhere."""
    import re
    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        grade_id = [c["metadata"].get("nbgrader", {}).get("grade_id", "") for c in cells]
        others = "\n".join("".join(c["source"]) for c, g in zip(cells, grade_id) if not g)
        for cell, gid in zip(cells, grade_id):
            if not gid.endswith("-solution"):
                continue
            source = "".join(cell["source"])
            for name in re.findall(r"^def (\w+)\(", source, flags=re.M):
                assert f"def {name}(" not in others, f"{path.name}: {name} ({gid}) is also defined in another cell"
            body = source.split("### BEGIN SOLUTION", 1)[-1].split("### END SOLUTION", 1)[0]
            for line in (l.strip() for l in body.splitlines()):
                if len(line) > 30 and not line.startswith("#"):
                    assert line not in others, f"{path.name}: {gid}'s line {line!r} appears in another cell"
