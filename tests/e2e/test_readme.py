"""The README's Python client snippet, run as written against the real services."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.doc_blocks import CLIENT_EXAMPLE, ROOT, blocks
from tests.e2e.conftest import GrpcurlStack

pytestmark = pytest.mark.e2e


def readme_snippet() -> str:
    """The Python block between `<!-- client-example:start -->` and `...:end -->`."""
    found = [
        block
        for block in blocks(ROOT / "README.md")
        if block.marker == CLIENT_EXAMPLE and block.info == "python"
    ]
    assert len(found) == 1, "README.md must hold one client-example block"
    assert "<!-- client-example:end -->" in (ROOT / "README.md").read_text()
    return found[0].code


def test_readme_client_snippet_runs(stack: GrpcurlStack) -> None:
    code = readme_snippet()
    code = code.replace("127.0.0.1:50051", stack.stack.order_address)
    code = code.replace("127.0.0.1:50052", stack.stack.payment_address)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ORDER_STATUS_COMPLETED ", "balance of user 2: 100.00"]
