"""The seventh blind held-out figures: recall on bug classes the checks were never tuned on, and false
alarms on correct pipelines and clean splits nobody tuned on.

    .venv/bin/python benchmarks/checks_blind7.py [--n 2000] [-v]

recipe_kit/bugs_blind7.py holds the catalog (BLIND7), the correct pipelines (CORRECT_BLIND7) and the
clean splits (clean_splits7); it was written from the checks' names and one-line descriptions only, after
the checks had been fixed on the six earlier blind catalogs, and nobody ran preflight or audit_data on it
before this script's first run. Scoring is benchmarks/checks_blind.py's, imported, not copied: caught = an
error or a warning (or a clear exception); diagnosed = an error or warning from a check the catalog names
for the bug (fixed before the first run); false alarm = an error on a correct pipeline or clean split, and
any warning is counted as "not quiet". The bugs use the first n Fashion-MNIST training images (and 8x8
digits); the clean splits use training images 6n..7n and test images 6n/4..7n/4 (slices no earlier blind
catalog used), 0..1 floats, tinted 3x32x32 colour images, tabular (N, 17) pooled intensities and object
height, and 8x8 digits as uint8 split at random.
The first run of this script is the blind figure: docs/checks_blind7_first_run.txt records it (2026-11-28,
checks at 280038c: caught 14/21, diagnosed 10/21, no error or warning on any of 15 correct pipelines/splits).
Any change to the checks made while looking at this catalog makes later runs NOT blind.
"""
from checks_blind import run_catalog
from recipe_kit.bugs_blind7 import BLIND7, CORRECT_BLIND7, clean_splits7

if __name__ == "__main__":
    run_catalog(__doc__, "blind7", BLIND7, CORRECT_BLIND7, clean_splits7, part=6, width=38)
