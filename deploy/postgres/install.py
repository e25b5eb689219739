"""What the local server needs before it runs: PostgreSQL's binaries and a clean environment.

The binaries are found in PG_BIN, else through `pg_config --bindir`, else in the newest
/usr/lib/postgresql/*/bin, else on the PATH. The errors of the whole package live here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("initdb", "postgres", "psql")


class PostgresRuntimeError(RuntimeError):
    """The server could not be found, initialised, started or stopped; the message says why."""


class PostgresNotFoundError(PostgresRuntimeError):
    """No PostgreSQL server binaries on this machine."""


class PortInUseError(PostgresRuntimeError):
    """The port the server needs is held by another process."""


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,), so 15 sorts after 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_bin_dir() -> Path:
    """PG_BIN, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    wanted = ", ".join(BINARIES)
    if explicit := os.environ.get("PG_BIN"):
        if _has_binaries(Path(explicit)):
            return Path(explicit)
        raise PostgresNotFoundError(
            f"PG_BIN={explicit} does not hold {wanted}: point it at the directory holding "
            "initdb, or unset it and install the `postgresql` package (e.g. `apt-get install "
            "postgresql`)"
        )
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for bin_dir in candidates:
        if _has_binaries(bin_dir):
            return bin_dir
    raise PostgresNotFoundError(
        f"PostgreSQL server binaries ({wanted}) not found via pg_config, /usr/lib/postgresql/*/bin "
        "or PATH: install the `postgresql` package (e.g. `apt-get install postgresql`) "
        "or set PG_BIN to the directory holding initdb"
    )


def server_version(bin_dir: Path) -> str:
    """The version of the server binaries in `bin_dir`, e.g. '15.18'."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True
    ).stdout
    found = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out)
    return found.group(1) if found else "unknown"


def clean_env() -> dict[str, str]:
    """Our environment without libpq's PG* variables (PGSSLMODE, PGSERVICE, ... would leak in)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}
