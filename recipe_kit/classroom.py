"""Classroom: hand out student notebooks and grade the filled-in ones, one or a whole class.

    python -m recipe_kit.classroom student OUTDIR [NOTEBOOK...] [--course DIR]
    python -m recipe_kit.classroom grade SUBMISSION.ipynb|FOLDER [--source INSTRUCTOR.ipynb] [--course DIR]
                                   [--out DIR] [--timeout-per-cell 900] [--timeout-per-notebook 3600] [--json]

The course notebooks are the instructor versions, in nbgrader's format: a solution cell holds its
answer between `### BEGIN SOLUTION` and `### END SOLUTION`, a check cell (nbgrader grade: true) may
hold `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS`. `student` cuts both out with nbgrader's
own ClearSolutions and ClearHiddenTests and keeps the metadata, so nbgrader can still collect and
autograde. `grade` is the small nbgrader-free path: it trusts only the instructor version
(grading.py), runs each submission from a throw-away folder in a fresh kernel with hard time limits,
sandboxed by bubblewrap when installed (sandbox.py), and scores every check cell. A folder of
submissions gives one gradebook CSV and per-student feedback.
"""
import argparse
import copy
import csv
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from . import grading, sandbox
from .grading import is_graded, is_solution, nbgrader_meta  # noqa: F401  (the classroom API)

STUB = 'raise NotImplementedError("Exercise: write your solution here")'
MARKDOWN_STUB = "YOUR ANSWER HERE"
CHECKOUT = Path(__file__).resolve().parent.parent  # the project, when recipe_kit runs from a clone
NOTEBOOKS = "[0-9][0-9]_*.ipynb"


def course_dir(path=None):
    """The folder of instructor notebooks: `path` if given, else notebooks/ of the clone recipe_kit runs
    from, else of the current directory. Only read, never written: an installed package needs no clone."""
    candidates = [Path(path)] if path else [CHECKOUT / "notebooks", Path.cwd() / "notebooks"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob(NOTEBOOKS)):
            return folder
    raise FileNotFoundError(f"no course notebooks ({NOTEBOOKS}) in {' or '.join(map(str, candidates))}: "
                            "pass --course DIR (the folder of instructor notebooks) or --source FILE.")


# ----------------------------------------------------------------------------- student version

def student_notebook(nb):
    """A copy of an instructor notebook with solutions stubbed and hidden tests removed (by nbgrader's
    ClearSolutions and ClearHiddenTests), and the outputs of solution and check cells cleared (they
    would give the answers away). Other outputs stay."""
    try:
        from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions
    except ImportError:
        raise ImportError("building student versions needs nbgrader: pip install 'nbgrader>=0.9.5,<0.10'") from None
    nb = copy.deepcopy(nb)
    nb, resources = ClearSolutions(code_stub={"python": STUB}, text_stub=MARKDOWN_STUB).preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, resources)
    for cell in nb.cells:
        if cell.cell_type == "code" and (is_solution(cell) or is_graded(cell)):
            cell.outputs, cell.execution_count = [], None
    return nb


def write_student_versions(outdir, notebooks=None, course=None):
    """Student version of each notebook (default: every course notebook) into outdir; returns the paths."""
    notebooks = [Path(p) for p in notebooks] if notebooks else sorted(course_dir(course).glob(NOTEBOOKS))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        if path.resolve().parent == outdir.resolve():
            raise ValueError(f"OUTDIR {outdir} holds {path.name} itself: choose another OUTDIR, "
                             "or the instructor version would be overwritten.")
        try:
            student = student_notebook(nbformat.read(path, as_version=4))
        except RuntimeError as e:  # nbgrader's message for markers outside solution/check cells
            raise ValueError(f"{path}: {e}") from None
        out = outdir / path.name
        nbformat.write(student, out)
        written.append(out)
    return written


# ----------------------------------------------------------------------------- grading one submission

def find_source(notebook, source=None, course=None):
    """The instructor version of a submission: `source`, else the course notebook of the same name."""
    if source:
        source = Path(source)
    else:
        try:
            source = course_dir(course) / Path(notebook).name
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no instructor version for {Path(notebook).name}: {e}") from None
    if not source.is_file():
        raise FileNotFoundError(f"instructor version {source} not found: pass --source INSTRUCTOR.ipynb "
                                "(the course notebook this submission was made from).")
    return source


def grade(notebook, source=None, timeout_per_cell=900, timeout_per_notebook=3600, sandboxed=None,
          save_executed=None, course=None, instructor=None, hidden=()):
    """Grade one submission against its instructor version; returns plain data (a dict), also for a
    submission that cannot be read (then `error` says why and every exercise scores 0).
    sandboxed: None uses bubblewrap when installed; instructor: the instructor notebook, already read
    (a class is graded against one in-memory copy); hidden: more paths the student code must not see;
    save_executed: where to write the executed notebook (its tracebacks show what went wrong)."""
    notebook = Path(notebook)
    source = find_source(notebook, source, course)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if instructor is None:
        instructor = nbformat.read(source, as_version=4)
    problem = sandbox.sandbox_problem() if sandboxed is None else None
    if sandboxed is None:
        sandboxed = problem is None
    result = {"notebook": str(notebook), "source": str(source), "sandbox": sandboxed, "notes": [], "error": None,
              "warning": None if sandboxed else problem or "no sandbox (--no-sandbox): student code ran with your rights"}
    try:
        cells, notes = grading.read_cells(notebook)
    except (grading.SubmissionError, OSError) as e:
        result["error"] = f"submission not graded: {e}"
        return finish(result, grading.zero_rows(instructor, result["error"]))
    nb, labels, mark, more, missing = grading.assemble(instructor, cells)
    result["notes"] += notes + more
    hidden = [*hidden, source, *known_instructor_paths(course)]
    with tempfile.TemporaryDirectory(prefix="recipe-grade-") as folder:
        try:
            marked = sandbox.run_cells(nb, folder, labels, timeout_per_cell, timeout_per_notebook, sandboxed,
                                       hidden, mark)
        except RuntimeError as e:  # jupyter_client's "Kernel didn't respond": the machine, not the student
            result["error"] = f"not graded: the kernel did not start ({e}): grade this submission again"
            return finish(result, grading.zero_rows(instructor, result["error"]))
    rows = grading.score(instructor, nb, marked, missing)
    for cell in nb.cells:
        cell.source = cell.source.replace(f"\nprint({mark!r})", "")
    if save_executed:
        nbformat.write(nb, save_executed)
    if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
        result["notes"].append(f"WARNING: the instructor version {source} changed while this submission ran; "
                               "restore it (git checkout) before grading more")
    return finish(result, rows)


def finish(result, rows):
    result.update(cells=rows, score=sum(r["points"] for r in rows), max_score=sum(r["max_points"] for r in rows))
    return result


def known_instructor_paths(course=None):
    """What a sandbox hides besides the submission's own source: the course notebooks and git history."""
    paths = []
    try:
        paths.append(course_dir(course))
    except FileNotFoundError:
        pass
    git = CHECKOUT / ".git"
    if git.is_file():  # a worktree: its history lives in the main clone's .git
        gitdir = Path(git.read_text().split("gitdir:", 1)[-1].strip())
        paths.append(gitdir.parent.parent if gitdir.parent.name == "worktrees" else gitdir)
    paths.append(git)
    return paths


def print_table(result, file=None):
    file = file or sys.stdout
    print(f"{result['notebook']}  (tests from {result['source']})", file=file)
    print(f"{'cell':<24} {'result':<8} {'points':>8}  why", file=file)
    for row in result["cells"]:
        status = {True: "pass", False: "FAIL", None: "manual"}[row["passed"]]
        points = f"{row['points']:g} / {row['max_points']:g}"
        print(f"{row['grade_id']:<24} {status:<8} {points:>8}  {row['error'] or ''}", file=file)
    share = result["score"] / result["max_score"] if result["max_score"] else 0.0
    print(f"total: {result['score']:g} / {result['max_score']:g} ({share:.0%})", file=file)
    for note in result["notes"]:
        print(f"note: {note}", file=file)
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=file)


# ----------------------------------------------------------------------------- grading a class

def submissions(folder):
    """(student, notebook path) pairs: FOLDER/<student>/*.ipynb, or FOLDER/<student>.ipynb."""
    folder = Path(folder)
    found = [(p.parent.name, p) for p in sorted(folder.glob("*/*.ipynb")) if not p.name.startswith(".")]
    found += [(p.stem, p) for p in sorted(folder.glob("*.ipynb"))]
    if not found:
        raise FileNotFoundError(f"no submissions in {folder}: expected {folder}/<student>/<notebook>.ipynb "
                                f"or {folder}/<student>.ipynb")
    return found


def grade_folder(folder, out=None, source=None, course=None, progress=None, **limits):
    """Grade every submission in a folder into out/gradebook.csv (student, notebook, exercise, points, max,
    message) and out/feedback/<student>/ (the executed notebook and a table per notebook). Each
    instructor version is read once, before any student code runs. Returns the CSV's path."""
    folder = Path(folder)
    out = Path(out) if out else folder.parent / f"{folder.name}-graded"
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the submissions folder: choose another folder, or its "
                         "feedback would be graded as submissions next time")
    todo, progress = submissions(folder), progress or sys.stderr
    instructors, rows = {}, []
    for student, path in todo:
        try:
            found = find_source(path, source, course)
        except FileNotFoundError:
            continue  # reported in its turn below
        if found not in instructors:
            instructors[found] = nbformat.read(found, as_version=4)
    out.mkdir(parents=True, exist_ok=True)
    for number, (student, path) in enumerate(todo, 1):
        started = time.monotonic()
        try:
            found = find_source(path, source, course)
        except FileNotFoundError as e:
            rows.append([student, path.stem, "", 0, 0, f"not graded: {e}"])
            print(f"[{number}/{len(todo)}] {student}/{path.name}: not graded: {e}", file=progress, flush=True)
            continue
        feedback = out / "feedback" / student
        feedback.mkdir(parents=True, exist_ok=True)
        try:
            result = grade(path, found, instructor=instructors[found], course=course, hidden=[folder, out],
                           save_executed=feedback / path.name, **limits)
        except Exception as e:  # a grader bug must not cost the rest of the class its grades
            why = f"not graded: grader error {type(e).__name__}: {e} (grade this submission again)"
            result = finish({"notebook": str(path), "source": str(found), "notes": [], "error": why},
                            grading.zero_rows(instructors[found], why))
        with open(feedback / f"{path.stem}.txt", "w") as f:
            print_table(result, file=f)
        notes = "; ".join(result["notes"])
        for row in result["cells"]:
            message = "; ".join(m for m in (row["error"] or "", notes) if m)
            rows.append([student, path.stem, row["grade_id"], row["points"], row["max_points"], message])
        print(f"[{number}/{len(todo)}] {student}/{path.name}: {result['score']:g} / {result['max_score']:g}"
              f" in {time.monotonic() - started:.0f} s" + (f"  ({result['error']})" if result["error"] else ""),
              file=progress, flush=True)
    gradebook = out / "gradebook.csv"
    with open(gradebook, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "exercise", "points", "max", "message"])
        writer.writerows(rows)
    return gradebook


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipe_kit.classroom", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student version of notebooks into OUTDIR")
    student.add_argument("outdir")
    student.add_argument("notebooks", nargs="*", help=f"default: every {NOTEBOOKS} of the course")
    student.add_argument("--course", metavar="DIR", help="the instructor notebooks (default: the clone's notebooks/)")
    grader = commands.add_parser("grade", help="run submissions and score their exercises")
    grader.add_argument("notebook", help="one submitted .ipynb, or a folder of them (a class)")
    grader.add_argument("--source", help="instructor version (default: the course notebook of the same name)")
    grader.add_argument("--course", metavar="DIR", help="the instructor notebooks (default: the clone's notebooks/)")
    grader.add_argument("--out", metavar="DIR", help="for a folder: where the gradebook and feedback go "
                                                     "(default: FOLDER-graded next to it)")
    grader.add_argument("--timeout-per-cell", type=float, default=900, help="seconds; check cells may train")
    grader.add_argument("--timeout-per-notebook", type=float, default=3600, help="seconds")
    grader.add_argument("--no-sandbox", action="store_true", help="run without bubblewrap even if installed")
    grader.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    grader.add_argument("--save-executed", metavar="FILE", help="also write the executed notebook here")
    args = parser.parse_args(argv)

    try:
        if args.command == "student":
            for path in write_student_versions(args.outdir, args.notebooks, args.course):
                print(f"wrote {path}")
            return 0
        for name in ("timeout_per_cell", "timeout_per_notebook"):
            if not getattr(args, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        limits = dict(timeout_per_cell=args.timeout_per_cell, timeout_per_notebook=args.timeout_per_notebook,
                      sandboxed=False if args.no_sandbox else None)
        if not args.no_sandbox and sandbox.sandbox_problem():
            print(f"warning: {sandbox.sandbox_problem()}", file=sys.stderr)
        if Path(args.notebook).is_dir():
            gradebook = grade_folder(args.notebook, args.out, args.source, args.course, **limits)
            print(f"wrote {gradebook} and feedback in {gradebook.parent / 'feedback'}")
            return 0
        result = grade(args.notebook, args.source, course=args.course, save_executed=args.save_executed, **limits)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
