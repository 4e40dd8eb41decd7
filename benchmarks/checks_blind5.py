"""The fifth blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind5.py [--n 2000] [-v]

recipe_kit/bugs_blind5.py holds the catalog (BLIND5), the correct pipelines (CORRECT_BLIND5) and the
clean splits (clean_splits5); it was written from the checks' names and one-line descriptions only, after
the checks had been fixed on the four earlier blind catalogs, and nobody ran preflight or audit_data on it
before this script's first run. Scoring is benchmarks/checks_blind.py's, imported, not copied: caught = an
error or a warning (or a clear exception); diagnosed = an error or warning from a check the catalog names
for the bug (fixed before the first run); false alarm = an error on a correct pipeline or clean split, and
any warning is counted as "not quiet". The bugs use the first n Fashion-MNIST training images (and 8x8
digits); the clean splits use training images 4n..5n and test images n..5n/4 (slices no earlier blind
catalog used), 8x8 digits split by the parity of their index, and tabular (N, 16) features. The first run
of this script is the blind figure: docs/checks_blind5_first_run.txt records it (2026-11-28, checks at
efac671: caught 15/24, diagnosed 11/24, errors on 0 of 14 correct pipelines/splits, a warning on 1). The
checks were changed after it, while looking at this catalog, so later runs are NOT blind
(docs/checks_heldout.md, section 15).
"""
from checks_blind import run_catalog
from recipe_kit.bugs_blind5 import BLIND5, CORRECT_BLIND5, clean_splits5

if __name__ == "__main__":
    run_catalog(__doc__, "blind5", BLIND5, CORRECT_BLIND5, clean_splits5, part=4, width=38)
