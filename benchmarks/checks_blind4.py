"""The fourth blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind4.py [--n 2000] [-v]

recipe_kit/bugs_blind4.py holds the catalog (BLIND4), the correct pipelines (CORRECT_BLIND4) and the
clean splits (clean_splits4); it was written from the checks' names and one-line descriptions only, after
the checks had been fixed on the three earlier blind catalogs. Scoring is benchmarks/checks_blind.py's,
imported, not copied: caught = an error or a warning (or a clear exception); diagnosed = an error or
warning from a check the catalog names for the bug (fixed before the first run); false alarm = an error
on a correct pipeline or clean split, and any warning is counted as "not quiet". The bugs use the first
n Fashion-MNIST training images; the clean splits use training images 3n..4n and test images 3n/4..n
(slices no earlier blind catalog used), and 8x8 digits split at random. The first run of this script is
the blind figure: docs/checks_blind4_first_run.txt records it (2026-11-28, checks at 4d16e6f: caught 17/21,
diagnosed 10/21, errors on 2 of 12 correct pipelines/splits). The checks were changed after it, while
looking at this catalog, so later runs are NOT blind (docs/checks_heldout.md, section 13).
"""
from checks_blind import run_catalog
from recipe_kit.bugs_blind4 import BLIND4, CORRECT_BLIND4, clean_splits4

if __name__ == "__main__":
    run_catalog(__doc__, "blind4", BLIND4, CORRECT_BLIND4, clean_splits4, part=3, width=38)
