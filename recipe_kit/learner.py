"""A self-paced learner's own working copies of the notebooks, and solutions on demand.

    python -m recipe_kit.learner copies [DIR]     # what `./course open` runs first (DIR: my-notebooks/)
    python -m recipe_kit.learner solution STAGE N # print exercise N of notebook STAGE, solved
    rk.solution(3, 2)                             # the same, in a notebook

The committed, executed notebooks in notebooks/ are the book: read them, never edit them (a `git pull`
would fight your edits). The copies in DIR are the student versions (exercises blank, hidden tests
out) and they are yours: rerunning `copies` never overwrites one you edited. Edited means a cell's
type or source differs from what was written; outputs and metadata do not count, because Jupyter
rewrites them on every save and running a notebook is not editing it. What was written is recorded
as a fingerprint per copy in DIR/.recipe-copies.json. When a new version of an edited copy arrives
(after `git pull`), it goes beside yours as NAME.new-<fingerprint>.ipynb, with a message.
"""
import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import nbformat

from .classroom import CHECKOUT, NOTEBOOKS, course_dir, is_solution, student_notebook

COPIES_DIR = CHECKOUT / "my-notebooks"
MANIFEST = ".recipe-copies.json"
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n?", re.MULTILINE)
README = """# Your working copies

These notebooks are yours: exercises are blank, edit and run them freely. `./course open` never
overwrites a notebook you edited; when the course gets a new version of it, the new one is written
beside yours as NAME.new-XXXXXXXX.ipynb (compare, keep what you want, delete the other).

The executed course notebooks in ../notebooks/ are the book: read them, do not edit them.
Stuck on an exercise? `rk.solution(stage, n)` shows exercise n of notebook `stage`, solved.
"""


def fingerprint(nb):
    """sha256 of the cells' types and sources: what a learner edits (not outputs, not metadata)."""
    cells = [[cell.cell_type, cell.source] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def _write_atomically(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a crash never leaves half a notebook or half a manifest


def _fingerprint_of_file(path):
    try:
        return fingerprint(nbformat.read(path, as_version=4))
    except Exception:  # not a readable notebook (a half-saved file?): treat it as edited, keep it
        return None


def _copy_one(source, dest, manifest):
    """Bring dest/<source name> up to date without losing edits; returns (status, message)."""
    student = student_notebook(nbformat.read(source, as_version=4))
    new = fingerprint(student)
    out = dest / source.name
    written = manifest.get(source.name)  # fingerprint of what we last wrote there, if anything
    if not out.exists():
        _write_atomically(out, nbformat.writes(student))
        manifest[source.name] = new
        return "created", f"created {out}"
    current = _fingerprint_of_file(out)
    if current == new:
        manifest[source.name] = new
        return "unchanged", f"up to date: {out}"
    if written is not None and current == written:  # not edited since we wrote it: safe to replace
        _write_atomically(out, nbformat.writes(student))
        manifest[source.name] = new
        return "updated", f"updated {out} to the course's new version (you had not edited it)"
    if written == new:  # edited, and the course has no newer version
        return "kept", f"kept your edited {out}"
    beside = dest / f"{source.stem}.new-{new[:8]}.ipynb"
    if not beside.exists():
        _write_atomically(beside, nbformat.writes(student))
    return "beside", (f"kept your edited {out}; the course's new version is beside it: {beside.name} "
                      "(compare them, keep what you want, delete the other)")


def make_copies(dest=COPIES_DIR, notebooks=None):
    """Write or refresh the learner's copies in dest; never overwrite an edited one.

    notebooks: instructor notebooks to copy (default: every notebooks/[0-9][0-9]_*.ipynb).
    Returns one (path, status, message) per notebook; status is "created", "updated", "unchanged",
    "kept" (edited, no new version) or "beside" (edited; the new version was written next to it).
    """
    dest = Path(dest)
    notebooks = [Path(p) for p in notebooks] if notebooks else sorted(course_dir().glob(NOTEBOOKS))
    for path in notebooks:
        if path.resolve().parent == dest.resolve():
            raise ValueError(f"dest={dest} holds {path.name} itself: choose another folder for the copies, "
                             "or the course notebook would be replaced by its student version.")
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except ValueError:  # damaged: every existing copy then counts as edited, so none is overwritten
        manifest = {}
    results = []
    for path in notebooks:
        status, message = _copy_one(path, dest, manifest)
        results.append((dest / path.name, status, message))
    _write_atomically(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if not (dest / "README.md").exists():
        (dest / "README.md").write_text(README)
    return results


# ----------------------------------------------------------------------------- solutions on demand

class Solution(str):
    """Source code that shows as code: highlighted in Jupyter, plain when printed or in a terminal."""

    def __repr__(self):
        return str(self)

    def _repr_markdown_(self):
        return f"```python\n{self}\n```"


def _notebook_of(stage, notebooks_dir):
    found = sorted(Path(notebooks_dir).glob(f"{int(stage):02d}_*.ipynb")) if str(stage).isdigit() else []
    if not found:
        stages = sorted(int(p.name[:2]) for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
        raise ValueError(f"stage={stage!r}: no notebook {notebooks_dir}/{stage!s:0>2}_*.ipynb; stages are {stages}.")
    return found[0]


def solution(stage, n, notebooks_dir=None):
    """Exercise n of notebook `stage`, solved, from the book (the instructor notebook).

    Try first; look when stuck. Returns the solution cells' code without the BEGIN/END markers,
    ready to paste over the stub in your copy.
    """
    path = _notebook_of(stage, course_dir(notebooks_dir))
    cells = [c for c in nbformat.read(path, as_version=4).cells if is_solution(c)]
    ids = {c.metadata["nbgrader"].get("grade_id", "") for c in cells}
    chosen = [c for c in cells if c.metadata["nbgrader"].get("grade_id", "").startswith(f"ex{n}-")]
    if not chosen:
        numbers = sorted({int(m.group(1)) for i in ids if (m := re.match(r"ex(\d+)-", i))})
        raise ValueError(f"n={n!r}: notebook {path.name} has exercises {numbers}.")
    return Solution("\n\n".join(MARKER.sub("", c.source).strip("\n") for c in chosen))


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipe_kit.learner", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    copies = commands.add_parser("copies", help="write or refresh your working copies (never overwrites edits)")
    copies.add_argument("dest", nargs="?", default=str(COPIES_DIR))
    shown = commands.add_parser("solution", help="print exercise N of notebook STAGE, solved")
    shown.add_argument("stage", type=int)
    shown.add_argument("n", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "copies":
            for _, _, message in make_copies(args.dest):
                print(message)
        else:
            print(solution(args.stage, args.n))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
