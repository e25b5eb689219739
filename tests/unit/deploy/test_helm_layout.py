"""The Helm chart's layouts: `roles: all` (one Deployment per service, the default) or
`roles: split` (ci/split-values.yaml): two Deployments per service by role, the Services on
the api pods, budgets, policies and monitors on both, KEDA on the workers, and the checks
that report a worker probed for the service's name.

Needs helm in .tools/bin (`make tools`): in CI a missing helm fails, elsewhere it skips
loudly."""

from __future__ import annotations

import copy

import pytest
import yaml

from deploy.helm import chart
from deploy.helm.chart import (
    CHART,
    SERVICES,
    Manifest,
    by_kind,
    literal_env,
    port_and_probe_problems,
    render,
    scaling_problems,
)
from services.common.operations.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from services.common.runtime.roles import check_role
from services.common.serving.grpc_app import LIVENESS
from tests.unit.deploy.helm_renders import FULL, SPLIT, require_helm

pytestmark = pytest.mark.unit


# -- the layout: roles all (one Deployment per service) or split (api and worker) -----------


def _role(container: Manifest) -> str:
    """The role a service container runs: its <SVC>_ROLE, `all` when unset (the default)."""
    service = chart.service_of(container)
    return literal_env(container).get(f"{service.name.upper()}_ROLE", "all")


def _deployments(objects: list[Manifest]) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}


def _pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _container(deployment: Manifest) -> Manifest:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/DoesNotExist) matches
    these labels."""
    match = selector.get("matchLabels", {})
    if any(labels.get(key) != value for key, value in match.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _service_selects(service: Manifest, labels: dict[str, str]) -> bool:
    return _selects({"matchLabels": service["spec"]["selector"]}, labels)


SPLIT_DEPLOYMENTS = {
    "paysaga-order": ("order", "api"),
    "paysaga-order-worker": ("order", "worker"),
    "paysaga-payment": ("payment", "api"),
    "paysaga-payment-worker": ("payment", "worker"),
}


def test_by_default_one_deployment_per_service_runs_it_all(
    renders: dict[str, list[Manifest]],
) -> None:
    """roles=all (the default): the chart as it was before the split, no <SVC>_ROLE set."""
    for name in ("default", FULL.name):
        objects = renders[name]
        deployments = _deployments(objects)
        assert set(deployments) == {"paysaga-order", "paysaga-payment"}, name
        for deployment in deployments.values():
            env = literal_env(_container(deployment))
            assert not [variable for variable in env if variable.endswith("_ROLE")], name
            assert _role(_container(deployment)) == "all"
        named = [o["metadata"]["name"] for o in objects]
        assert not [n for n in named if n.endswith("-worker")], name
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            assert {o["metadata"]["name"] for o in by_kind(objects, kind)} <= set(deployments)
    scaled = by_kind(renders[FULL.name], "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        "paysaga-order",
        "paysaga-payment",
    }


def test_split_runs_an_api_and_a_worker_deployment_per_service(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    assert set(deployments) == set(SPLIT_DEPLOYMENTS)
    for name, (service, role) in SPLIT_DEPLOYMENTS.items():
        container = _container(deployments[name])
        assert chart.service_of(container).name == service
        assert literal_env(container)[f"{service.upper()}_ROLE"] == check_role(role)
        assert "serve" in container["args"]
        assert _pod_labels(deployments[name])["app.kubernetes.io/component"] == (
            service if role == "api" else f"{service}-worker"
        )
    # Each its own replicas and resources: KEDA (on in split-values) owns the workers' count.
    assert deployments["paysaga-order"]["spec"]["replicas"] == 2
    assert "replicas" not in deployments["paysaga-order-worker"]["spec"]
    order_api, order_worker = (
        _container(deployments[n])["resources"] for n in ("paysaga-order", "paysaga-order-worker")
    )
    assert order_api["requests"] == {"cpu": "500m", "memory": "256Mi"}
    assert order_worker["requests"] == {"cpu": "300m", "memory": "200Mi"}


def test_split_without_keda_sets_the_workers_replicas() -> None:
    require_helm()
    objects = render([SPLIT], ["keda.enabled=false", "order.worker.replicas=4"])
    deployments = _deployments(objects)
    assert deployments["paysaga-order"]["spec"]["replicas"] == 2
    assert deployments["paysaga-order-worker"]["spec"]["replicas"] == 4
    assert deployments["paysaga-payment-worker"]["spec"]["replicas"] == 3
    assert by_kind(objects, "ScaledObject") == []


def test_split_probes_ask_what_each_role_reports(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    for name, (service, role) in SPLIT_DEPLOYMENTS.items():
        container = _container(deployments[name])
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
        assert container["startupProbe"]["grpc"]["service"] == LIVENESS
        wanted = SERVICES[service].health_name if role == "api" else ADMIN_SERVICE_NAME
        assert container["readinessProbe"]["grpc"]["service"] == wanted, name
    assert ADMIN_SERVICE_NAME == "paysaga.admin.v1.AdminService"


def test_split_both_deployments_migrate_first_and_drain_alike(split: list[Manifest]) -> None:
    """With CloudNativePG (on in split-values) either Deployment may start first on install."""
    for name, deployment in _deployments(split).items():
        pod = deployment["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["args"][-1] == "migrate", name
        assert pod["terminationGracePeriodSeconds"] == 30, name


def test_split_services_send_clients_to_the_api_pods_only(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    services = {s["metadata"]["name"]: s for s in by_kind(split, "Service")}
    for service in SERVICES:
        api = _pod_labels(deployments[f"paysaga-{service}"])
        worker = _pod_labels(deployments[f"paysaga-{service}-worker"])
        for public in (f"paysaga-{service}", f"paysaga-{service}-headless"):
            selects = services[public]
            assert _service_selects(selects, api) and not _service_selects(selects, worker)
            assert "grpc" in {p["name"] for p in selects["spec"]["ports"]}
        # The workers' own Service: their metrics, no gRPC.
        metrics = services[f"paysaga-{service}-worker"]
        assert _service_selects(metrics, worker) and not _service_selects(metrics, api)
        assert [p["name"] for p in metrics["spec"]["ports"]] == ["metrics"]


def test_split_budgets_and_policies_cover_each_deployment(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    for kind, key in (("PodDisruptionBudget", "selector"), ("NetworkPolicy", "podSelector")):
        objects = by_kind(split, kind)
        assert {o["metadata"]["name"] for o in objects} == set(deployments), kind
        for obj in objects:
            covered = [
                name
                for name, deployment in deployments.items()
                if _selects(obj["spec"][key], _pod_labels(deployment))
            ]
            assert covered == [obj["metadata"]["name"]], f"{kind} {obj['metadata']['name']}"


def test_split_monitors_scrape_the_workers_too(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    (pod_monitor,) = by_kind(split, "PodMonitor")
    for name, deployment in deployments.items():
        assert _selects(pod_monitor["spec"]["selector"], _pod_labels(deployment)), name
    # The ServiceMonitor scrapes the pods behind the Services it selects, on their metrics port.
    (service_monitor,) = by_kind(split, "ServiceMonitor")
    scraped = [
        s
        for s in by_kind(split, "Service")
        if _selects(service_monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in scraped)
    for name, deployment in deployments.items():
        behind = [s for s in scraped if _service_selects(s, _pod_labels(deployment))]
        assert len(behind) == 1, f"{name} is scraped through {len(behind)} Services"


def test_split_keda_scales_the_workers_within_the_partitions(split: list[Manifest]) -> None:
    deployments = _deployments(split)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(split, "ScaledObject")}
    assert set(scaled) == {"paysaga-order-worker", "paysaga-payment-worker"}
    partitions = _values()["kafka"]["partitions"]
    for target, obj in scaled.items():
        container = _container(deployments[target])
        assert _role(container) == "worker"
        service = chart.service_of(container)
        settings, failed = chart.settings_from(container, service)
        assert failed == []
        triggers = obj["spec"]["triggers"]
        assert sorted(t["metadata"]["topic"] for t in triggers) == sorted(service.consumed_topics())
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {settings.consumer_group}
        assert obj["spec"]["maxReplicaCount"] <= partitions
    assert scaling_problems(split) == []
    # Each its own worker.autoscaling (split-values: order 2..6 at lag 50, payment 1..3).
    order, payment = scaled["paysaga-order-worker"], scaled["paysaga-payment-worker"]
    assert (order["spec"]["minReplicaCount"], order["spec"]["maxReplicaCount"]) == (2, 6)
    assert order["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "50"
    assert (payment["spec"]["minReplicaCount"], payment["spec"]["maxReplicaCount"]) == (1, 3)


def _values() -> Manifest:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_split_workers_beyond_the_partitions_are_refused() -> None:
    require_helm()
    with pytest.raises(RuntimeError, match="order.worker.autoscaling.maxReplicas 7 is above"):
        render([SPLIT], ["order.worker.autoscaling.maxReplicas=7"])


def test_a_role_set_through_env_is_refused() -> None:
    """The layout is `roles`: an ORDER_ROLE in order.env would contradict it."""
    require_helm()
    with pytest.raises(RuntimeError, match="order.env sets ORDER_ROLE: choose the layout"):
        render(settings=["order.env.ORDER_ROLE=worker"])
    with pytest.raises(RuntimeError, match="value must be one of 'all', 'split'"):
        render(settings=["roles=workers"])


# -- the checks catch drift in the layout -------------------------------------------------


def test_a_worker_asked_for_the_services_name_is_reported(split: list[Manifest]) -> None:
    """A worker never reports the service's name SERVING: it serves no public API."""
    changed = copy.deepcopy(split)
    worker = _container(_deployments(changed)["paysaga-order-worker"])
    worker["readinessProbe"]["grpc"]["service"] = SERVICES["order"].health_name
    assert port_and_probe_problems(changed) == [
        "Deployment paysaga-order-worker (order): readinessProbe asks 'paysaga.v1.OrderService' "
        "on port 8081, the service answers 'paysaga.admin.v1.AdminService' on its health port "
        "8081"
    ]
    assert port_and_probe_problems(split) == []
