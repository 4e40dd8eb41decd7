"""The third blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind3.py [--n 2000] [-v]

recipe_kit/bugs_blind3.py holds the catalog (BLIND3), the correct pipelines (CORRECT_BLIND3) and the
clean splits (clean_splits3). Scoring is benchmarks/checks_blind.py's, imported, not copied: caught =
an error or a warning (or a clear exception); diagnosed = an error or warning from a check the catalog
names for the bug (fixed before the first run); false alarm = an error on a correct pipeline or clean
split, and any warning is counted as "not quiet". The bugs use the first n Fashion-MNIST training
images; the clean splits use training images 2n..3n and test images 2n/4..3n/4 (slices neither earlier
blind catalog used). The first run of this script is the blind figure: run it once, record its output,
before any check is changed for this catalog.
"""
import argparse
import time

import torch

import recipe_kit as rk
from checks_blind import score_bugs, score_clean, summary
from recipe_kit.bugs_blind3 import BLIND3, CORRECT_BLIND3, clean_splits3


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
    print(f"bugs ({len(BLIND3)}): verdict, seconds, checks with an error / a warning  [declared checks]")
    bug_rows = score_bugs(BLIND3, images, labels)
    declared = {b.name: b.checks for b in BLIND3}
    for name, verdict, errors, warnings, seconds, messages in bug_rows:
        print(f"  {name:38s} {verdict:9s} {seconds:5.1f} s  errors: {', '.join(sorted(errors)) or '-'}"
              f"  warnings: {', '.join(sorted(warnings)) or '-'}  [{', '.join(sorted(declared[name]))}]")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    splits = clean_splits3(train.images[2 * n:3 * n], train.labels[2 * n:3 * n], test.images[2 * m:3 * m],
                            test.labels[2 * m:3 * m])
    print(f"correct pipelines and clean splits ({len(CORRECT_BLIND3) + len(splits)}):")
    clean_rows = score_clean(CORRECT_BLIND3, splits, images, labels)
    for name, errors, warnings, messages in clean_rows:
        print(f"  {name:38s} {'ALARM' if errors else 'warned' if warnings else 'quiet':9s} errors: "
              f"{', '.join(sorted(errors)) or '-'}  warnings: {', '.join(sorted(warnings)) or '-'}")
        for line in messages if args.verbose else ():
            print(f"      {line}")
    print()
    print("\n".join(summary(bug_rows, clean_rows)).replace("blind bugs", "blind3 bugs"))
    print(f"({time.perf_counter() - start:.0f} s wall, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
