"""Classroom: hand out student notebooks and grade the filled-in ones.

    python -m recipe_kit.classroom student OUTDIR [NOTEBOOK...]
    python -m recipe_kit.classroom grade NOTEBOOK [--source INSTRUCTOR.ipynb] [--timeout-per-cell 900] [--json]

The course notebooks are the instructor versions, in nbgrader's format: a solution cell holds its
answer between `### BEGIN SOLUTION` and `### END SOLUTION`, a check cell (nbgrader grade: true) may
hold `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS`. `student` cuts both out and keeps the
nbgrader metadata, so nbgrader itself can still collect and autograde. `grade` is the small
nbgrader-free path: put the check cells back from the instructor version (hidden tests included,
and a student cannot weaken a test), run everything with long timeouts (check cells train models),
and score every check cell.
"""
import argparse
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
STUB = 'raise NotImplementedError("Exercise: write your solution here")'
MARKDOWN_STUB = "YOUR ANSWER HERE"
SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)",
                      re.MULTILINE | re.DOTALL)
HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)",
                          re.MULTILINE | re.DOTALL)


def nbgrader_meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell):
    return bool(nbgrader_meta(cell).get("solution"))


def is_check(cell):
    """A graded cell whose code the instructor owns (a test), as opposed to a graded answer."""
    return bool(nbgrader_meta(cell).get("grade")) and not is_solution(cell)


# ----------------------------------------------------------------------------- student version

def stub_solutions(source, markdown=False):
    """Each solution region becomes a stub at the region's indentation, so `def f(x):` stays valid.
    A solution cell without markers is replaced whole (as nbgrader does)."""
    stub = MARKDOWN_STUB if markdown else STUB
    if not SOLUTION.search(source):
        return stub
    return SOLUTION.sub(lambda m: m.group(1) + stub + m.group(2), source)


def student_notebook(nb):
    """A copy of an instructor notebook with solutions stubbed, hidden tests removed, and the outputs of
    solution and check cells cleared (they would give the answers away). Other outputs stay."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if is_solution(cell) or "### BEGIN SOLUTION" in cell.source:
            cell.source = stub_solutions(cell.source, markdown=cell.cell_type == "markdown")
        cell.source = HIDDEN_TESTS.sub("", cell.source)
        if cell.cell_type == "code" and (is_solution(cell) or nbgrader_meta(cell).get("grade")):
            cell.outputs, cell.execution_count = [], None
    return nb


def write_student_versions(outdir, notebooks=None):
    """Student version of each notebook (default: every course notebook) into outdir; returns the paths."""
    notebooks = [Path(p) for p in notebooks] if notebooks else sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks given and none match {NOTEBOOKS_DIR}/[0-9][0-9]_*.ipynb")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        if path.resolve().parent == outdir.resolve():
            raise ValueError(f"OUTDIR {outdir} holds {path.name} itself: choose another OUTDIR, "
                             "or the instructor version would be overwritten.")
        out = outdir / path.name
        nbformat.write(student_notebook(nbformat.read(path, as_version=4)), out)
        written.append(out)
    return written


# ----------------------------------------------------------------------------- grading

def restore_checks(student, instructor):
    """Put back every check cell's instructor source, matched by grade_id: this restores the hidden
    tests and undoes any edit to a test. Returns the grade_ids the student notebook lacks."""
    checks = {nbgrader_meta(c)["grade_id"]: c for c in instructor.cells if is_check(c)}
    for cell in student.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_check(cell) and grade_id in checks:
            cell.source = checks[grade_id].source
    present = {nbgrader_meta(c).get("grade_id") for c in student.cells}
    return [grade_id for grade_id in checks if grade_id not in present]


def error_of(cell):
    """'Name: message' of the first error output of a cell, or None if it ran cleanly."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            first_line = (output.get("evalue") or "").split("\n")[0]
            return f"{output.get('ename')}: {first_line}"
    return None


def execute(nb, cwd, timeout_per_cell=900):
    """Run every code cell in order in a python3 kernel; a failing cell does not stop the rest.
    A cell over its timeout is interrupted (and fails); if the kernel dies, later cells fail unrun."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    client = NotebookClient(nb, timeout=timeout_per_cell, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except DeadKernelError as e:
                for later in nb.cells[index:]:
                    if later.cell_type == "code":
                        later.outputs = [nbformat.v4.new_output("error", ename="DeadKernelError",
                                                                evalue=f"kernel died: {e}", traceback=[])]
                break
    return nb


def score(nb, missing=()):
    """One row per graded cell: a check fails if it raised, or if a solution cell of its exercise
    (those since the previous graded cell) raised. Points are all or nothing, as in nbgrader."""
    rows, solution_errors = [], []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if is_solution(cell) and cell.cell_type == "code" and error_of(cell):
            solution_errors.append(f"solution cell {meta.get('grade_id')}: {error_of(cell)}")
        if not meta.get("grade"):
            continue
        if cell.cell_type != "code":
            rows.append({"grade_id": meta["grade_id"], "passed": None, "points": 0,
                         "max_points": meta.get("points", 0), "error": "markdown answer: grade by hand"})
            continue
        error = solution_errors[0] if solution_errors else error_of(cell)  # the cause first
        max_points = meta.get("points", 0)
        rows.append({"grade_id": meta["grade_id"], "passed": error is None,
                     "points": max_points if error is None else 0, "max_points": max_points, "error": error})
        solution_errors = []
    for grade_id in missing:
        rows.append({"grade_id": grade_id, "passed": False, "points": 0, "max_points": None,
                     "error": "cell missing from the submitted notebook"})
    return rows


def grade(notebook, source=None, timeout_per_cell=900, cwd=NOTEBOOKS_DIR, save_executed=None):
    """Grade a filled-in notebook: restore check cells from `source` (default: the course notebook
    of the same name), execute it in `cwd`, score it. Returns plain data (a dict).
    save_executed: a path to write the executed notebook to (its tracebacks show what went wrong)."""
    notebook = Path(notebook)
    source = Path(source) if source else NOTEBOOKS_DIR / notebook.name
    if not source.exists():
        raise FileNotFoundError(f"instructor version {source} not found: pass --source INSTRUCTOR.ipynb "
                                "(the course notebook this submission was made from).")
    student, instructor = nbformat.read(notebook, as_version=4), nbformat.read(source, as_version=4)
    missing = restore_checks(student, instructor)
    max_points = {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c).get("points", 0)
                  for c in instructor.cells if nbgrader_meta(c).get("grade")}
    rows = score(execute(student, cwd, timeout_per_cell), missing)
    if save_executed:
        nbformat.write(student, save_executed)
    rows = [r for r in rows if r["grade_id"] in max_points]  # the instructor version defines the exercises
    for row in rows:
        row["max_points"] = max_points[row["grade_id"]]
    return {"notebook": str(notebook), "source": str(source), "cells": rows,
            "score": sum(r["points"] for r in rows), "max_score": sum(max_points.values())}


def print_table(result):
    print(f"{result['notebook']}  (tests from {result['source']})")
    print(f"{'cell':<24} {'result':<8} {'points':>8}  why")
    for row in result["cells"]:
        status = {True: "pass", False: "FAIL", None: "manual"}[row["passed"]]
        points = f"{row['points']:g} / {row['max_points']:g}"
        print(f"{row['grade_id']:<24} {status:<8} {points:>8}  {row['error'] or ''}")
    share = result["score"] / result["max_score"] if result["max_score"] else 0.0
    print(f"total: {result['score']:g} / {result['max_score']:g} ({share:.0%})")


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipe_kit.classroom", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student version of notebooks into OUTDIR")
    student.add_argument("outdir")
    student.add_argument("notebooks", nargs="*", help="default: every notebooks/[0-9][0-9]_*.ipynb")
    grader = commands.add_parser("grade", help="execute a filled-in notebook and score its exercises")
    grader.add_argument("notebook")
    grader.add_argument("--source", help="instructor version (default: notebooks/<same file name>)")
    grader.add_argument("--timeout-per-cell", type=float, default=900, help="seconds; check cells may train")
    grader.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    grader.add_argument("--save-executed", metavar="FILE", help="also write the executed notebook here")
    args = parser.parse_args(argv)

    if args.command == "student":
        for path in write_student_versions(args.outdir, args.notebooks):
            print(f"wrote {path}")
        return 0
    try:
        result = grade(args.notebook, args.source, args.timeout_per_cell, save_executed=args.save_executed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
