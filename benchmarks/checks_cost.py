"""What the checks cost: preflight on the course CNN, and audit_data on all of Fashion-MNIST.

    .venv/bin/python benchmarks/checks_cost.py [--threads 2] [--repeats 2]

Target: preflight(budget="full") on the course CNN (Adam 3e-4, normalized Fashion-MNIST) in at most
20 s on 2 CPU cores, so it can run before every training run. Prints the best of `repeats` wall
times per budget and the seconds of each check, then audit_data on train (60k) + test (10k) when
recipe_kit.audit.audit_data exists. Wall times depend on the machine's load: run it on an idle one; the
CPU seconds printed next to them bound the idle wall time of a CPU-bound run from above.
"""
import argparse
import importlib
import time

import torch
import torch.nn as nn

import recipe_kit as rk
from recipe_kit.preflight import preflight

MEAN, STD = 0.2860, 0.3530   # Fashion-MNIST training-set pixel statistics on the 0..1 scale


def course_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def best_of(repeats, run):
    """(fastest wall time in seconds, result of that run, CPU seconds of that run).

    CPU seconds (all threads of this process) do not grow when other processes share the cores: on an
    idle machine a CPU-bound run takes at most that long, so it bounds the wall time on a shared one."""
    best = None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if best is None or seconds < best[0]:
            best = (seconds, result, cpu)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--only", choices=("preflight", "audit"), help="measure only one of the two")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    x = (train.images.float() / 255 - MEAN) / STD                     # (60000, 1, 28, 28)
    make = lambda params: torch.optim.Adam(params, lr=3e-4)
    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats}")
    for budget in ("fast", "full") if args.only != "audit" else ():
        seconds, report, cpu = best_of(args.repeats, lambda: preflight(
            course_cnn(), (x, train.labels), nn.CrossEntropyLoss(), make, budget=budget))
        print(f"\npreflight(course CNN, 60k Fashion-MNIST, budget={budget!r}): {seconds:.1f} s ({cpu:.1f} CPU s), "
              f"{'OK' if report.ok else 'ERRORS'}, {len(report.warnings)} warning(s)")
        for name, s in sorted(report.details["seconds"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:20s} {s:6.2f} s")
    audit = importlib.import_module("recipe_kit.audit")
    if args.only == "preflight":
        return
    if hasattr(audit, "audit_data"):
        seconds, report, cpu = best_of(1, lambda: audit.audit_data(train, test))
        print(f"\naudit_data(Fashion-MNIST train 60k + test 10k, budget='full'): {seconds:.1f} s ({cpu:.1f} CPU s), "
              f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        for name, s in sorted(report.details.get("seconds", {}).items(), key=lambda kv: -kv[1]):
            print(f"  {name:20s} {s:6.2f} s")
    else:
        print("\nrecipe_kit.audit.audit_data not found: skipped")


if __name__ == "__main__":
    main()
