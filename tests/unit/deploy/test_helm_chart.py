"""The Helm chart against the code (deploy/helm/chart.py), rendered with the pinned helm for
its default values and each ci/*-values.yaml: the environment it sets is what the services
read, its ports and probes are theirs, its topics are the topic table with the local stack's
retention, KEDA follows the consumer groups. Then the checks themselves: a setting renamed in
the code, a wrong probe name, another retention, each is reported. The api/worker layout is
test_helm_layout.py's.

Needs helm in .tools/bin (`make tools`): in CI a missing helm fails, elsewhere it skips
loudly. The schemas of every object are checked by `make helm-check` (kubeconform)."""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy.helm import chart
from deploy.helm.chart import (
    SERVICES,
    Manifest,
    Service,
    by_kind,
    pod_containers,
    port_and_probe_problems,
    render,
    scaling_problems,
    topic_problems,
    unread_env,
)
from services.common.serving.grpc_app import LIVENESS
from services.order.settings import OrderSettings
from services.saga.topics import KAFKA_TOPICS
from tests.unit.deploy.helm_renders import CI_VALUES, FULL, SPLIT, require_helm

pytestmark = pytest.mark.unit

SCHEMAS = chart.ROOT / "deploy" / "helm" / "schemas"


def test_the_ci_values_include_everything_on() -> None:
    assert FULL in CI_VALUES and SPLIT in CI_VALUES and len(CI_VALUES) >= 3


# -- the chart against the code ------------------------------------------------------------


def test_every_variable_the_chart_sets_is_read_by_the_service(
    renders: dict[str, list[Manifest]],
) -> None:
    for name, objects in renders.items():
        assert len(list(pod_containers(objects))) >= 2, f"{name}: no service rendered"
        assert unread_env(objects) == [], name


def test_ports_probes_and_drain_are_the_services(renders: dict[str, list[Manifest]]) -> None:
    for name, objects in renders.items():
        assert port_and_probe_problems(objects) == [], name


def test_the_probes_ask_liveness_and_the_services_names(default: list[Manifest]) -> None:
    probes = {
        deployment["metadata"]["name"]: deployment["spec"]["template"]["spec"]["containers"][0]
        for deployment in by_kind(default, "Deployment")
    }
    assert set(probes) == {"paysaga-order", "paysaga-payment"}
    for service in SERVICES.values():
        container = probes[f"paysaga-{service.name}"]
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS == "paysaga.liveness"
        assert container["startupProbe"]["grpc"]["service"] == LIVENESS
        readiness = container["readinessProbe"]["grpc"]["service"]
        assert readiness == service.health_name == f"paysaga.v1.{service.name.title()}Service"


def test_the_drain_fits_in_the_termination_grace(default: list[Manifest]) -> None:
    for deployment in by_kind(default, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        prefix = deployment["metadata"]["name"].removeprefix("paysaga-").upper()
        drain, grace = (
            float(env[f"{prefix}_SHUTDOWN_DRAIN_S"]),
            float(env[f"{prefix}_SHUTDOWN_GRACE_S"]),
        )
        assert (drain, grace) == (5.0, 10.0)
        assert pod["terminationGracePeriodSeconds"] == drain + 2 * grace + 5


def test_topics_are_the_topic_table_with_the_local_stacks_retention(full: list[Manifest]) -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(full, "KafkaTopic")}
    assert set(topics) == set(KAFKA_TOPICS) and len(topics) == 7
    assert topics["orders.dlt"]["config"]["retention.ms"] == 7 * 24 * 3600 * 1000
    assert topics["order-updates"]["config"]["segment.ms"] == 15 * 60 * 1000
    assert topic_problems(full) == []


def test_keda_follows_the_consumer_groups_within_the_partitions(full: list[Manifest]) -> None:
    scaled = by_kind(full, "ScaledObject")
    assert len(scaled) == 2
    assert scaling_problems(full) == []
    payment = next(s for s in scaled if s["metadata"]["name"] == "paysaga-payment")
    assert sorted(t["metadata"]["topic"] for t in payment["spec"]["triggers"]) == [
        "orders",
        "payments",
    ]


def test_keda_beyond_the_partitions_is_refused() -> None:
    require_helm()
    with pytest.raises(RuntimeError, match="maxReplicas 7 is above kafka.partitions 6"):
        render([FULL], ["order.autoscaling.maxReplicas=7"])


def test_tls_or_auth_off_is_refused_unless_meant() -> None:
    require_helm()
    with pytest.raises(RuntimeError, match="set insecure=true"):
        render(settings=["tls.enabled=false"])


def test_a_misspelt_value_is_refused() -> None:
    """values.schema.json: a value the chart does not know is an error, not silently unused."""
    require_helm()
    with pytest.raises(RuntimeError, match="additional properties 'replica' not allowed"):
        render(settings=["order.replica=1"])


def test_the_dashboard_is_the_one_in_deploy_observability(default: list[Manifest]) -> None:
    (config_map,) = by_kind(default, "ConfigMap")
    shipped = chart.ROOT / "deploy/observability/grafana/dashboards/paysaga.json"
    assert json.loads(config_map["data"]["paysaga.json"]) == json.loads(shipped.read_text())


def test_every_rendered_kind_has_a_pinned_schema(renders: dict[str, list[Manifest]]) -> None:
    """Where `make helm-check` has kubeconform look, in this order (mk/helm.mk)."""
    kinds = {(obj["apiVersion"], obj["kind"]) for objects in renders.values() for obj in objects}
    assert len(kinds) >= 15
    for api_version, kind in kinds:
        group, _, version = api_version.rpartition("/")
        suffix = f"-{group.split('.')[0]}" if group else ""
        kubernetes = f"kubernetes-v{chart.KUBE_VERSION}/{kind.lower()}{suffix}-{version}.json"
        crd = f"crds/{group}/{kind.lower()}_{version}.json"
        assert (SCHEMAS / kubernetes).exists() or (SCHEMAS / crd).exists(), (
            f"no pinned schema for {api_version} {kind}: add it to deploy/helm/schemagen.py "
            "and run `make helm-schemas`"
        )


# -- the checks catch drift ----------------------------------------------------------------


class _OrderPrefix(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_", populate_by_name=True, extra="ignore")


def _order_settings_renamed(old: str, new: str) -> type[BaseSettings]:
    """OrderSettings as it would be if its field `old` were named `new` in the code."""
    fields = {
        (new if name == old else name): (field.annotation, field)
        for name, field in OrderSettings.model_fields.items()
    }
    return create_model("OrderSettings", __base__=_OrderPrefix, **fields)  # type: ignore[call-overload]


def test_a_setting_renamed_in_the_code_is_reported(default: list[Manifest]) -> None:
    renamed = _order_settings_renamed("grpc_address", "grpc_listen_address")
    assert "ORDER_GRPC_LISTEN_ADDRESS" in chart.env_names(renamed)
    services = {**SERVICES, "order": Service("order", "services.order", renamed)}
    problems = unread_env(default, services)
    assert problems, "a variable nothing reads any more went unnoticed"
    assert all("ORDER_GRPC_ADDRESS" in problem for problem in problems)
    assert any("Deployment paysaga-order (order)" in problem for problem in problems)
    assert unread_env(default) == [], "the code as it is reads every variable"


def test_a_wrong_probe_name_or_port_is_reported(default: list[Manifest]) -> None:
    changed = copy.deepcopy(default)
    order = next(
        d for d in by_kind(changed, "Deployment") if d["metadata"]["name"] == "paysaga-order"
    )
    container = order["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["service"] = LIVENESS
    container["ports"][0]["containerPort"] = 50099
    problems = port_and_probe_problems(changed)
    assert any("readinessProbe asks 'paysaga.liveness'" in p for p in problems), problems
    assert any("port grpc is 50099" in p for p in problems), problems


def test_another_retention_or_a_missing_topic_is_reported(full: list[Manifest]) -> None:
    changed = copy.deepcopy(full)
    topics = by_kind(changed, "KafkaTopic")
    orders = next(t for t in topics if t["spec"]["topicName"] == "orders")
    orders["spec"]["config"]["retention.ms"] = 3600000
    changed.remove(next(t for t in topics if t["spec"]["topicName"] == "payments.dlt"))
    problems = topic_problems(changed)
    assert any("topic orders: retention.ms is 3600000" in p for p in problems), problems
    assert any("are not the code's" in p for p in problems), problems


def test_keda_on_another_group_is_reported(full: list[Manifest]) -> None:
    changed = copy.deepcopy(full)
    scaled = by_kind(changed, "ScaledObject")[0]
    scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "paysaga-elsewhere"
    assert any("follows group paysaga-elsewhere" in p for p in scaling_problems(changed))
