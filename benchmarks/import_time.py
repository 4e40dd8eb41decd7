"""How long `import recipe_kit` takes, next to `import torch` (its floor), in fresh processes.

recipe_kit loads its heavy optional modules (plots, widgets, search, tune, quiz, drills, bugs) on
first use, so a script or a search worker that only trains pays for torch and little else.

    .venv/bin/python benchmarks/import_time.py [--repeats 5]

Prints the median wall time of each import over --repeats fresh interpreters, then the slowest
modules that `import recipe_kit` pulls in (python -X importtime, cumulative).

Measured on 2 busy CPU cores (torch 2.14.1, median of 4, alternating): 10.5 s when every module was
imported eagerly, 5.3 s with the lazy ones; torch alone takes about 4.5 s of that.
"""
import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("matplotlib", "seaborn", "pandas", "optuna", "sqlalchemy", "scipy", "ipywidgets", "cleanlab")


def import_seconds(statement, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slowest_modules(n=8):
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import recipe_kit"], check=True,
                         capture_output=True, text=True).stderr
    rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:") and "|" in line]
    rows = [(int(cumulative), name.strip()) for _, cumulative, name in rows if cumulative.strip().isdigit()]
    return sorted(rows, reverse=True)[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python = import_seconds("pass", args.repeats)
    torch_s = import_seconds("import torch", args.repeats)
    kit_s = import_seconds("import recipe_kit", args.repeats)
    loaded = subprocess.run([sys.executable, "-c", f"import recipe_kit, sys; print([m for m in {HEAVY!r} "
                             "if m in sys.modules])"], check=True, capture_output=True, text=True).stdout.strip()
    print(f"python alone        {python:6.2f} s   (median of {args.repeats} fresh processes)")
    print(f"import torch        {torch_s:6.2f} s")
    print(f"import recipe_kit   {kit_s:6.2f} s   ({kit_s - torch_s:+.2f} s over torch)")
    print(f"heavy modules loaded by import recipe_kit: {loaded}")
    print("slowest modules (cumulative):")
    for micros, name in slowest_modules():
        print(f"  {micros / 1e6:6.2f} s  {name}")


if __name__ == "__main__":
    main()
