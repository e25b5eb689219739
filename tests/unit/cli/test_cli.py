"""The `paysaga` command's parsing, addresses and formatting (no service needed)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paysaga.admin.v1 import admin_pb2
from services.cli import build_parser, parse_duration, parse_since, run
from services.cli.client import CommandError
from services.cli.commands import order_timeline
from services.cli.deadletters import owner
from services.cli.render import duration, hexdump, show_bytes, table
from services.cli.targets import BadAddress, resolve
from services.common.observability.build import pyproject_version
from services.common.operations.backlog import OutboxBacklog, Progress, stall_problems

pytestmark = pytest.mark.unit


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("250ms") == 0.25
    assert parse_duration("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match="e.g. 30s"):
        parse_duration("soon")


def test_since_takes_a_duration_or_a_time() -> None:
    ago = parse_since("1h")
    assert abs((datetime.now(UTC) - timedelta(hours=1) - ago).total_seconds()) < 5
    assert parse_since("2026-11-26T09:00:00") == datetime(2026, 11, 26, 9, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="neither"):
        parse_since("last tuesday")


def test_addresses_flags_env_defaults_and_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYSAGA_ORDER_ADDRESSES", raising=False)
    monkeypatch.setenv("PAYSAGA_PAYMENT_ADDRESSES", "10.0.0.2:7000,10.0.0.3:7000")
    targets = resolve(None, None)
    assert targets.order == ["127.0.0.1:50051"]
    assert targets.payment == ["10.0.0.2:7000", "10.0.0.3:7000"]
    assert resolve("h:1", None).order == ["h:1"]
    assert resolve(None, "127.0.0.1:50052", replicas=3).payment == [
        "127.0.0.1:50052",
        "127.0.0.1:50152",
        "127.0.0.1:50252",
    ]
    assert resolve("127.0.0.1:50051", None, replicas=2, roles="split").order == [
        "127.0.0.1:50051",
        "127.0.0.1:50151",
        "127.0.0.1:50061",
        "127.0.0.1:50161",
    ]
    with pytest.raises(BadAddress, match="choose all or split"):
        resolve(None, None, roles="both")


def test_without_roles_the_running_stacks_layout_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYSAGA_ORDER_ADDRESSES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve(None, None).order == ["127.0.0.1:50051"]  # no stack here: all
    state = tmp_path / "var" / "run" / "stack.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"db": "sqlite", "roles": "split"}))
    assert resolve(None, None).order == ["127.0.0.1:50051", "127.0.0.1:50061"]
    assert resolve(None, None, roles="all").order == ["127.0.0.1:50051"]  # the flag wins
    given = resolve("127.0.0.1:50051,127.0.0.1:50061", None)  # as make up tells the console
    assert given.order == ["127.0.0.1:50051", "127.0.0.1:50061"]
    assert given.payment == ["127.0.0.1:50052", "127.0.0.1:50062"]
    state.write_text("not json")
    assert resolve(None, None).order == ["127.0.0.1:50051"]
    for bad in ("nohost", "h:port", "h:70000", ","):
        with pytest.raises(BadAddress):
            resolve(bad, None)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (
        [],
        ["order", "timeline"],
        ["orders", "stuck"],
        ["orders", "held"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "redrive"],
        ["status"],
    ):
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*argv, "--help"])
        assert done.value.code == 0
        assert "usage: paysaga" in capsys.readouterr().out


def test_listings_take_json() -> None:
    parser = build_parser()
    for argv in (
        ["order", "timeline", "x"],
        ["orders", "stuck"],
        ["orders", "held"],
        ["dlq", "list"],
        ["dlq", "show", "orders:0:1"],
        ["dlq", "redrive", "orders:0:1"],
        ["dlq", "redrive", "--dry-run", "--all", "--topic", "orders"],
        ["status"],
    ):
        assert parser.parse_args([*argv, "--json"]).json


def test_held_and_dry_run_options() -> None:
    parser = build_parser()
    held = parser.parse_args(["orders", "held", "--older-than", "2m", "--limit", "5"])
    assert (held.older_than, held.limit) == (120, 5)
    assert parser.parse_args(["orders", "held"]).older_than == 30
    assert parser.parse_args(["dlq", "redrive", "orders:0:1", "--dry-run"]).dry_run
    assert not parser.parse_args(["dlq", "redrive", "orders:0:1"]).dry_run


def test_bad_input_is_a_message_and_an_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--order", "nohost", "status"]) == 2
    assert "not HOST:PORT" in capsys.readouterr().err
    assert run(["dlq", "show", "not-an-id"]) == 1
    assert "look like payments:3:17" in capsys.readouterr().err
    assert run(["dlq", "redrive"]) == 1
    assert "--all --topic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        run(["dlq", "list", "--topic", "nope"])
    assert done.value.code == 2
    assert "no saga topic 'nope'" in capsys.readouterr().err


def test_a_service_that_does_not_answer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: nothing listens there.
    for command in (["orders", "stuck"], ["orders", "held"]):
        assert run(["--order", "127.0.0.1:1", "--timeout", "2s", *command]) == 1
        err = capsys.readouterr().err
        assert "cannot reach the order service at 127.0.0.1:1" in err and "Traceback" not in err


def test_dead_letter_ids_name_their_service() -> None:
    assert owner("orders:0:5") == "payment"
    assert owner("payments:3:17") == "payment"
    assert owner("transactions:1:2") == "order"
    for bad in ("order-updates:0:1", "payments:3", "payments"):
        with pytest.raises(CommandError):
            owner(bad)


def test_formatting() -> None:
    assert table(["A", "BB"], [["xxx", 1], ["y", 22]]) == "A    BB\nxxx  1\ny    22"
    assert table(["A"], []) == "(none)"
    assert [duration(s) for s in (0.25, 4.24, 221, 7500, 90000)] == [
        "250ms",
        "4.2s",
        "03:41",
        "2h05m",
        "1d01h",
    ]
    assert show_bytes(b"paysaga/order") == "paysaga/order"
    assert show_bytes(b"\x00\xff") == "hex:00ff"
    assert hexdump(b"AB\x00") == "00000000  41 42 00" + " " * 40 + "  AB."


def test_stall_rule() -> None:
    now = datetime.now(UTC)
    quiet = OutboxBacklog(pending=0, oldest_age_s=0, parked=0)
    idle = Progress(now - timedelta(minutes=5), now - timedelta(seconds=45), 12, quiet)
    assert stall_problems(idle, stalled_after_s=30, now=now) == [
        "consumer not progressing: 12 record(s) waiting on its partitions, "
        "last batch applied 45 s ago"
    ]
    caught_up = Progress(now - timedelta(minutes=5), now - timedelta(minutes=4), 0, quiet)
    assert stall_problems(caught_up, stalled_after_s=30, now=now) == []
    backlog = OutboxBacklog(pending=3, oldest_age_s=90, parked=1)
    relay = Progress(now, now, None, backlog, dead_workers=["OutboxRelay"])
    assert stall_problems(relay, stalled_after_s=30, now=now) == [
        "worker OutboxRelay is not running",
        "relay not progressing: 3 outbox row(s) unpublished, the oldest 90 s old",
        "1 outbox row(s) parked (Kafka refused them)",
    ]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"paysaga {importlib.metadata.version('paysaga')}"


def test_version_falls_back_to_pyproject(tmp_path: Path) -> None:
    assert pyproject_version(Path("pyproject.toml")) == importlib.metadata.version("paysaga")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert pyproject_version(tmp_path / "pyproject.toml") == "unknown"
    assert pyproject_version(tmp_path / "missing.toml") == "unknown"


class _TimelineClient:
    """Answers GetOrderTimeline as each service would: the steps it recorded."""

    timeout_s = 1.0

    def __init__(self, steps: dict[str, list[Any]]) -> None:
        self.steps = steps

    def first(self, service: str, call: Any) -> Any:
        answer = admin_pb2.GetOrderTimelineResponse(steps=self.steps[service], status="COMPLETED")
        stub = type("Stub", (), {"GetOrderTimeline": lambda _self, _request, timeout: answer})()
        return call(stub)


def test_the_timeline_shows_each_event_by_the_random_end_of_its_id() -> None:
    """Ids begin with their time (UUIDv7): two events of one moment share their first eight
    characters, so the ID column shows the last eight, which pair produced with applied."""
    purchased = "0193a1b2-c3d4-7e5f-8a6b-111111111111"
    decided = "0193a1b2-c3d4-7e5f-8a6b-222222222222"
    at = Timestamp(seconds=1_800_000_000)

    def step(kind: Any, service: str, event_id: str, topic: str) -> Any:
        return admin_pb2.Step(
            kind=kind, service=service, event_id=event_id, topic=topic, time=at, partition=-1
        )

    client = _TimelineClient(
        {
            "order": [step(admin_pb2.STEP_KIND_PRODUCED, "order", purchased, "orders")],
            "payment": [
                step(admin_pb2.STEP_KIND_APPLIED, "payment", purchased, "orders"),
                step(admin_pb2.STEP_KIND_PRODUCED, "payment", decided, "payments"),
            ],
        }
    )
    args = argparse.Namespace(order_id="some-order", json=False)
    shown = order_timeline(client, args)  # type: ignore[arg-type]
    assert shown.count("11111111") == 2 and shown.count("22222222") == 1, shown
    assert "0193a1b2" not in shown
