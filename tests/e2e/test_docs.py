"""Every shell and Python block of the README and docs/ that can run against `make up`, run as
written against a private stack like it: `make up`'s addresses become the stack's, and each
command must do what the docs say (tests/doc_blocks.py says which blocks, and how)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_blocks import ROOT, Block, all_blocks, for_stack, shell_script
from tests.e2e.conftest import GrpcurlStack

pytestmark = pytest.mark.e2e

RUN_HERE = [block for block in all_blocks() if block.runner == "tests/e2e/test_docs.py"]


def block_environment(stack: GrpcurlStack) -> dict[str, str]:
    """Our environment, with grpcurl and the `paysaga` command on PATH and the command
    pointed at the stack (as `make up`'s ports are its defaults)."""
    path = [str(ROOT / ".tools" / "bin"), str(Path(sys.executable).parent)]
    return {
        **os.environ,
        "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")]),
        "PAYSAGA_ORDER_ADDRESSES": stack.stack.order_address,
        "PAYSAGA_PAYMENT_ADDRESSES": stack.stack.payment_address,
    }


@pytest.mark.parametrize("block", RUN_HERE, ids=lambda block: block.name)
def test_doc_block_runs(stack: GrpcurlStack, block: Block) -> None:
    addresses = {
        "order": stack.stack.order_address,
        "payment": stack.stack.payment_address,
        "order-metrics": stack.stack.metrics_address("order"),
        "payment-metrics": stack.stack.metrics_address("payment"),
        "order-worker": stack.stack.process("order", role="worker").address,
        "payment-worker": stack.stack.process("payment", role="worker").address,
        "order-worker-metrics": stack.stack.process("order", role="worker").metrics_address or "0",
        "payment-worker-metrics": stack.stack.process("payment", role="worker").metrics_address
        or "0",
    }
    code = for_stack(block.code, addresses)
    if block.info == "sh":
        args = ["bash", "-c", shell_script(code, first_line=block.line + 1)]
    else:
        args = [sys.executable, "-c", code]
    done = subprocess.run(
        args,
        cwd=ROOT,
        env=block_environment(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (
        f"the block at {block.name} does not do what the docs say:\n{done.stderr}\n{done.stdout}"
    )
