"""The README's Python client snippet, run as written against the real services."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from deploy.stack.config import ROOT
from tests.e2e.conftest import GrpcurlStack

pytestmark = pytest.mark.e2e


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(
        r"<!-- client-example:start -->\s*```python\n(.*?)```\s*<!-- client-example:end -->",
        text,
        re.S,
    )
    assert found, "README.md lost its client-example block"
    return found.group(1)


def test_readme_client_snippet_runs(stack: GrpcurlStack) -> None:
    code = readme_snippet()
    code = code.replace("127.0.0.1:50051", stack.stack.order_address)
    code = code.replace("127.0.0.1:50052", stack.stack.payment_address)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ORDER_STATUS_COMPLETED ", "balance of user 2: 100.00"]
