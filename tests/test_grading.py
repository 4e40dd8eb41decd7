"""Grading an instructor can trust: every attack of issue 16 scores exactly what the honest answers earn.

A 5-point instructor notebook written here (ex1: 2 points; ex2: 3 points, with a hidden test). The
honest submission solves ex1 and gets ex2 wrong in a way only the hidden test catches: 2 / 5. Each
attack starts from that submission, so each must also score 2 / 5.
"""
import copy
import csv
import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from recipe_kit import classroom, grading, sandbox

ROOT = Path(__file__).resolve().parent.parent
HONEST = 2  # points the honest answers earn


def meta(grade_id, solution=False, points=None):
    m = {"grade": points is not None, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
         "solution": solution, "task": False}
    if points is not None:
        m["points"] = points
    return {"nbgrader": m}


def instructor_notebook():
    code = nbformat.v4.new_code_cell
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A 5-point notebook"),
        code("import math"),
        code("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
             metadata=meta("ex1-solution", True)),
        code("assert double(3) == 6\nprint('ex1 ok')", metadata=meta("ex1-check", points=2)),
        code("def mean(xs):\n    ### BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    ### END SOLUTION",
             metadata=meta("ex2-solution", True)),
        code("assert mean([1, 2, 3]) == 2\n### BEGIN HIDDEN TESTS\nassert mean([4, 6]) == 5, 'hidden'\n"
             "### END HIDDEN TESTS\nprint('ex2 ok')", metadata=meta("ex2-check", points=3)),
    ])


def honest_submission():
    """What a student hands in (plain JSON, as an attacker would edit it): ex1 right, ex2 wrong."""
    nb = json.loads(nbformat.writes(instructor_notebook()))
    nb["cells"][2]["source"] = "def double(x):\n    return x + x"
    nb["cells"][4]["source"] = "def mean(xs):\n    return 2  # passes the visible test only"
    nb["cells"][5]["source"] = "assert mean([1, 2, 3]) == 2\nprint('ex2 ok')"  # the student version: no hidden tests
    return nb


@pytest.fixture(scope="module")
def instructor(tmp_path_factory):
    path = tmp_path_factory.mktemp("course") / "tiny.ipynb"
    nbformat.write(instructor_notebook(), path)
    return path


def grade(instructor, nb, tmp_path, name="sub.ipynb", **kwargs):
    path = tmp_path / name
    path.write_bytes(nb if isinstance(nb, bytes) else (nb if isinstance(nb, str) else json.dumps(nb)).encode())
    kwargs.setdefault("timeout_per_cell", 30)
    return classroom.grade(path, source=instructor, **kwargs)


def points(result):
    return {row["grade_id"]: row["points"] for row in result["cells"]}


def test_honest_submission_scores_2_of_5(instructor, tmp_path):
    result = grade(instructor, honest_submission(), tmp_path)
    assert points(result) == {"ex1-check": 2, "ex2-check": 0} and result["max_score"] == 5
    assert "AssertionError: hidden" in result["cells"][1]["error"]  # the hidden test was put back


# ----------------------------------------------------------------------------- attacks from the issue

def mark_checks_as_solutions(nb):
    for cell in nb["cells"][3], nb["cells"][5]:
        cell["metadata"]["nbgrader"]["solution"] = True
        cell["source"] = "pass"


def points_1000(nb):
    nb["cells"][3]["metadata"]["nbgrader"]["points"] = 1000
    nb["cells"][5]["metadata"]["nbgrader"]["points"] = 1000


def paste_check_three_times(nb):
    nb["cells"][4:4] = [copy.deepcopy(nb["cells"][3]) for _ in range(3)]


def graded_cell_without_grade_id(nb):
    nb["cells"].append(nbformat.v4.new_code_cell("pass", metadata={"nbgrader": {"grade": True, "points": 100}}))
    nb["cells"].append(nbformat.v4.new_code_cell("pass", metadata=meta("bonus", points=100)))  # unknown id


def blank_later_cells(nb):
    nb["cells"][4]["source"] += "\nget_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])"


@pytest.mark.parametrize("attack", [mark_checks_as_solutions, points_1000, paste_check_three_times,
                                    graded_cell_without_grade_id, blank_later_cells], ids=lambda f: f.__name__)
def test_attack_scores_what_the_honest_answers_earn(attack, instructor, tmp_path):
    nb = honest_submission()
    attack(nb)
    result = grade(instructor, nb, tmp_path)
    assert (result["score"], result["max_score"]) == (HONEST, 5), result
    assert [r["grade_id"] for r in result["cells"]] == ["ex1-check", "ex2-check"]


def test_metadata_attacks_are_reported(instructor, tmp_path):
    nb = honest_submission()
    for attack in points_1000, paste_check_three_times, graded_cell_without_grade_id:
        attack(nb)
    cells, notes = grading.read_cells(write(tmp_path / "a.ipynb", nb))
    _, _, _, more, missing = grading.assemble(nbformat.read(instructor, as_version=4), cells)
    text = "\n".join(notes + more)
    assert "ex1-check: nbgrader metadata or cell type altered (points)" in text
    assert text.count("'ex1-check' appears again") == 3
    assert "without a grade id" in text and "'bonus' is not in the instructor version" in text
    assert missing == []


def write(path, nb):
    path.write_text(json.dumps(nb))
    return path


def rewrite_instructor(path):
    """A cell that replaces the instructor's notebook by one whose checks are `pass` (errors hidden)."""
    fake = instructor_notebook()
    for cell in fake.cells[3], fake.cells[5]:
        cell.source = "pass"
    return (f"try:\n    open({str(path)!r}, 'w').write({nbformat.writes(fake)!r})\n"
            "except OSError as e:\n    print('blocked:', e)")


def test_rewriting_the_instructor_notebook_unsandboxed_does_not_change_the_next_students_score(instructor, tmp_path):
    """Without bubblewrap the file can be rewritten; a class is graded against the copy read before any
    student code ran, and the result warns."""
    class_folder, original = tmp_path / "class", instructor.read_bytes()
    cheat, wrong = honest_submission(), honest_submission()
    cheat["cells"].insert(1, nbformat.v4.new_code_cell(rewrite_instructor(instructor)))
    wrong["cells"][2]["source"] = "def double(x):\n    return 3 * x"
    for name, nb in ("a_cheat", cheat), ("b_wrong", wrong):
        (class_folder / name).mkdir(parents=True)
        write(class_folder / name / "tiny.ipynb", nb)
    try:
        book = classroom.grade_folder(class_folder, source=instructor, sandboxed=False, timeout_per_cell=30)
        rows = list(csv.DictReader(open(book)))
        assert instructor.read_bytes() != original  # the attack did write...
    finally:
        instructor.write_bytes(original)
    scores = {(r["student"], r["exercise"]): int(r["points"]) for r in rows}
    assert scores == {("a_cheat", "ex1-check"): 2, ("a_cheat", "ex2-check"): 0,
                      ("b_wrong", "ex1-check"): 0, ("b_wrong", "ex2-check"): 0}  # ...and changed nothing
    assert "changed while this submission ran" in rows[0]["message"]


# ----------------------------------------------------------------------------- hard time limits

def test_a_cell_ignoring_sigint_is_killed_and_reported_as_a_timeout(instructor, tmp_path):
    nb = honest_submission()
    nb["cells"][4]["source"] = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    started = time.monotonic()
    result = grade(instructor, nb, tmp_path, timeout_per_cell=4)
    assert time.monotonic() - started < 60
    assert points(result) == {"ex1-check": 2, "ex2-check": 0}  # scores what ran
    assert result["cells"][1]["error"] == "timed out after 4 s in cell ex2-solution"


def test_an_interruptible_loop_is_a_timeout_not_a_keyboard_interrupt_and_later_cells_run(instructor, tmp_path):
    nb = honest_submission()
    nb["cells"][2]["source"] = "while True:\n    pass"
    nb["cells"][4]["source"] = "def mean(xs):\n    return sum(xs) / len(xs)"  # ex2 right this time
    result = grade(instructor, nb, tmp_path, timeout_per_cell=4)
    assert result["cells"][0]["error"] == "timed out after 4 s in cell ex1-solution"
    assert points(result) == {"ex1-check": 0, "ex2-check": 3}


def test_the_notebook_time_limit_stops_the_kernel(instructor, tmp_path):
    nb = honest_submission()
    nb["cells"][1]["source"] = "import time\ntime.sleep(1.5)"
    nb["cells"].insert(2, nbformat.v4.new_code_cell("time.sleep(1.5)"))
    result = grade(instructor, nb, tmp_path, timeout_per_notebook=2)
    assert result["score"] == 0
    assert all(r["error"].startswith("not run:") for r in result["cells"]), result["cells"]


# ----------------------------------------------------------------------------- malformed submissions

@pytest.mark.parametrize("text, why", [
    ("this is not json {", "not JSON"),
    ('{"hello": 1}', "no list of cells"),
    ("[1, 2]", "no list of cells"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
], ids=["not-json", "wrong-schema", "a-list", "binary", "deeply-nested"])
def test_an_unreadable_submission_is_a_per_student_error(text, why, instructor, tmp_path):
    result = grade(instructor, text, tmp_path)
    assert why in result["error"] and result["score"] == 0 and result["max_score"] == 5
    assert all(why in row["error"] for row in result["cells"])


def test_a_huge_submission_is_not_read(instructor, tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "MAX_BYTES", 10_000)
    result = grade(instructor, honest_submission() | {"pad": "x" * 20_000}, tmp_path)
    assert "over the grader's" in result["error"] and result["score"] == 0


def test_huge_outputs_in_a_submission_are_ignored_and_huge_printing_is_cut(instructor, tmp_path):
    nb = honest_submission()
    nb["cells"][2]["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="x" * 3_000_000)]
    nb["cells"][2]["source"] += "\nprint('y' * 3_000_000)"
    executed = tmp_path / "executed.ipynb"
    result = grade(instructor, nb, tmp_path, save_executed=executed)
    assert result["score"] == HONEST
    assert executed.stat().st_size < 2.5e6


def delete_check(nb):
    del nb["cells"][5]


def reorder(nb):
    nb["cells"][2:4], nb["cells"][4:6] = nb["cells"][4:6], nb["cells"][2:4]  # ex2 before ex1


def change_cell_types(nb):
    nb["cells"][3]["cell_type"] = "markdown"  # a check that would not run
    del nb["cells"][3]["outputs"], nb["cells"][3]["execution_count"]
    nb["cells"][1] = {"cell_type": "code"}  # no source
    nb["cells"].insert(1, "not a cell")


def strip_metadata(nb):
    nb["cells"][3]["metadata"] = "nothing here"
    nb["cells"][5]["metadata"]["nbgrader"] = ["not", "a", "dict"]


@pytest.mark.parametrize("damage, expected, note", [
    (delete_check, {"ex1-check": 2, "ex2-check": 0}, "ex2-check is missing from the submission"),
    (reorder, {"ex1-check": 2, "ex2-check": 0}, "not in the instructor's order"),
    (change_cell_types, {"ex1-check": 2, "ex2-check": 0}, "cell type altered"),
    (strip_metadata, {"ex1-check": 0, "ex2-check": 0}, "ex1-check is missing"),
], ids=lambda x: getattr(x, "__name__", "")[:20])
def test_a_damaged_submission_is_graded_without_crashing(damage, expected, note, instructor, tmp_path):
    nb = honest_submission()
    damage(nb)
    result = grade(instructor, nb, tmp_path)
    assert points(result) == expected and result["error"] is None
    assert any(note in n for n in result["notes"]), result["notes"]


# ----------------------------------------------------------------------------- where student code runs

PROBE = """import os, socket
print('cwd', os.getcwd())
try:
    print('instructor', len(open(INSTRUCTOR).read()))
except OSError as e:
    print('instructor', 'unreadable')
try:
    open(os.path.join(CHECKOUT, 'planted.txt'), 'w').write('x')
    print('checkout', 'writable')
except OSError:
    print('checkout', 'read-only')
try:
    socket.create_connection(('127.0.0.1', PORT), timeout=2).close()
    print('network', 'yes')
except OSError:
    print('network', 'no')
"""


def probe(instructor, tmp_path, sandboxed):
    import socket
    server = socket.create_server(("127.0.0.1", 0))
    nb = honest_submission()
    source = PROBE.replace("INSTRUCTOR", repr(str(instructor))).replace("CHECKOUT", repr(str(ROOT)))
    nb["cells"].insert(1, nbformat.v4.new_code_cell(source.replace("PORT", str(server.getsockname()[1]))))
    executed = tmp_path / "probe_executed.ipynb"
    try:
        result = grade(instructor, nb, tmp_path, sandboxed=sandboxed, save_executed=executed)
    finally:
        server.close()
        if (ROOT / "planted.txt").exists():
            os.remove(ROOT / "planted.txt")
    text = nbformat.read(executed, as_version=4).cells[1].outputs[0]["text"]
    return result, dict(line.split(" ", 1) for line in text.strip().split("\n"))


def test_student_code_runs_outside_the_repository_even_without_a_sandbox(instructor, tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # as on a machine without bubblewrap
    result, seen = probe(instructor, tmp_path, sandboxed=None)
    assert result["warning"] == sandbox.NO_SANDBOX and "apt-get install bubblewrap" in sandbox.NO_SANDBOX
    assert not Path(seen["cwd"]).is_relative_to(ROOT) and not Path(seen["cwd"]).exists()  # a removed temp folder
    assert result["score"] == HONEST


def test_a_bubblewrap_that_cannot_make_namespaces_is_reported_not_used(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: str(fake))
    assert "No permissions to create new namespace" in sandbox.sandbox_problem()
    assert not sandbox.bwrap_available()


def test_the_bubblewrap_sandbox_hides_the_instructor_version_and_has_no_network(instructor, tmp_path):
    if not sandbox.bwrap_available():
        pytest.skip("bubblewrap is not installed (./course test installs it where it can: apt-get install bubblewrap)")
    result, seen = probe(instructor, tmp_path, sandboxed=True)
    assert seen["instructor"] in ("0", "unreadable"), seen  # emptied, or under the sandbox's own /tmp
    assert (seen["checkout"], seen["network"]) == ("read-only", "no"), seen
    assert not Path(seen["cwd"]).is_relative_to(ROOT)
    assert result["score"] == HONEST and result["sandbox"] is True


def test_the_sandbox_hides_folders_and_files_but_never_what_the_kernel_needs(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "key.ipynb").write_text("{}")
    args = sandbox.bwrap_prefix(tmp_path / "work", [tmp_path / "notebooks", tmp_path / "key.ipynb", ROOT, tmp_path])
    assert " --tmpfs {} ".format(tmp_path / "notebooks") in " ".join(args) + " "
    assert " --ro-bind /dev/null {} ".format(tmp_path / "key.ipynb") in " ".join(args) + " "
    assert str(ROOT) not in args and args.count(str(tmp_path)) == 0  # they hold the package, the work folder
    assert "--unshare-net" in args and args[:3] == ["bwrap", "--ro-bind", "/"]


# ----------------------------------------------------------------------------- a class, end to end

def test_a_class_folder_is_graded_into_one_gradebook_the_same_in_any_order(instructor, tmp_path, capsys):
    honest, cheat, hang = honest_submission(), honest_submission(), honest_submission()
    for attack in mark_checks_as_solutions, points_1000, paste_check_three_times, blank_later_cells:
        attack(cheat)
    cheat["cells"].insert(1, nbformat.v4.new_code_cell(rewrite_instructor(instructor)))
    hang["cells"][4]["source"] = "import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True:\n    pass"
    folder, original = tmp_path / "submissions", instructor.read_bytes()
    for student, nb in ("alice", honest), ("bob", cheat), ("carol", hang), ("dave", "[1, 2]"):
        (folder / student).mkdir(parents=True)
        (folder / student / "tiny.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))
    try:
        book = classroom.grade_folder(folder, source=instructor, timeout_per_cell=4)
    finally:
        tampered, _ = instructor.read_bytes() != original, instructor.write_bytes(original)
    assert tampered is not sandbox.bwrap_available()  # bubblewrap keeps the course read-only
    rows = list(csv.DictReader(open(book)))
    assert list(rows[0]) == ["student", "notebook", "exercise", "points", "max", "message"]
    table = {(r["student"], r["exercise"]): (int(r["points"]), int(r["max"])) for r in rows}
    assert table == {("alice", "ex1-check"): (2, 2), ("alice", "ex2-check"): (0, 3),
                     ("bob", "ex1-check"): (2, 2), ("bob", "ex2-check"): (0, 3),
                     ("carol", "ex1-check"): (2, 2), ("carol", "ex2-check"): (0, 3),
                     ("dave", "ex1-check"): (0, 2), ("dave", "ex2-check"): (0, 3)}
    messages = {(r["student"], r["exercise"]): r["message"] for r in rows}
    assert messages[("carol", "ex2-check")].startswith("timed out after 4 s in cell ex2-solution")
    assert "no list of cells" in messages[("dave", "ex1-check")]
    assert "appears again" in messages[("bob", "ex1-check")]
    progress = capsys.readouterr().err
    assert "[1/4] alice/tiny.ipynb: 2 / 5" in progress and "[4/4] dave/tiny.ipynb: 0 / 5" in progress
    feedback = book.parent / "feedback"
    assert "total: 2 / 5 (40%)" in (feedback / "bob" / "tiny.txt").read_text()
    assert "hidden" in (feedback / "alice" / "tiny.ipynb").read_text()  # the executed notebook, tracebacks in

    again = [classroom.grade(folder / s / "tiny.ipynb", source=instructor, timeout_per_cell=4)["score"]
             for s in ("bob", "alice")]  # once more, in reverse order
    assert again == [2, 2]


def test_the_cli_grades_a_folder_and_refuses_an_output_folder_inside_it(instructor, tmp_path, capsys):
    folder = tmp_path / "subs"
    (folder / "eve").mkdir(parents=True)
    (folder / "eve" / "tiny.ipynb").write_text("{}")
    assert classroom.main(["grade", str(folder), "--source", str(instructor), "--out", str(folder / "x")]) == 1
    assert "inside the submissions folder" in capsys.readouterr().err
    assert classroom.main(["grade", str(folder), "--source", str(instructor)]) == 0
    assert (tmp_path / "subs-graded" / "gradebook.csv").exists()
    assert classroom.main(["grade", str(folder), "--timeout-per-cell", "0"]) == 1
    assert "--timeout-per-cell must be a positive" in capsys.readouterr().err
