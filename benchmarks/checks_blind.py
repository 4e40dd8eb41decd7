"""The blind held-out figures: recall on bug classes written before the checks' thresholds were read,
and false alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind.py [--n 2000]

recipe_kit/bugs_blind.py holds the catalog (BLIND), the correct pipelines (CORRECT_BLIND) and the clean
splits. caught: an error or a warning; diagnosed: an error or warning from a check that names the
bug's cause (bug.checks); the errors-only figures are printed too. False alarm: an error, or any
warning, on a correct pipeline or clean split (none of the blind ones is allowed a warning).
docs/checks_heldout.md records the first (blind) run. One thread; a few minutes on 2 CPU cores.
"""
import argparse
import time

import torch

import recipe_kit as rk
from recipe_kit.audit import audit_data
from recipe_kit.bugs_blind import BLIND, CORRECT_BLIND, clean_splits
from recipe_kit.preflight import preflight


# The one blind run (docs/checks_heldout.md, section 4): before any check was changed for this catalog.
BLIND_RECORD = ("recorded blind run, 2026-11-27, before any change (Intel Xeon with AMX, 1 thread): caught 18/22 "
                "(82%; errors only 13/22), diagnosed 11/22 (50%); errors on 0 of 17 correct pipelines/splits, "
                "warnings on 4")


def run(kind, parts, budget):
    return preflight(*parts, budget=budget) if kind == "pipeline" else audit_data(*parts, budget=budget)


def flagged(report):
    """(checks with an error or a crash, checks with a warning)."""
    errors = {p.check for p in report.errors} | {f"{n} (crashed)" for n, _ in report.crashed}
    return errors, {p.check for p in report.warnings}


def score_bugs(bugs, images, labels):
    """Per bug: (name, verdict, errors, warnings, seconds, messages)."""
    rows = []
    for bug in bugs:
        start = time.perf_counter()
        rk.seed_everything(0)                  # a bug's model and data are random: the same each run
        try:
            report = run(bug.kind, bug.build(images, labels), bug.budget)
        except Exception as e:                 # a clear BadInput on a bug counts as caught, undiagnosed
            rows.append((bug.name, "raised", {f"{type(e).__name__}"}, set(), time.perf_counter() - start,
                         [str(e)[:300]]))
            continue
        errors, warnings = flagged(report)
        named = (errors | warnings) & bug.checks
        verdict = "diagnosed" if named else "caught" if errors | warnings else "MISSED"
        rows.append((bug.name, verdict, errors, warnings, time.perf_counter() - start,
                     [f"{p.severity} {p.check}: {p.message[:200]}" for p in report.problems]))
    return rows


def score_clean(correct, splits, images, labels):
    """Per correct pipeline or clean split: (name, errors, warnings beyond the allowed ones, messages)."""
    rows = []
    for p in correct:
        rk.seed_everything(0)
        try:
            report = preflight(*p.build(images, labels), budget="full")
        except Exception as e:
            rows.append((p.name, {f"raised {type(e).__name__}"}, set(), [str(e)[:300]]))
            continue
        errors, warnings = flagged(report)
        rows.append((p.name, errors, warnings - p.warnings, [f"{q.severity} {q.check}: {q.message[:200]}"
                                                             for q in report.problems]))
    for name, train, test, classes in splits:
        report = audit_data(train, test, classes)
        errors, warnings = flagged(report)
        rows.append((f"audit_data {name}", errors, warnings, [f"{q.severity} {q.check}: {q.message[:200]}"
                                                              for q in report.problems]))
    return rows


def summary(bug_rows, clean_rows):
    """The figures, as lines: both definitions of caught, diagnosed, and false alarms."""
    n, m = len(bug_rows), len(clean_rows)
    caught = sum(bool(e | w) for _, _, e, w, _, _ in bug_rows)
    caught_err = sum(bool(e) for _, _, e, _, _, _ in bug_rows)
    diagnosed = sum(v == "diagnosed" for _, v, _, _, _, _ in bug_rows)
    alarms = [r for r in clean_rows if r[1]]
    warned = [r for r in clean_rows if r[2] and not r[1]]
    return [f"blind bugs: caught {caught}/{n} ({caught / n:.0%}; errors only {caught_err}/{n}), "
            f"diagnosed {diagnosed}/{n} ({diagnosed / n:.0%})",
            f"false alarms: errors on {len(alarms)} of {m} correct pipelines/splits, warnings only on "
            f"{len(warned)} more ({len(alarms) + len(warned)} of {m} not quiet)"]


def run_catalog(doc, label, bugs, correct, make_splits, part, width=38, record=None):
    """Score one blind catalog and print it: a row per bug (with its declared checks), a row per
    correct pipeline or clean split, then the figures. The bugs use the first n Fashion-MNIST training
    images; the clean splits use training images part*n..(part+1)*n and test images part*n/4..(part+1)*n/4,
    so each catalog's clean data is a slice no other catalog used (the first catalog's, part 0, shares the
    bugs' images). doc: the calling script's docstring; record: the catalog's blind figures, if recorded."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Fashion-MNIST training images per pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every problem's message")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    train, test = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    n, m = args.n, args.n // 4
    images, labels = train.images[:n], train.labels[:n]
    print(f"bugs ({len(bugs)}): verdict, seconds, checks with an error / a warning  [declared checks]")
    bug_rows = score_bugs(bugs, images, labels)
    declared = {b.name: b.checks for b in bugs}
    for name, verdict, errors, warnings, seconds, messages in bug_rows:
        print(f"  {name:{width}s} {verdict:9s} {seconds:5.1f} s  errors: {', '.join(sorted(errors)) or '-'}"
              f"  warnings: {', '.join(sorted(warnings)) or '-'}  [{', '.join(sorted(declared[name]))}]")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    splits = make_splits(train.images[part * n:(part + 1) * n], train.labels[part * n:(part + 1) * n],
                         test.images[part * m:(part + 1) * m], test.labels[part * m:(part + 1) * m])
    print(f"correct pipelines and clean splits ({len(correct) + len(splits)}):")
    clean_rows = score_clean(correct, splits, images, labels)
    for name, errors, warnings, messages in clean_rows:
        print(f"  {name:{width}s} {'ALARM' if errors else 'warned' if warnings else 'quiet':9s} errors: "
              f"{', '.join(sorted(errors)) or '-'}  warnings: {', '.join(sorted(warnings)) or '-'}")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    print()
    if record:                                       # the catalog's one blind run, before any change
        print(record)
        print("this run (no longer blind once the checks changed after the record):")
    print("\n".join(summary(bug_rows, clean_rows)).replace("blind bugs", f"{label} bugs"))
    print(f"({time.perf_counter() - start:.0f} s wall, torch {torch.__version__}, 1 thread)")


def main():
    run_catalog(__doc__, "blind", BLIND, CORRECT_BLIND, clean_splits, part=0, width=32, record=BLIND_RECORD)


if __name__ == "__main__":
    main()
