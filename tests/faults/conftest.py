"""Fixtures of the fault suite: private Kafka and PostgreSQL for the session, fresh stacks per
scenario."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.install import check_java, ensure_jars
from deploy.kafka.runtime import KafkaRuntime, KafkaRuntimeError
from deploy.postgres.runtime import PostgresRuntime
from tests.faults.report import RESULTS, format_table
from tests.faults.stack import FaultStack
from tests.kafka_broker import _free_ports


@pytest.fixture(scope="session")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaRuntime]:
    """A broker of this suite alone (scenarios kill it), topics created; stopped at the end."""
    base = tmp_path_factory.mktemp("faults-kafka")
    port, controller_port = _free_ports(2)
    broker = KafkaRuntime(
        port=port,
        controller_port=controller_port,
        data_dir=base / "data",
        run_dir=base / "run",
        log_file=base / "kafka.log",
        detach=False,
    )
    try:
        check_java()
        ensure_jars()
        broker.start()
        broker.create_topics()
    except KafkaRuntimeError as exc:
        broker.stop()
        pytest.fail(f"could not start the fault suite's Kafka broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def stack(
    fault_broker: KafkaRuntime, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[FaultStack]:
    """Both services, fresh databases and consumer groups; stopped (and the broker up) after."""
    with FaultStack(fault_broker, tmp_path, request.node.name).running() as fault_stack:
        yield fault_stack


@pytest.fixture
def scaled_stack(
    kafka_cluster: KafkaCluster,
    postgres_server: PostgresRuntime,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[FaultStack]:
    """Two replicas of each service on new PostgreSQL databases over the 3-node cluster."""
    fault_stack = FaultStack(
        kafka_cluster,
        tmp_path,
        request.node.name,
        db="postgres",
        replicas=2,
        postgres=postgres_server,
    )
    with fault_stack.running():
        yield fault_stack


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the per-scenario table, also without -s."""
    if not RESULTS:
        return
    terminalreporter.write_sep("=", "fault-injection summary")
    for line in format_table(RESULTS):
        terminalreporter.write_line(line)
