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
from checks_blind import run_catalog
from recipe_kit.bugs_blind2 import BLIND2, CORRECT_BLIND2, clean_splits2

if __name__ == "__main__":
    run_catalog(__doc__, "blind2", BLIND2, CORRECT_BLIND2, clean_splits2, part=1, width=32)
