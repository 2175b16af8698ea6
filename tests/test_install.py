"""The project's own install files: the lock agrees with pyproject.toml, and what the docs offer
installs with the extras that name it."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                       for r in extra]  # fmt: skip
    return [Requirement(r) for r in names]


def test_the_lock_pins_every_requirement_within_its_range():
    """A fresh clone installs what the tests passed with: every dependency of pyproject.toml
    (extras included, except the bench yardstick and torch, pinned by TORCH_SPEC) is locked at
    a version its range admits."""
    pins = locked_versions()
    for requirement in project_requirements():
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in ("gptff", "torch", "chgnet"):
            continue
        assert name in pins, f"{name} is not in constraints.txt: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_the_lock_does_not_pin_torch():
    assert "torch" not in locked_versions()  # TORCH_SPEC chooses the build (CPU or CUDA)


def test_the_phonon_example_of_the_flows_docs_runs():
    """docs/flows.md offers atomate2's PhononMaker with GPTFF; it needs phonopy and seekpath,
    which the flows extra did not install (ImportError)."""
    pytest.importorskip("atomate2")
    text = (ROOT / "docs" / "flows.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    block = next((b for b in blocks if "PhononMaker" in b), None)
    assert block is not None, "the PhononMaker example is no longer in docs/flows.md"
    namespace: dict = {}
    exec(block, namespace)
    assert type(namespace["phonon"]).__name__ == "PhononMaker"
