"""pytest setup for the notebooks (nbval): what may vary between runs is not compared.

Checked: every text output (numbers are deterministic on CPU with fixed seeds and threads).
Not compared: images (nbval's default), widget model ids (random), stderr (progress bars, timings).
Sanitized (tests/nbval_sanitize.cfg): memory addresses, durations, throughput.
"""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
