"""A local broker's JVM flags: ours by default, Kafka's own variables where a user sets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.install import KafkaRuntimeError, broker_jvm_opts, java_command
from deploy.kafka.runtime import KafkaRuntime

pytestmark = pytest.mark.unit


def test_by_default_a_lone_broker_gets_a_small_heap_g1_and_both_compilers() -> None:
    flags = broker_jvm_opts({})
    assert flags[:2] == ["-Xms512m", "-Xmx512m"]
    assert "-XX:+UseG1GC" in flags
    assert not any(flag.startswith("-XX:TieredStopAtLevel") for flag in flags)


def test_by_default_a_cluster_node_gets_the_quick_compiler_only() -> None:
    flags = broker_jvm_opts({}, cluster_nodes=3)
    assert flags[:2] == ["-Xms512m", "-Xmx512m"]
    assert "-XX:+UseG1GC" in flags
    assert "-XX:TieredStopAtLevel=1" in flags


def test_a_cluster_node_keeps_the_user_s_performance_flags() -> None:
    env = {"KAFKA_JVM_PERFORMANCE_OPTS": "-XX:+UseParallelGC"}
    assert broker_jvm_opts(env, cluster_nodes=3) == ["-Xms512m", "-Xmx512m", "-XX:+UseParallelGC"]


@pytest.mark.parametrize("size", [1, 3])
def test_each_node_of_a_cluster_is_started_with_its_cluster_s_flags(
    size: int, tmp_path: Path
) -> None:
    cluster = KafkaCluster(
        size,
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "log",
    )
    for node in cluster.nodes:
        broker = node._java("kafka.Kafka", "server.properties", broker=True)
        tool = node._java("kafka.tools.StorageTool", "format")
        assert ("-XX:TieredStopAtLevel=1" in broker) is (size > 1)
        assert tool[1:3] == ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


def test_a_broker_of_its_own_gets_both_compilers(tmp_path: Path) -> None:
    node = KafkaRuntime(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", log_file=tmp_path / "kafka.log"
    )
    assert "-XX:TieredStopAtLevel=1" not in node._java("kafka.Kafka", broker=True)


def test_kafka_s_own_variables_replace_each_part() -> None:
    env = {
        "KAFKA_HEAP_OPTS": "-Xmx1g",
        "KAFKA_JVM_PERFORMANCE_OPTS": "-XX:+UseG1GC -XX:MaxGCPauseMillis=20",
        "KAFKA_OPTS": "-Dsome.property='a value'",
    }
    assert broker_jvm_opts(env) == [
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Dsome.property=a value",
    ]


def test_a_blank_variable_keeps_the_default() -> None:
    assert broker_jvm_opts({"KAFKA_HEAP_OPTS": "  ", "KAFKA_JVM_PERFORMANCE_OPTS": ""}) == (
        broker_jvm_opts({})
    )


def test_the_broker_command_carries_them_and_the_storage_tool_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_HEAP_OPTS", "-Xmx768m")
    broker = java_command("kafka.Kafka", "server.properties", log_file=Path("k.log"), broker=True)
    tool = java_command("kafka.tools.StorageTool", log_file=Path("k.log"))
    assert broker[:2] == ["java", "-Xmx768m"]
    assert broker[-2:] == ["kafka.Kafka", "server.properties"]
    assert "-Xmx768m" not in tool
    node = java_command("kafka.Kafka", log_file=Path("k.log"), broker=True, cluster_nodes=3)
    assert "-XX:TieredStopAtLevel=1" in node
    assert "-XX:TieredStopAtLevel=1" not in broker


def test_an_unreadable_variable_is_named() -> None:
    with pytest.raises(KafkaRuntimeError, match="KAFKA_OPTS="):
        broker_jvm_opts({"KAFKA_OPTS": "-Dx='unclosed"})
