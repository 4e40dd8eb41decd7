"""The second blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind2.py [--n 2000] [-v]

recipe_kit/bugs_blind2.py holds the catalog (BLIND2), the correct pipelines (CORRECT_BLIND2) and the
clean splits (clean_splits2). Scoring is benchmarks/checks_blind.py's, imported, not copied: caught =
an error or a warning (or a clear exception); diagnosed = an error or warning from a check the catalog
names for the bug (fixed before the first run); false alarm = an error on a correct pipeline or clean
split, and any warning is counted as "not quiet". The bugs use the first n Fashion-MNIST training
images; the clean Fashion-MNIST split uses the next n training and n/4 test images after the first
n/4. docs/checks_blind2_first_run.txt records the one blind run (docs/checks_heldout.md, section 8).
"""
import argparse
import time

import torch

import recipe_kit as rk
from checks_blind import score_bugs, score_clean, summary
from recipe_kit.bugs_blind2 import BLIND2, CORRECT_BLIND2, clean_splits2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Fashion-MNIST training images per pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every problem's message")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    train, test = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    n, m = args.n, args.n // 4
    images, labels = train.images[:n], train.labels[:n]
    print(f"bugs ({len(BLIND2)}): verdict, seconds, checks with an error / a warning  [declared checks]")
    bug_rows = score_bugs(BLIND2, images, labels)
    declared = {b.name: b.checks for b in BLIND2}
    for name, verdict, errors, warnings, seconds, messages in bug_rows:
        print(f"  {name:32s} {verdict:9s} {seconds:5.1f} s  errors: {', '.join(sorted(errors)) or '-'}"
              f"  warnings: {', '.join(sorted(warnings)) or '-'}  [{', '.join(sorted(declared[name]))}]")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    splits = clean_splits2(train.images[n:2 * n], train.labels[n:2 * n], test.images[m:2 * m], test.labels[m:2 * m])
    print(f"correct pipelines and clean splits ({len(CORRECT_BLIND2) + len(splits)}):")
    clean_rows = score_clean(CORRECT_BLIND2, splits, images, labels)
    for name, errors, warnings, messages in clean_rows:
        print(f"  {name:32s} {'ALARM' if errors else 'warned' if warnings else 'quiet':9s} errors: "
              f"{', '.join(sorted(errors)) or '-'}  warnings: {', '.join(sorted(warnings)) or '-'}")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    print()
    print("\n".join(summary(bug_rows, clean_rows)).replace("blind bugs", "blind2 bugs"))
    print(f"({time.perf_counter() - start:.0f} s wall, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
