"""Which part of a service a process runs: `--role` over <SVC>_ROLE over the default, and a
role that is none of them refused with what to set instead."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.observability import metrics
from services.common.persistence.migrate import migrate
from services.common.runtime import entrypoint
from services.common.runtime.roles import ROLES, BadRole, check_role, runs_workers, serves_api
from services.order.__main__ import MIGRATIONS
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue

pytestmark = pytest.mark.unit


class _Built:
    """What `build` returned: a process that stops at once, with no workers."""

    workers: list[Any] = []

    def run_until_signalled(self) -> int:
        return 0


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated Order database in ORDER_DATABASE_URL; what a run of the command line sets
    for the whole process (the root logger, metrics recording) is put back afterwards."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(metrics, "_recording", metrics._recording)
    level = root.level
    url = f"sqlite:///{tmp_path}/order.db"
    migrate(url, MIGRATIONS)
    monkeypatch.setenv("ORDER_DATABASE_URL", url)
    monkeypatch.setenv("ORDER_METRICS_ADDRESS", "0")
    monkeypatch.setenv("ORDER_LOG_FORMAT", "text")
    monkeypatch.delenv("ORDER_ROLE", raising=False)
    yield url
    root.setLevel(level)


def _serve(argv: list[str]) -> tuple[int, list[str]]:
    """Run the Order service's command line; the exit status and the roles it was built in."""
    roles: list[str] = []

    def build(settings: OrderSettings) -> Any:
        roles.append(settings.role)
        return _Built()

    status = entrypoint.run(
        name="order",
        settings=OrderSettings,
        migrations=MIGRATIONS,
        build=build,
        seed=seed_catalogue,
        argv=argv,
    )
    return status, roles


def test_the_roles_and_what_each_runs() -> None:
    assert ROLES == ("all", "api", "worker")
    assert [serves_api(r) for r in ROLES] == [True, True, False]
    assert [runs_workers(r) for r in ROLES] == [True, False, True]
    assert check_role("worker") == "worker"


def test_a_role_that_is_none_says_what_to_set() -> None:
    with pytest.raises(BadRole, match=r"ORDER_ROLE='workers' is not a role: choose api .*worker"):
        check_role("workers", "ORDER_ROLE")


def test_all_by_default_then_the_environment_then_the_flag(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _serve([]) == (0, ["all"])
    monkeypatch.setenv("ORDER_ROLE", "worker")
    assert _serve(["serve"]) == (0, ["worker"])
    assert _serve(["serve", "--role", "api"]) == (0, ["api"]), "the flag wins"
    assert _serve(["--role", "all"]) == (0, ["all"]), "serve is the default command"


def test_a_bad_role_in_the_environment_is_refused_before_anything_starts(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDER_ROLE", "api,worker")
    assert _serve([]) == (2, []), "nothing is built"
    assert "ORDER_ROLE='api,worker' is not a role: choose api" in capsys.readouterr().err
    # The flag puts it right; migrate does not care which role a process would serve.
    assert _serve(["--role", "api"]) == (0, ["api"])
    assert _serve(["migrate"]) == (0, [])


def test_a_bad_role_flag_is_a_usage_error(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _serve(["serve", "--role", "both"])
    assert exited.value.code == 2
    assert "argument --role: invalid choice: 'both' (choose from" in capsys.readouterr().err


def test_a_setting_the_service_cannot_read_names_the_variable(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDER_GRPC_MAX_WORKERS", "many")
    assert _serve([]) == (2, [])
    assert "ORDER_GRPC_MAX_WORKERS='many': Input should be a valid integer" in (
        capsys.readouterr().err
    )
