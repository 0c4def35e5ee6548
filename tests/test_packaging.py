"""pyproject.toml and environment.yml declare the same dependencies; the Makefile and CI agree
with the README."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    listed = {_norm(m) for m in re.findall(r"^\s+- (\S.*)$", pip_block, re.M)} - {"-e."}
    assert listed == declared, (f"only in environment.yml: {sorted(listed - declared)}; "
                                f"only in pyproject: {sorted(declared - listed)}")
    assert re.search(rf"python>={project['requires-python'].lstrip('>=')}", text)


def test_runtime_dependencies_are_lower_bounds_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for v in project["optional-dependencies"].values() for r in v]
    assert all("==" not in r and "<" not in r for r in reqs), reqs
    names = {re.split(r"[<>=!~ ]", r)[0].lower() for r in project["dependencies"]}
    assert names == {"torch", "torchvision", "numpy", "matplotlib", "pillow", "tqdm", "scipy",
                     "fsrs", "genanki"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, re.M)
    assert commands[:2] == ["make demo", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
