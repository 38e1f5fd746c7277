"""pyproject.toml and environment.yml describe the same environment."""

import re

import tomllib
import yaml

from helpers import ROOT

# conda-forge spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {_name(r) for r in project["dependencies"]}
    pyproject |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}

    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = set()
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            conda |= {_name(r) for r in entry["pip"]}
        elif _name(entry) not in ("python", "pip"):
            conda.add(CONDA_TO_PYPI.get(_name(entry), _name(entry)))

    assert conda == pyproject, f"only in environment.yml: {conda - pyproject}; only in pyproject: {pyproject - conda}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
