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
from checks_blind import run_catalog
from recipe_kit.bugs_blind3 import BLIND3, CORRECT_BLIND3, clean_splits3

if __name__ == "__main__":
    run_catalog(__doc__, "blind3", BLIND3, CORRECT_BLIND3, clean_splits3, part=2, width=38)
