"""Every number the notebooks' text states is printed by the notebook itself, or cited.

The course teaches that a claim needs evidence, so its own prose is held to it: a decimal number or a
percentage in a markdown cell must appear in the committed outputs of the same notebook (within the
rounding of the prose), or be listed in CITED below with its source. Integers are structure (sections,
epochs, widths) and are not checked; neither are code spans (formulas, names) nor the interview
questions and their answers (hypothetical numbers). Claims of direction ("beats", "hurts") are checked
where they are made: by assertions under CLAIMS in the notebooks, which nbval runs.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

CITED = {  # notebook -> {number as written in the prose: its source}
    "01_become_one_with_the_data.ipynb": {
        "83.5%": "Xiao et al. 2017, Fashion-MNIST paper: human performance"},
    "04_regularize.ipynb": {
        "0.19": "docs/lineage_measurements.md: augmentation after 20 epochs, +0.19 ± 0.27 point",
        "0.27": "docs/lineage_measurements.md: its paired standard error"},
    "03_overfit.ipynb": {
        "92%": "Fashion-MNIST benchmark table: 2 conv + pooling (TensorFlow doc) 91.6%"},
    "06_squeeze.ipynb": {
        "2.2": "benchmarks/speedups.py --model vgg on a Xeon with AMX (README)",
        "30%": "an illustration of a soft target, not a measurement",
        "93.9%": "Fashion-MNIST benchmark table: Google AutoML, 24 compute hours",
        "94.0%": "the course's target; docs/notebook6_paths.md records what each path reaches",
        "94.23%": "docs/notebook6_paths.md: the final test accuracy where bfloat16 is fast (24 epochs)",
        "0.64": "docs/notebook6_paths.md: distilled student vs hard labels where bfloat16 is fast (1 epoch)",
        "0.19": "docs/notebook6_paths.md: its paired standard error",
        "0.15": "docs/notebook6_paths.md: distilled student vs hard labels, 2 epochs, AVX2 path (earlier version)",
        "0.17": "docs/notebook6_paths.md: its paired standard error"},
}
NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(\s?%)?")


def numbers_printed(cells):
    """Every number in the text outputs, and each percentage also as a fraction (and vice versa)."""
    text = []
    for cell in cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                text.append("".join(output["text"]))
            elif "text/plain" in output.get("data", {}):
                text.append("".join(output["data"]["text/plain"]))
    values = []
    for match in NUMBER.finditer("\n".join(text).replace(",", "")):
        value = float(match.group(1))
        values += [value, value / 100, value * 100]
    return values


def numbers_stated(markdown):
    """(number as written, value, rounding tolerance) for each decimal or percentage in the prose."""
    markdown = re.sub(r"<details>.*?</details>", "", markdown, flags=re.DOTALL)   # interview Q&A
    markdown = re.sub(r"`[^`]*`", "", markdown)                                   # code spans
    markdown = re.sub(r"\]\([^)]*\)", "]", markdown)                              # link targets
    for match in NUMBER.finditer(markdown.replace("10 000", "10000")):
        digits, percent = match.group(1), match.group(2)
        if "." in digits or percent:
            decimals = len(digits.split(".")[1]) if "." in digits else 0
            yield match.group(0).replace(" ", ""), float(digits), 0.5 * 10 ** -decimals + 1e-9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_number_in_the_prose_is_printed_or_cited(path):
    cells = json.loads(path.read_text())["cells"]
    printed = numbers_printed([c for c in cells if c["cell_type"] == "code"])
    cited = CITED.get(path.name, {})
    unbacked = [written for cell in cells if cell["cell_type"] == "markdown"
                for written, value, tolerance in numbers_stated("".join(cell["source"]))
                if written not in cited and not any(abs(value - p) <= tolerance for p in printed)]
    assert not unbacked, f"{path.name}: numbers in the text that no output prints and CITED does not list: {unbacked}"


def test_cited_numbers_are_still_in_the_prose():
    for name, numbers in CITED.items():
        prose = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / name).read_text())["cells"]
                        if c["cell_type"] == "markdown").replace(" %", "%")
        for written in numbers:
            assert written in prose, f"{name}: CITED lists {written}, which the text no longer states"
