"""What this build is: the package version `paysaga --version` prints and the
`paysaga_build_info` metric carries."""

from __future__ import annotations

import importlib.metadata
import platform
import tomllib
from functools import cache
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


@cache
def package_version() -> str:
    """The installed `paysaga` distribution's version; from a checkout that is not
    installed, pyproject.toml's; "unknown" when neither says."""
    try:
        return importlib.metadata.version("paysaga")
    except importlib.metadata.PackageNotFoundError:
        return pyproject_version(_PYPROJECT)


def pyproject_version(path: Path) -> str:
    """`[project] version` of a pyproject.toml, or "unknown" if it has none."""
    try:
        with path.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def python_version() -> str:
    """The interpreter's version, e.g. 3.12.7."""
    return platform.python_version()
