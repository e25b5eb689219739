"""The console as the stack launcher runs it (`make up`, `make ps`, `make down`):
deploy.stack.processes.ConsoleProcess and deploy.stack.cli.console_process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.stack import cli
from deploy.stack.config import CONSOLE, ROOT
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


def test_paysaga_console_starts_the_console_with_the_replicas_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`paysaga --order A console` runs `python -m services.console` with the addresses: the
    flag wins over a bad PAYSAGA_ORDER_ADDRESSES (else the console would name it); off
    loopback without TLS and auth, the console then refuses at once and says why."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYSAGA_")},
        "PAYSAGA_CONSOLE_ADDRESS": "0.0.0.0:8099",
        "PAYSAGA_ORDER_ADDRESSES": "not-an-address",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "--order", "127.0.0.1:7001", "console"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to serve 0.0.0.0:8099 without TLS and authentication" in done.stderr
