"""Classroom tools: student versions give nothing away, grading scores exactly what was solved.

(a) a small notebook written here in nbgrader's format (3 fast exercises, one hidden test);
(b) the real course notebooks: student builds, and full marks for the instructor version of one;
(c) nbgrader itself accepts the course notebooks (generate_assignment).
"""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from recipe_kit import classroom, grading

ROOT = Path(__file__).resolve().parent.parent
COURSE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FASTEST_TO_GRADE = "01_become_one_with_the_data.ipynb"  # ~2 min; 02 and 03 train models for longer


# ----------------------------------------------------------------------------- a small notebook

def solution_cell(n, source):
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {
        "grade": False, "grade_id": f"ex{n}-solution", "locked": False, "schema_version": 3,
        "solution": True, "task": False}})


def check_cell(n, source):
    return nbformat.v4.new_code_cell(source + f'\nprint("Exercise {n}: correct")', metadata={"nbgrader": {
        "grade": True, "grade_id": f"ex{n}-check", "locked": True, "points": 1, "schema_version": 3,
        "solution": False, "task": False}})


SOLUTIONS = {
    1: "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
    2: "def mean(xs):\n    ### BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    ### END SOLUTION",
    3: "### BEGIN SOLUTION\nsquares = [i * i for i in range(5)]\n### END SOLUTION",  # top level, no def
}


def small_instructor_notebook():
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A tiny course notebook"),
        nbformat.v4.new_code_cell("import math\nprint('setup done')"),
        solution_cell(1, SOLUTIONS[1]),
        check_cell(1, "assert double(3) == 6"),
        solution_cell(2, SOLUTIONS[2]),
        check_cell(2, "assert mean([1, 2, 3]) == 2\n### BEGIN HIDDEN TESTS\nassert mean([4, 6]) == 5, 'hidden'\n"
                      "### END HIDDEN TESTS"),
        solution_cell(3, SOLUTIONS[3]),
        check_cell(3, "assert squares == [0, 1, 4, 9, 16]"),
    ])


def unmarked(source):
    """A solution as a student would type it: the code without the BEGIN/END SOLUTION lines."""
    return "\n".join(line for line in source.split("\n") if "### " not in line)


def with_solution(nb, n, source):
    """A copy of nb whose exercise-n solution cell holds `source` (what a student typed)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if classroom.nbgrader_meta(cell).get("grade_id") == f"ex{n}-solution":
            cell.source = source
    return nb


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(folder, instructor path, student notebook)."""
    folder = tmp_path_factory.mktemp("small")
    instructor = folder / "instructor" / "tiny.ipynb"
    instructor.parent.mkdir()
    nbformat.write(small_instructor_notebook(), instructor)
    (student,) = classroom.write_student_versions(folder / "student", [instructor])
    return folder, instructor, nbformat.read(student, as_version=4)


def grade_small(small, nb, name, **kwargs):
    folder, instructor, _ = small
    path = folder / name
    nbformat.write(nb, path)
    result = classroom.grade(path, source=instructor, **kwargs)
    return {row["grade_id"]: row["passed"] for row in result["cells"]}, result


def test_student_version_stubs_solutions_keeps_defs_and_hides_hidden_tests(small):
    _, _, student = small
    sources = {classroom.nbgrader_meta(c).get("grade_id"): c.source for c in student.cells}
    assert sources["ex1-solution"] == 'def double(x):\n    ' + classroom.STUB
    assert sources["ex3-solution"] == classroom.STUB
    assert "mean([4, 6])" not in sources["ex2-check"] and "HIDDEN" not in sources["ex2-check"]
    assert "assert mean([1, 2, 3]) == 2" in sources["ex2-check"]
    assert student.cells[3].metadata["nbgrader"]["grade"] is True      # nbgrader metadata kept


def test_instructor_version_scores_full_marks(small):
    passed, result = grade_small(small, nbformat.read(small[1], as_version=4), "instructor_copy.ipynb")
    assert passed == {"ex1-check": True, "ex2-check": True, "ex3-check": True}
    assert (result["score"], result["max_score"]) == (3, 3)


def test_untouched_student_version_scores_zero_and_the_cli_exits_zero(small, capsys):
    folder, instructor, student = small
    path = folder / "untouched.ipynb"
    nbformat.write(student, path)
    assert classroom.main(["grade", str(path), "--source", str(instructor), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["passed"] for row in result["cells"]] == [False, False, False]
    assert (result["score"], result["max_score"]) == (0, 3)
    assert all("NotImplementedError" in row["error"] for row in result["cells"])


def test_only_exercise_2_solved_scores_exactly_exercise_2(small, capsys):
    passed, result = grade_small(small, with_solution(small[2], 2, unmarked(SOLUTIONS[2])), "only_ex2.ipynb")
    assert passed == {"ex1-check": False, "ex2-check": True, "ex3-check": False}
    assert result["score"] == 1
    classroom.print_table(result)
    table = capsys.readouterr().out
    assert "ex2-check                pass" in table and "total: 1 / 3 (33%)" in table


def test_hidden_test_is_applied_when_grading(small):
    """`return 2` passes the visible check (mean([1, 2, 3]) == 2) but not the hidden one."""
    passed, _ = grade_small(small, with_solution(small[2], 2, "def mean(xs):\n    return 2"), "cheat.ipynb")
    assert passed["ex2-check"] is False


def test_edited_tests_are_put_back_and_a_slow_cell_is_interrupted_without_stopping_the_rest(small):
    nb = nbformat.read(small[1], as_version=4)
    nb.cells[3].source = "print('Exercise 1: correct')"  # a student deleting the asserts changes nothing...
    nb = with_solution(nb, 1, "import time\ntime.sleep(60)")  # ...and this cell runs past the timeout
    executed = small[0] / "slow_executed.ipynb"
    passed, _ = grade_small(small, nb, "slow.ipynb", timeout_per_cell=5, save_executed=executed)
    assert passed == {"ex1-check": False, "ex2-check": True, "ex3-check": True}
    check_1 = nbformat.read(executed, as_version=4).cells[3]
    assert "assert double(3) == 6" in check_1.source and check_1.outputs[0]["ename"] == "NameError"


def test_a_raising_solution_cell_fails_its_check_even_if_the_check_passes():
    """Scoring alone, on outputs written here: exercise 3's solution raised, its check printed the mark."""
    nb = small_instructor_notebook()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    nb.cells[6].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])]
    rows = grading.score(small_instructor_notebook(), nb, marked={3, 5, 7})
    assert [r["passed"] for r in rows] == [True, True, False]
    assert "ValueError: bad" in rows[2]["error"]
    rows = grading.score(small_instructor_notebook(), nb, marked={3, 7})  # ex2's check did not print the mark
    assert [r["passed"] for r in rows] == [True, False, False] and "did not run to its end" in rows[1]["error"]


def test_grading_without_an_instructor_version_names_the_source_option(tmp_path):
    path = tmp_path / "not_a_course_notebook.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    with pytest.raises(FileNotFoundError, match="--source"):
        classroom.grade(path)


# ----------------------------------------------------------------------------- the real notebooks

def graded_ids(nb):
    return [classroom.nbgrader_meta(c)["grade_id"] for c in nb.cells if classroom.nbgrader_meta(c).get("grade")]


@pytest.fixture(scope="module")
def student_builds(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("student")
    assert classroom.main(["student", str(outdir)]) == 0
    return outdir


def test_there_are_course_notebooks_with_exercises():
    assert COURSE_NOTEBOOKS and all(graded_ids(nbformat.read(p, as_version=4)) for p in COURSE_NOTEBOOKS)


@pytest.mark.parametrize("notebook", COURSE_NOTEBOOKS, ids=lambda p: p.name[:2])
def test_student_build_of_a_course_notebook(notebook, student_builds):
    instructor = nbformat.read(notebook, as_version=4)
    text = (student_builds / notebook.name).read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    student = nbformat.read(student_builds / notebook.name, as_version=4)
    assert graded_ids(student) == graded_ids(instructor)
    solutions = [(s, i) for s, i in zip(student.cells, instructor.cells) if classroom.is_solution(i)]
    assert solutions
    for student_cell, instructor_cell in solutions:
        tree = ast.parse(student_cell.source)  # still valid Python, def lines kept
        raises = [node for node in ast.walk(tree) if isinstance(node, ast.Raise)
                  and "NotImplementedError" in ast.unparse(node)]
        assert len(raises) == max(1, instructor_cell.source.count("### BEGIN SOLUTION")), student_cell.source
        assert student_cell.outputs == []


@pytest.mark.slow
def test_instructor_version_of_a_real_notebook_scores_full_marks():
    notebook = ROOT / "notebooks" / FASTEST_TO_GRADE
    if not notebook.exists():
        notebook = COURSE_NOTEBOOKS[0]
    result = classroom.grade(notebook)
    assert len(result["cells"]) >= 1
    assert result["score"] == result["max_score"], [r for r in result["cells"] if not r["passed"]]


@pytest.mark.slow
def test_student_versions_of_a_real_notebook_score_zero_and_exactly_the_solved_exercise(student_builds, tmp_path):
    """The course's own notebook: untouched student version 0%, with exercise 1 solved exactly ex1."""
    name = FASTEST_TO_GRADE if (ROOT / "notebooks" / FASTEST_TO_GRADE).exists() else COURSE_NOTEBOOKS[0].name
    untouched = classroom.grade(student_builds / name)
    assert untouched["score"] == 0 and all(not r["passed"] for r in untouched["cells"])
    instructor = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    student = nbformat.read(student_builds / name, as_version=4)
    first = next(k for k, c in enumerate(instructor.cells) if classroom.is_solution(c))
    student.cells[first].source = instructor.cells[first].source  # the learner solves exercise 1 only
    solved = tmp_path / name
    nbformat.write(student, solved)
    result = classroom.grade(solved)
    passed = [r["grade_id"] for r in result["cells"] if r["passed"]]
    assert passed == [graded_ids(instructor)[0]] and result["score"] == result["cells"][0]["max_points"]


# ----------------------------------------------------------------------------- nbgrader itself

def test_nbgrader_generate_assignment_accepts_the_course_notebooks(tmp_path):
    nbgrader = Path(sys.executable).parent / "nbgrader"
    if not nbgrader.exists():
        pytest.fail("nbgrader is not installed: it is in the test extra (pip install -e '.[test]')")
    source = tmp_path / "source" / "recipe"
    source.mkdir(parents=True)
    for notebook in COURSE_NOTEBOOKS:
        shutil.copy(notebook, source)
    (tmp_path / "nbgrader_config.py").write_text(f"c = get_config()\nc.CourseDirectory.root = {str(tmp_path)!r}\n")
    env = dict(os.environ, PATH=f"{nbgrader.parent}{os.pathsep}{os.environ.get('PATH', '')}")  # it calls alembic
    run = subprocess.run([str(nbgrader), "generate_assignment", "recipe", "--force"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    for notebook in COURSE_NOTEBOOKS:
        released = tmp_path / "release" / "recipe" / notebook.name
        text = released.read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert graded_ids(nbformat.read(released, as_version=4)) == graded_ids(nbformat.read(notebook, as_version=4))
        assert text.count("NotImplementedError") >= notebook.read_text().count("### BEGIN SOLUTION")
