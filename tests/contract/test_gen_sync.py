"""gen/ is exactly what `make gen` makes from protos/: nobody edited it, nobody forgot it."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.descriptors import GEN_DIR, PROTO_DIR, generated_proto_files

pytestmark = pytest.mark.contract

# The same invocation as the `gen` target in mk/contract.mk.
PACKAGE_INITS = (
    "paysaga/__init__.py",
    "paysaga/v1/__init__.py",
    "paysaga/py.typed",
    "paysaga/admin/__init__.py",
    "paysaga/admin/v1/__init__.py",
)


def _generate(out: Path) -> None:
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
        *(str(PROTO_DIR / p) for p in generated_proto_files()),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=PROTO_DIR.parent)
    for init in PACKAGE_INITS:
        (out / init).touch()


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in (root / "paysaga").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_gen_is_in_sync_with_protos(tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh, committed = _files(tmp_path), _files(GEN_DIR)
    assert committed - fresh == set(), "gen/ has files no proto makes: run `make gen`"
    assert fresh - committed == set(), "gen/ lacks generated files: run `make gen`"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, GEN_DIR, sorted(fresh), shallow=False)
    assert mismatch + errors == [], "gen/ differs from protos/: run `make gen`"
