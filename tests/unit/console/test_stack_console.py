"""The console as the stack launcher runs it (`make up`, `make ps`, `make down`):
deploy.stack.processes.ConsoleProcess and deploy.stack.cli.console_process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.stack import cli
from deploy.stack.config import CONSOLE
from deploy.stack.processes import ConsoleProcess


def test_the_console_is_pointed_at_every_replica(tmp_path: Path) -> None:
    process = ConsoleProcess(
        CONSOLE,
        "127.0.0.1:8099",
        {"PAYSAGA_CONSOLE_STATUS_POLL_S": "1"},
        run_dir=tmp_path,
        log_dir=tmp_path,
        order_addresses=["127.0.0.1:50051", "127.0.0.1:50151"],
        payment_addresses=["127.0.0.1:50052", "127.0.0.1:50152"],
    )
    env = process.process_env()
    assert env["PAYSAGA_CONSOLE_ADDRESS"] == "127.0.0.1:8099"
    assert env["PAYSAGA_ORDER_ADDRESSES"] == "127.0.0.1:50051,127.0.0.1:50151"
    assert env["PAYSAGA_PAYMENT_ADDRESSES"] == "127.0.0.1:50052,127.0.0.1:50152"
    assert env["PAYSAGA_CONSOLE_STATUS_POLL_S"] == "1"
    assert process.pid_file == tmp_path / "console.pid"
    assert process.log_file == tmp_path / "console.log"
    assert process.url == "http://127.0.0.1:8099/"
    assert process.pid() is None and not process.answers(timeout_s=0.2)


def test_ps_and_down_find_the_console_make_up_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "VAR", tmp_path)
    monkeypatch.setattr(cli, "STATE_FILE", tmp_path / "stack.json")
    monkeypatch.delenv("PAYSAGA_CONSOLE_ADDRESS", raising=False)
    found = cli.console_process()
    assert found.url == "http://127.0.0.1:8088/"
    assert found.pid_file == tmp_path / "run" / "console.pid"
    (tmp_path / "stack.json").write_text(json.dumps({"tls": True, "ca_file": "/ca.pem"}))
    secured = cli.console_process()
    assert secured.url == "https://127.0.0.1:8088/", "a stack started with TLS=1"
    assert secured.ca_file == "/ca.pem"
