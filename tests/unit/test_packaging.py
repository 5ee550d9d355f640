"""Specification of the packaging: every code folder installs under ``robeing.*`` (DESIGN §1)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

TOP_PACKAGES = ("agents", "protocol", "broker")


@pytest.fixture(scope="module")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setuptools_config(repo_root: Path) -> dict[str, Any]:
    with open(repo_root / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def package_dirs(repo_root: Path) -> dict[str, Path]:
    """``robeing.<dotted path>`` → folder, for every folder holding an ``__init__.py``."""
    found: dict[str, Path] = {}
    for top in TOP_PACKAGES:
        for init in sorted((repo_root / top).rglob("__init__.py")):
            rel = init.parent.relative_to(repo_root)
            if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                continue
            found["robeing." + ".".join(rel.parts)] = init.parent
    return found


def test_top_packages_map_to_their_folders(setuptools_config: dict[str, Any]) -> None:
    """Expect robeing.agents, robeing.protocol and robeing.broker to map to the folders of the
    same name at the repository root."""
    assert setuptools_config["package-dir"] == {f"robeing.{top}": top for top in TOP_PACKAGES}


def test_every_subpackage_is_listed(repo_root: Path, setuptools_config: dict[str, Any]) -> None:
    """Given every folder under agents/, protocol/, broker/ that holds an __init__.py,
    Expect each listed in [tool.setuptools] packages as robeing.<dotted path>
    (a missing one would be left out of wheels)."""
    listed = set(setuptools_config["packages"])
    on_disk = package_dirs(repo_root)

    missing = sorted(set(on_disk) - listed)

    assert set(TOP_PACKAGES) <= {name.split(".")[1] for name in on_disk}
    assert missing == [], f"add to [tool.setuptools] packages: {missing}"


def test_every_listed_package_exists(repo_root: Path, setuptools_config: dict[str, Any]) -> None:
    """Expect every listed package to be a folder with an __init__.py (no stale entries)."""
    on_disk = package_dirs(repo_root)

    stale = sorted(set(setuptools_config["packages"]) - set(on_disk))

    assert stale == [], f"listed but not on disk: {stale}"


@pytest.mark.parametrize("top", TOP_PACKAGES)
def test_py_typed_ships_in_each_top_package(
    repo_root: Path, setuptools_config: dict[str, Any], top: str
) -> None:
    """Expect a py.typed marker in each top package, declared as package data."""
    assert (repo_root / top / "py.typed").is_file()
    assert "py.typed" in setuptools_config["package-data"][f"robeing.{top}"]
