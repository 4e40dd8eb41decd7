"""How the checks generalize: recall on held-out bugs, and false alarms on correct pipelines.

    .venv/bin/python benchmarks/checks_heldout.py [--n 2000]

Held-out bugs (recipe_kit/bugs_heldout.py) come from real reports and were never used to set a
threshold. caught: preflight/audit_data reports at least one error; diagnosed: an error comes from a
check that names the bug's cause. False alarms: errors on recipe_kit/correct_pipelines.py, and on
a clean Fashion-MNIST train/test split through audit_data. Targets (issue 18): caught >= 90%,
diagnosed >= 75%, no false alarm. One thread; about a minute on 2 CPU cores.
"""
import argparse
import time

import torch

import recipe_kit as rk
from recipe_kit.audit import audit_data
from recipe_kit.bugs_heldout import HELD_OUT
from recipe_kit.correct_pipelines import CORRECT
from recipe_kit.preflight import preflight


def run(kind, parts, budget):
    return preflight(*parts, budget=budget) if kind == "pipeline" else audit_data(*parts, budget=budget)


def evaluate(images, labels, test_images, test_labels):
    """(rows, caught, diagnosed, false alarms, clean runs): the figures the benchmark prints."""
    rows, caught, diagnosed = [], 0, 0
    for bug in HELD_OUT:
        start = time.perf_counter()
        rk.seed_everything(0)                  # a bug's model and data are random: the same each run
        report = run(bug.kind, bug.build(images, labels), bug.budget)
        errors = {p.check for p in report.errors} | {f"{n} (crashed)" for n, _ in report.crashed}
        hit, named = bool(errors), bool(errors & bug.checks)
        caught, diagnosed = caught + hit, diagnosed + named
        rows.append((bug.name, "diagnosed" if named else "caught" if hit else "MISSED", sorted(errors),
                     time.perf_counter() - start))
    alarms = []
    for p in CORRECT:
        rk.seed_everything(0)
        report = preflight(*p.build(images, labels), budget="full")
        if not report.ok:
            alarms.append((p.name, sorted({q.check for q in report.errors} | {n for n, _ in report.crashed})))
    clean = audit_data((images, labels), (test_images, test_labels), 10)
    if not clean.ok:
        alarms.append(("audit_data clean split", sorted({q.check for q in clean.errors})))
    return rows, caught, diagnosed, alarms, len(CORRECT) + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Fashion-MNIST training images per pipeline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    rows, caught, diagnosed, alarms, clean_runs = evaluate(train.images[:args.n], train.labels[:args.n],
                                                           test.images[:args.n // 4], test.labels[:args.n // 4])
    for name, verdict, errors, seconds in rows:
        print(f"  {name:34s} {verdict:9s} {seconds:5.1f} s  errors: {', '.join(errors) or '-'}")
    n = len(rows)
    print(f"\nheld-out bugs: caught {caught}/{n} ({caught / n:.0%}), diagnosed {diagnosed}/{n} ({diagnosed / n:.0%})")
    print(f"false alarms: {len(alarms)} of {clean_runs} correct pipelines/splits"
          + "".join(f"\n  {name}: {checks}" for name, checks in alarms))


if __name__ == "__main__":
    main()
