"""The Helm chart against the code: render it with helm, then compare what it sets with what
the services read, so that chart and code cannot drift.

Each check returns the mismatches it finds, as sentences that say what to fix (an empty list:
none), so a test asserts there are none, and a test of the test hands a check code that was
changed (a renamed setting) and asserts the mismatch is reported.

- Environment: every variable the chart gives a service is read by it (its settings classes,
  the Kafka client variables, OpenTelemetry's, libpq's password), and the values parse.
- Ports and probes: the addresses in the environment are the container's ports, the probes
  ask the health port for `paysaga.liveness` and for the service's own name.
- Topics: the KafkaTopics are the code's topic table, with the retention and segment.ms the
  local stack sets, the replication production needs; KEDA follows the consumer groups on
  the topics each service consumes, never beyond the partitions.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

from deploy.kafka.topics import replication_for, retention_ms, segment_ms
from services.common.messaging import kafka
from services.common.operations.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from services.common.runtime.roles import serves_api
from services.common.security.auth_settings import AuthSettings
from services.common.security.policy import PolicySettings
from services.common.security.tls import TlsSettings
from services.common.serving.grpc_app import LIVENESS
from services.order.settings import OrderSettings
from services.payment.settings import PaymentSettings
from services.saga.topics import KAFKA_TOPICS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "paysaga"
HELM = ROOT / ".tools" / "bin" / "helm"
KUBE_VERSION = "1.30.0"
#: The variables libpq reads itself (psycopg passes the rest of the URL to it).
LIBPQ = {"PGPASSWORD"}

Manifest = dict[str, Any]


def render(
    values: Sequence[Path] = (), settings: Sequence[str] = (), helm: Path = HELM
) -> list[Manifest]:
    """`helm template` of the chart as release "paysaga" in namespace "paysaga", with these
    values files and `--set` settings: its objects, parsed."""
    args = [str(helm), "template", "paysaga", str(CHART), "--namespace", "paysaga"]
    args += ["--kube-version", KUBE_VERSION, *(f"--values={path}" for path in values)]
    args += [f"--set={setting}" for setting in settings]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# -- what the code reads -------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """One of the two services as the code defines it."""

    name: str
    module: str
    settings: type[BaseSettings]

    @property
    def health_name(self) -> str:
        """The name its readiness is reported under (the gRPC service's full name)."""
        return str(importlib.import_module(f"{self.module}.__main__").SERVICE_NAME)

    def consumed_topics(self) -> list[str]:
        """The topics its consumer handles: the keys of `handlers=` in its `build()`."""
        main = importlib.import_module(f"{self.module}.__main__")
        tree = ast.parse(inspect.getsource(main))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "handlers":
                assert isinstance(node.value, ast.Dict), f"{self.module}: handlers= is no dict"
                return [_topic_name(main, key) for key in node.value.keys]
        raise AssertionError(f"{self.module}.__main__ passes no handlers= to build_app")


def _topic_name(module: Any, key: ast.expr | None) -> str:
    """`TRANSACTIONS.name` in the module -> "transactions"."""
    if isinstance(key, ast.Attribute) and isinstance(key.value, ast.Name):
        return str(getattr(getattr(module, key.value.id), key.attr))
    raise AssertionError(f"{module.__name__}: a handlers key that is not TOPIC.name")


SERVICES = {
    "order": Service("order", "services.order", OrderSettings),
    "payment": Service("payment", "services.payment", PaymentSettings),
}
#: The settings both services read beside their own (services/common/security).
SHARED_SETTINGS: tuple[type[BaseSettings], ...] = (AuthSettings, TlsSettings, PolicySettings)


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field, as pydantic-settings reads the class."""
    names: dict[str, str] = {}
    prefix = cls.model_config.get("env_prefix", "")
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            found = [c for c in alias.choices if isinstance(c, str) and c != field_name]
        elif isinstance(alias, str):
            found = [alias]
        else:
            found = [prefix + field_name]
        for name in found:
            names[name if cls.model_config.get("case_sensitive") else name.upper()] = field_name
    return names


@dataclass(frozen=True)
class Readers:
    """What a service process reads from its environment."""

    names: frozenset[str]
    prefixes: tuple[str, ...]

    def reads(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)


def readers(settings: Iterable[type[BaseSettings]]) -> Readers:
    """The settings classes' variables, the Kafka clients' (services.common.messaging.kafka),
    OpenTelemetry's and libpq's."""
    from opentelemetry import environment_variables as otel_api
    from opentelemetry.sdk import environment_variables as otel_sdk

    names = {name for cls in settings for name in env_names(cls)}
    names |= {*kafka.NAMED_SETTINGS, kafka.PASSWORD_FILE} | LIBPQ
    names |= {n for module in (otel_api, otel_sdk) for n in dir(module) if n.startswith("OTEL_")}
    return Readers(frozenset(names), (kafka.GENERIC_PREFIX,))


# -- the rendered chart --------------------------------------------------------------------


def by_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_containers(objects: Iterable[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(where, pod spec, container) for every container of the Deployments and Jobs."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            pod = obj["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield (
                    f"{obj['kind']} {obj['metadata']['name']} ({container['name']})",
                    pod,
                    container,
                )


def service_of(container: Manifest) -> Service:
    """The service a container runs: `python -m services.<name> ...`."""
    args = container.get("args", [])
    text = " ".join(args)
    for service in SERVICES.values():
        if f"-m {service.module} " in f"{text} ":
            return service
    raise AssertionError(f"a container that runs no service: {args}")


def literal_env(container: Manifest) -> dict[str, str]:
    """The container's environment; a value from a Secret or the pod stands as "from-ref"."""
    return {e["name"]: e.get("value", "from-ref") for e in container.get("env", [])}


# -- the checks ----------------------------------------------------------------------------


def unread_env(
    objects: Iterable[Manifest],
    services: Mapping[str, Service] = SERVICES,
    shared: Sequence[type[BaseSettings]] = SHARED_SETTINGS,
) -> list[str]:
    """Variables the chart sets that the service in that container does not read."""
    problems = []
    for where, _pod, container in pod_containers(objects):
        service = services[service_of(container).name]
        known = readers([service.settings, *shared])
        for name in literal_env(container):
            if not known.reads(name):
                problems.append(
                    f"{where} sets {name}, which {service.module} does not read: in "
                    "deploy/helm/paysaga/templates, name the setting's variable "
                    "(docs/configuration.md)"
                )
    return problems


def settings_from(container: Manifest, service: Service) -> tuple[Any, list[str]]:
    """The service's settings as the container's environment sets them, or why they fail."""
    env = {
        name: "1" if value == "from-ref" else value
        for name, value in literal_env(container).items()
    }
    mine = {k: v for k, v in env.items() if k in env_names(service.settings)}
    try:
        return service.settings(**_as_fields(service.settings, mine)), []
    except ValidationError as exc:
        return None, [f"{service.module}: the chart's environment does not parse: {exc}"]


def _as_fields(cls: type[BaseSettings], env: Mapping[str, str]) -> dict[str, str]:
    names = env_names(cls)
    return {names[name]: value for name, value in env.items()}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def port_and_probe_problems(objects: Iterable[Manifest]) -> list[str]:
    """The addresses the chart sets are the container's ports; the probes ask the right names."""
    problems = []
    for where, pod, container in pod_containers(objects):
        if "serve" not in container.get("args", []):
            continue
        service = service_of(container)
        settings, failed = settings_from(container, service)
        problems += failed
        if settings is None:
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port, address in (
            ("grpc", settings.grpc_address),
            ("health", settings.health_address),
            ("metrics", settings.metrics_address),
        ):
            if not address or _port(address) != ports.get(port):
                problems.append(
                    f"{where}: port {port} is {ports.get(port)}, the service binds {address!r}"
                )
        # A worker (<SVC>_ROLE=worker) serves no public API: it reports readiness under the
        # admin API's name only (services.common.runtime.assembly).
        ready = service.health_name if serves_api(settings.role) else ADMIN_SERVICE_NAME
        wanted = {"startupProbe": LIVENESS, "livenessProbe": LIVENESS, "readinessProbe": ready}
        for probe, name in wanted.items():
            grpc = container.get(probe, {}).get("grpc", {})
            if grpc.get("service") != name or grpc.get("port") != ports.get("health"):
                problems.append(
                    f"{where}: {probe} asks {grpc.get('service')!r} on port {grpc.get('port')}, "
                    f"the service answers {name!r} on its health port {ports.get('health')}"
                )
        drain, grace = settings.shutdown_drain_s, settings.shutdown_grace_s
        kill_after = pod.get("terminationGracePeriodSeconds", 30)
        if kill_after < drain + 2 * grace:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {kill_after} is shorter than the "
                f"drain ({drain} s) and two graces ({grace} s each)"
            )
    return problems


def topic_problems(objects: Sequence[Manifest], brokers: int = 3) -> list[str]:
    """The KafkaTopics against the topic table, the retention the local stack sets, and
    production's replication (as deploy.kafka.topics.replication_for gives a cluster)."""
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(objects, "KafkaTopic")}
    problems = []
    if set(topics) != set(KAFKA_TOPICS):
        problems.append(
            f"the chart's topics {sorted(topics)} are not the code's {sorted(KAFKA_TOPICS)} "
            "(services/saga/topics.py): fix kafka.topics in values.yaml"
        )
    replication = replication_for(brokers)
    for name, spec in topics.items():
        config = spec.get("config", {})
        wanted = {
            "retention.ms": retention_ms(name),
            "segment.ms": segment_ms(name),
            "min.insync.replicas": replication.min_insync,
        }
        for key, value in wanted.items():
            if config.get(key) != value:
                problems.append(f"topic {name}: {key} is {config.get(key)}, the code says {value}")
        if spec.get("replicas") != replication.factor:
            problems.append(
                f"topic {name}: replicas {spec.get('replicas')}, wanted {replication.factor}"
            )
    acl_topics = {
        acl["resource"]["name"]
        for user in by_kind(objects, "KafkaUser")
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic"
    }
    if by_kind(objects, "KafkaUser") and acl_topics != set(KAFKA_TOPICS):
        problems.append(
            f"the KafkaUser's topics {sorted(acl_topics)} are not {sorted(KAFKA_TOPICS)}"
        )
    return problems


def scaling_problems(objects: Sequence[Manifest]) -> list[str]:
    """KEDA scales each service on its own consumer group, on the topics it consumes, and
    never beyond the partitions of those topics."""
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in by_kind(objects, "KafkaTopic")
    }
    groups, runs = {}, {}
    for deployment in by_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if "serve" in container.get("args", []):
                service = service_of(container)
                runs[deployment["metadata"]["name"]] = service
                settings, _failed = settings_from(container, service)
                if settings is not None:
                    groups[service.name] = settings.consumer_group
    problems = []
    for scaled in by_kind(objects, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target not in runs:
            problems.append(f"ScaledObject {scaled['metadata']['name']}: no Deployment {target}")
            continue
        service = runs[target]
        triggers = scaled["spec"]["triggers"]
        topics = sorted(t["metadata"]["topic"] for t in triggers)
        if topics != sorted(service.consumed_topics()):
            problems.append(
                f"{target} scales on {topics}, it consumes {sorted(service.consumed_topics())}"
            )
        for trigger in triggers:
            if trigger["metadata"]["consumerGroup"] != groups.get(service.name):
                problems.append(
                    f"{target} follows group {trigger['metadata']['consumerGroup']}, "
                    f"the service joins {groups.get(service.name)}"
                )
        # Without the chart's KafkaTopics (an external Kafka) the chart's own check against
        # kafka.partitions is what bounds it.
        most = min((partitions[topic] for topic in topics if topic in partitions), default=None)
        if most is not None and scaled["spec"]["maxReplicaCount"] > most:
            problems.append(
                f"{target}: maxReplicaCount {scaled['spec']['maxReplicaCount']} > {most} partitions"
            )
    return problems
