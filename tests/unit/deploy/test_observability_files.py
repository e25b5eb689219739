"""deploy/observability is kept correct by reading: its queries name metrics that exist,
and the local scrape config covers the ports `make up` gives each replica."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import REGISTRY

from deploy.stack.config import ROOT, SERVICES, replica_address, role_address
from services.common.observability import metrics
from services.order import metrics as _order_metrics  # noqa: F401 (registers them)
from services.payment import metrics as _payment_metrics  # noqa: F401 (registers them)

pytestmark = pytest.mark.unit

OBSERVABILITY = ROOT / "deploy" / "observability"
NAME = re.compile(r"\b((?:paysaga|grpc_server|process)_[a-z_]+)\b")


def served_names() -> set[str]:
    """Every series name the services serve (the outbox backlog's once a relay is watched)."""
    families = [*REGISTRY.collect(), *metrics.OutboxBacklog(lambda: (0, None)).collect()]
    names = set()
    for family in families:
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names


def test_every_dashboard_query_names_a_served_metric() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana" / "dashboards" / "paysaga.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 15
    names = {name for expr in exprs for name in NAME.findall(expr)}
    missing = names - served_names()
    assert not missing, f"the dashboard queries metrics nobody serves: {sorted(missing)}"
    panels = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("orders per second", "saga latency", "hop latency", "outbox", "lag", "dead"):
        assert topic in panels
    assert "grpc errors" in panels


def test_the_local_scrape_config_covers_every_replica_port() -> None:
    config = (OBSERVABILITY / "prometheus.yml").read_text()
    for spec in SERVICES:
        for replica in range(4):
            api_or_all = replica_address(spec.default_metrics_address, replica)
            assert f'"{api_or_all}"' in config
            assert f'"{role_address(api_or_all, "worker")}"' in config
