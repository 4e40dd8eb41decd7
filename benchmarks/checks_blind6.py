"""The sixth blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind6.py [--n 2000] [-v]

recipe_kit/bugs_blind6.py holds the catalog (BLIND6), the correct pipelines (CORRECT_BLIND6) and the
clean splits (clean_splits6); it was written from the checks' names and one-line descriptions only, after
the checks had been fixed on the five earlier blind catalogs, and nobody ran preflight or audit_data on it
before this script's first run. Scoring is benchmarks/checks_blind.py's, imported, not copied: caught = an
error or a warning (or a clear exception); diagnosed = an error or warning from a check the catalog names
for the bug (fixed before the first run); false alarm = an error on a correct pipeline or clean split, and
any warning is counted as "not quiet". The bugs use the first n Fashion-MNIST training images (and 8x8
digits); the clean splits use training images 5n..6n and test images 5n/4..6n/4 (slices no earlier blind
catalog used), 8x8 digits as raw 0..16 floats split at random, and tabular (N, 56) row and column profiles.
The first run of this script is the blind figure: docs/checks_blind6_first_run.txt records it (2026-11-28,
checks at ba09875: caught 17/23, diagnosed 11/23, errors on 2 of 17 correct pipelines/splits, warnings only on
2 more). The checks were changed after it, while looking at this catalog, so later runs are NOT blind
(docs/checks_heldout.md, section 16).
"""
from checks_blind import run_catalog
from recipe_kit.bugs_blind6 import BLIND6, CORRECT_BLIND6, clean_splits6

if __name__ == "__main__":
    run_catalog(__doc__, "blind6", BLIND6, CORRECT_BLIND6, clean_splits6, part=5, width=38)
