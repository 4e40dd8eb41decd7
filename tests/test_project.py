"""The project's promises about itself: pyproject and environment.yml agree, README and CI agree."""
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_names(lines):
    return {re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-"): line.strip()
            for line in lines}


def test_environment_yml_lists_the_same_packages_and_ranges_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    yml = (ROOT / "environment.yml").read_text()
    pip_section = yml.split("- pip:", 1)[1]
    listed = [line.strip()[2:] for line in pip_section.splitlines() if line.strip().startswith("- ")]
    assert requirement_names(listed) == requirement_names(wanted)


def test_constraints_pin_every_dependency_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pins = [l for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert all("==" in p for p in pins)
    assert set(requirement_names(pins)) == set(requirement_names(wanted))


def test_readme_gives_exactly_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./course open" in readme and "./course test" in readme
    assert "exec ./course test" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_every_notebook_that_exists():
    readme = (ROOT / "README.md").read_text()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.name}" in readme, f"README does not link {notebook.name}"


def test_course_script_without_arguments_prints_usage():
    result = subprocess.run(["bash", str(ROOT / "course")], capture_output=True, text=True)
    assert result.returncode == 2 and "./course test" in result.stdout
