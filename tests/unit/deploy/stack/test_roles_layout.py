"""The stack's layouts (ROLES=all|split): process names, ports, roles, and what `make ps` and
`make down` find by the pid files (nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.stack import cli
from deploy.stack.config import StackConfigError, process_name, role_address
from deploy.stack.processes import replicas_found
from deploy.stack.stack import Stack, check_layout, check_roles

pytestmark = pytest.mark.unit


def test_a_layout_that_is_not_one_says_what_to_choose() -> None:
    with pytest.raises(StackConfigError, match=r"ROLES='both': choose ROLES=all .* ROLES=split"):
        check_layout("sqlite", 1, roles="both")
    assert check_roles("split") == "split"
    assert cli.main(["--roles", "both", "check"]) == 1


def test_split_runs_an_api_and_a_worker_process_per_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("ORDER_GRPC_ADDRESS", "PAYMENT_GRPC_ADDRESS", "ORDER_METRICS_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    stack = Stack(tmp_path, db="postgres", replicas=2, kafka="127.0.0.1:9092", roles="split")
    order = stack.processes["order"]
    assert [p.name for p in order] == [
        "order-0-api",
        "order-0-worker",
        "order-1-api",
        "order-1-worker",
    ]
    assert [p.instance_id for p in order] == [p.name for p in order], "each its own identity"
    assert [p.address for p in order] == [
        "127.0.0.1:50051",
        "127.0.0.1:50061",
        "127.0.0.1:50151",
        "127.0.0.1:50161",
    ]
    assert [p.metrics_address for p in order] == [
        "127.0.0.1:9101",
        "127.0.0.1:9111",
        "127.0.0.1:9201",
        "127.0.0.1:9211",
    ]
    assert [p.process_env()["ORDER_ROLE"] for p in order] == ["api", "worker"] * 2
    assert [p.pid_file.name for p in order][:2] == ["order-0-api.pid", "order-0-worker.pid"]
    # The public API is the api processes'; every process answers the admin API.
    assert stack.addresses("order") == ["127.0.0.1:50051", "127.0.0.1:50151"]
    assert stack.address("payment", 1) == "127.0.0.1:50152"
    assert stack.admin_addresses("payment") == [
        "127.0.0.1:50052",
        "127.0.0.1:50152",
        "127.0.0.1:50062",
        "127.0.0.1:50162",
    ]
    assert stack.process("order", 1, "worker").name == "order-1-worker"
    assert stack.metrics_address("order", 1) == "127.0.0.1:9201"
    ports = [int(p.address.rsplit(":", 1)[1]) for p in stack.all_processes()]
    metrics = [int(p.metrics_address.rsplit(":", 1)[1]) for p in stack.all_processes()]
    assert len(set(ports)) == len(ports) == 8
    assert not {8088, 9092, 9093, 9192, 9193} & set(metrics), "console and Kafka keep theirs"


def test_all_keeps_one_process_per_replica_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDER_GRPC_ADDRESS", raising=False)
    stack = Stack(tmp_path, db="postgres", replicas=2, kafka="127.0.0.1:9092")
    assert [p.name for p in stack.processes["order"]] == ["order", "order-1"]
    assert [p.instance_id for p in stack.processes["order"]] == ["order-0", "order-1"]
    assert stack.process("order").process_env()["ORDER_ROLE"] == "all"
    assert stack.admin_addresses("order") == stack.addresses("order")


def test_free_ports_give_the_workers_ports_of_their_own(tmp_path: Path) -> None:
    stack = Stack(tmp_path, kafka="127.0.0.1:9092", ports="free", roles="split")
    addresses = [p.address for p in stack.all_processes()]
    metrics = [p.metrics_address for p in stack.all_processes()]
    assert len(set(addresses)) == len(set(metrics)) == 4


def test_names_and_addresses_of_one_process() -> None:
    assert process_name("order", 0) == "order"
    assert process_name("order", 2) == "order-2"
    assert process_name("payment", 0, "worker") == "payment-0-worker"
    assert role_address("127.0.0.1:50151", "worker") == "127.0.0.1:50161"
    assert role_address("127.0.0.1:50151", "api") == "127.0.0.1:50151"
    assert role_address("0", "worker") == "0", "switched off stays off"


def test_ps_and_down_find_each_layout_by_its_pid_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("order", "order-1", "payment-0-api", "payment-0-worker", "order-x"):
        (run / f"{name}.pid").write_text("1\n")
    assert replicas_found(run, "order") == {0: "all", 1: "all"}
    assert replicas_found(run, "payment") == {0: "split"}
    monkeypatch.setattr(cli, "VAR", tmp_path)
    monkeypatch.delenv("PAYMENT_GRPC_ADDRESS", raising=False)
    found = {(p.name, p.role, p.address) for p in cli.found_processes()}
    assert ("payment-0-worker", "worker", "127.0.0.1:50062") in found
    assert ("payment-0-api", "api", "127.0.0.1:50052") in found
    assert ("order-1", "all", "127.0.0.1:50151") in found
    # Where nothing runs, the layout asked for.
    wanted = {p.name for p in cli.found_processes(replicas=3, roles="split")}
    assert {"order-2-api", "order-2-worker", "payment-2-worker"} <= wanted
