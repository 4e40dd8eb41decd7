"""The statistic behind each preflight threshold, on correct pipelines and on the bug catalogs.

    .venv/bin/python benchmarks/checks_thresholds.py [--n 2000]

Every check records the numbers it compares with its named thresholds in report.details["stats"]
(preflight_checks.note). This runs preflight(budget="full") on the correct pipelines (clean:
correct_pipelines.CORRECT, the CORRECT_BLIND* lists of bugs_blind*.py and bugs.clean) and on every
pipeline bug of bugs.py, bugs_heldout.py and bugs_blind*.py (the blind catalogs after their blind run), then prints per statistic the range over the clean
pipelines and the value on each bug that the check flagged. The comments next to the thresholds in
preflight_checks.py and preflight_mechanisms.py quote this output. A few minutes on 2 CPU cores.
"""
import argparse
import math
from collections import defaultdict

import torch

import recipe_kit as rk
from recipe_kit import bugs, bugs_blind, bugs_blind2, bugs_blind3, bugs_heldout, correct_pipelines
from recipe_kit.preflight import preflight


def pipelines():
    """(name, build, clean?) for every pipeline the thresholds are measured on."""
    yield "clean", bugs.clean, True
    for p in (correct_pipelines.CORRECT + bugs_blind.CORRECT_BLIND + bugs_blind2.CORRECT_BLIND2
              + bugs_blind3.CORRECT_BLIND3):
        yield p.name, p.build, True
    for b in bugs.CATALOG:
        yield b.name, b.build, False
    for b in bugs_heldout.HELD_OUT + bugs_blind.BLIND + bugs_blind2.BLIND2 + bugs_blind3.BLIND3:
        if b.kind == "pipeline":
            yield b.name, b.build, False


def collect(images, labels):
    """{(check, statistic): {"clean": [(value, name)], "flagged": [(value, name, severity)]}}."""
    table = defaultdict(lambda: {"clean": [], "flagged": []})
    for name, build, clean in pipelines():
        try:
            report = preflight(*build(images, labels), budget="full")
        except Exception as e:                        # a bug preflight refuses as bad input: no statistics
            print(f"  {name}: {type(e).__name__}: {str(e)[:100]}")
            continue
        severity = {}
        for p in report.problems:
            severity[p.check] = "error" if p.severity == "error" or severity.get(p.check) == "error" else "warning"
        for check, stats in report.details.get("stats", {}).items():
            for stat, value in stats.items():
                if not isinstance(value, float) or not math.isfinite(value):
                    continue
                if clean:
                    table[check, stat]["clean"].append((value, name))
                elif check in severity:
                    table[check, stat]["flagged"].append((value, name, severity[check]))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Fashion-MNIST training images per pipeline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = rk.load_dataset("fashion-mnist", "train")
    table = collect(train.images[:args.n], train.labels[:args.n])
    for (check, stat), rows in sorted(table.items()):
        clean = sorted(rows["clean"])
        line = f"{check}.{stat}: clean "
        line += (f"{clean[0][0]:.3g} ({clean[0][1]}) .. {clean[-1][0]:.3g} ({clean[-1][1]}), {len(clean)} pipelines"
                 if clean else "-")
        print(line)
        for value, name, severity in sorted(rows["flagged"]):
            print(f"    {severity:7s} {value:10.3g}  {name}")


if __name__ == "__main__":
    main()
