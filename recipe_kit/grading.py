"""Grading against the instructor's notebook, the only source of points, grade ids, tests and locks.

A submission is untrusted text. We read from it only each cell's type, source and grade id, and
build the notebook to run ourselves: the student's cells in the student's order, except that a cell
whose grade id the instructor version has takes its type and nbgrader metadata from the instructor,
and its source too unless it is a solution cell. So a check cell marked `"solution": true`, a
`"points": 1000`, or an edited assert change nothing; a repeated or unknown grade id is graded as an
ordinary cell, and a check cell the submission lacks scores 0.

These are the rules of nbgrader's OverwriteCells and DeduplicateIds, written out here because both
read the instructor version from nbgrader's gradebook database (filled by `generate_assignment`),
and DeduplicateIds raises KeyError on a graded cell without grade_id; nbgrader keeps checksums to
notice edits without the instructor's text, and we have that text, so we compare sources.

Each graded code cell gets one more line, printing a random mark: a check passes only if its cell
printed the mark, so a student cell that blanks later cells (an IPython input transformer) fails
them instead of passing them.
"""
import json
import re
import secrets
from dataclasses import dataclass

import nbformat

MAX_BYTES = 64_000_000  # a submission larger than this is not read (outputs of a few plots are ~1 MB)
HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)",
                          re.MULTILINE | re.DOTALL)
TRUSTED = ("grade", "solution", "locked", "points", "task")  # nbgrader metadata compared with the instructor's


class SubmissionError(Exception):
    """A submission that cannot be graded at all; the message says why, for the student."""


@dataclass
class Cell:
    number: int      # 1-based position in the submission, for messages
    cell_type: str
    source: str
    grade_id: str | None
    nbgrader: dict   # the submission's claims, only compared with the instructor's


def nbgrader_meta(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_solution(cell):
    return bool(nbgrader_meta(cell).get("solution"))


def is_graded(cell):
    return bool(nbgrader_meta(cell).get("grade"))


def is_check(cell):
    """A graded cell whose code the instructor owns (a test), as opposed to a graded answer."""
    return is_graded(cell) and not is_solution(cell)


def instructor_cells(instructor):
    """grade_id -> cell, for every cell of the instructor version that nbgrader tracks."""
    return {nbgrader_meta(c)["grade_id"]: c for c in instructor.cells if nbgrader_meta(c).get("grade_id")}


# ----------------------------------------------------------------------------- reading a submission

def read_cells(path, max_bytes=None):
    """The cells of a submission as plain Cells, plus notes on what was ignored. Raises SubmissionError."""
    max_bytes = max_bytes or MAX_BYTES
    size = path.stat().st_size
    if size > max_bytes:
        raise SubmissionError(f"the file is {size / 1e6:.0f} MB, over the grader's {max_bytes / 1e6:.0f} MB limit "
                              "(clear the outputs and submit again)")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SubmissionError(f"not a notebook: the file is not JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError("not a notebook: no list of cells (is it a .ipynb saved by Jupyter, version 4?)")
    cells, notes = [], []
    for number, cell in enumerate(data["cells"], 1):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            notes.append(f"cell {number} is not a notebook cell: ignored")
            continue
        meta = cell.get("metadata")
        claims = meta.get("nbgrader") if isinstance(meta, dict) else None
        claims = claims if isinstance(claims, dict) else {}
        grade_id = claims.get("grade_id")
        if claims and not isinstance(grade_id, str):
            notes.append(f"cell {number} has nbgrader metadata without a grade id: graded as an ordinary cell")
            grade_id = None
        cells.append(Cell(number, cell["cell_type"], source, grade_id, claims))
    return cells, notes


# ----------------------------------------------------------------------------- the notebook to run

def assemble(instructor, cells):
    """The notebook to run from a submission's cells (see the module docstring).
    Returns (notebook, labels, mark, notes, missing grade ids)."""
    known, seen, notes = instructor_cells(instructor), set(), []
    mark = f"grader-mark-{secrets.token_hex(16)}"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    labels = []
    for cell in cells:
        grade_id = cell.grade_id
        if grade_id is not None and grade_id not in known:
            notes.append(f"cell {cell.number}: grade id {grade_id!r} is not in the instructor version: "
                         "graded as an ordinary cell")
            grade_id = None
        elif grade_id in seen:
            notes.append(f"cell {cell.number}: grade id {grade_id!r} appears again: the first one counts, "
                         "this one is graded as an ordinary cell")
            grade_id = None
        if grade_id is None:
            new = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                   "raw": nbformat.v4.new_raw_cell}[cell.cell_type](cell.source)
            labels.append(f"#{cell.number}")
        else:
            seen.add(grade_id)
            new = own_version(known[grade_id], cell, notes)
            labels.append(grade_id)
        nb.cells.append(new)
    for new in nb.cells:
        if new.cell_type == "code" and is_graded(new):
            new.source += f"\nprint({mark!r})"
    missing = [grade_id for grade_id in known if grade_id not in seen]
    order = [gid for gid in (c.grade_id for c in cells) if gid in known]
    if [gid for gid in known if gid in seen] != list(dict.fromkeys(order)):
        notes.append("graded cells are not in the instructor's order: graded in the submitted order")
    for grade_id in missing:
        notes.append(f"{grade_id} is missing from the submission")
    return nb, labels, mark, notes, missing


def own_version(reference, cell, notes):
    """The instructor's cell (type, metadata, locked source); a solution cell keeps the student's source."""
    new = nbformat.from_dict(json.loads(json.dumps(reference)))
    grade_id = nbgrader_meta(reference)["grade_id"]
    if new.cell_type == "code":
        new.outputs, new.execution_count = [], None
    altered = [k for k in TRUSTED if k in cell.nbgrader and cell.nbgrader[k] != nbgrader_meta(reference).get(k)]
    if altered or cell.cell_type != reference.cell_type:
        notes.append(f"{grade_id}: nbgrader metadata or cell type altered ({', '.join(altered) or 'cell_type'}): "
                     "the instructor's used")
    if is_solution(reference):
        new.source = cell.source
    elif cell.source.strip() not in (reference.source.strip(), HIDDEN_TESTS.sub("", reference.source).strip()):
        notes.append(f"{grade_id}: edited: the instructor's version was run")
    return new


# ----------------------------------------------------------------------------- scoring

def error_of(cell):
    """'Name: message' of the first error output of a cell, or None if it ran cleanly."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            first_line = (output.get("evalue") or "").split("\n")[0]
            return first_line if output.get("ename") in ("TimeoutError", "NotRun") else \
                f"{output.get('ename')}: {first_line}"
    return None


def exercises(instructor):
    """grade_id of each graded cell -> the grade ids of the solution cells it checks (in the instructor
    version: those since the previous graded cell)."""
    groups, pending = {}, []
    for cell in instructor.cells:
        meta = nbgrader_meta(cell)
        if is_solution(cell) and not is_graded(cell):
            pending.append(meta["grade_id"])
        if is_graded(cell):
            groups[meta["grade_id"]] = pending
            pending = []
    return groups


def zero_rows(instructor, why):
    """Every graded cell at 0 points, for a submission that could not be run."""
    points = {gid: nbgrader_meta(c).get("points", 0) for gid, c in instructor_cells(instructor).items()}
    return [{"grade_id": gid, "passed": False, "points": 0, "max_points": points[gid], "error": why}
            for gid in exercises(instructor)]


def score(instructor, nb, marked, missing=()):
    """One row per graded cell of the instructor version, all or nothing as in nbgrader: a check passes
    if it printed the mark and neither it nor a solution cell of its exercise raised."""
    ran = {nbgrader_meta(c)["grade_id"]: (index, c) for index, c in enumerate(nb.cells) if nbgrader_meta(c)}
    rows = []
    for grade_id, solutions in exercises(instructor).items():
        reference = instructor_cells(instructor)[grade_id]
        row = {"grade_id": grade_id, "passed": False, "points": 0,
               "max_points": nbgrader_meta(reference).get("points", 0), "error": None}
        if grade_id in missing:
            row["error"] = "missing from the submission: scored 0"
        elif reference.cell_type != "code":
            row.update(passed=None, error="markdown answer: grade by hand")
        else:
            index, cell = ran[grade_id]
            errors = [(s, error_of(ran[s][1])) for s in solutions if s in ran and error_of(ran[s][1])]
            errors = [e if e.startswith(("timed out", "not run")) else f"solution cell {s}: {e}" for s, e in errors]
            row["error"] = (errors or [error_of(cell)])[0]  # the cause first
            if row["error"] is None and index not in marked:
                row["error"] = "the check did not run to its end (code changed while running?)"
            if row["error"] is None:
                row.update(passed=True, points=row["max_points"])
        rows.append(row)
    return rows
