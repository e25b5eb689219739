"""The command line of a service process: `python -m services.<name> [serve|migrate|seed]`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from services.common.observability.logs import configure_logging
from services.common.observability.metrics_endpoint import MetricsAddressInUse
from services.common.observability.tracing import TracingConfigError
from services.common.persistence.db import Database
from services.common.persistence.migrate import SchemaNotCurrent, check_schema, migrate
from services.common.runtime.telemetry import Telemetry
from services.common.security.policy import InsecureStart
from services.common.security.tls import TlsConfigError
from services.common.security.tokens import KeyConfigError
from services.common.serving.grpc_app import GrpcApp
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)


def run(
    *,
    name: str,
    settings: S,
    migrations: Path,
    build: Callable[[S], GrpcApp],
    seed: Callable[[Database], int],
    argv: list[str] | None = None,
) -> int:
    """Serve (the default), migrate the schema, or load the demo data; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=f"The {name} service. Settings come from {name.upper()}_* variables.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", "seed"],
        help="serve gRPC (default); migrate the database to the newest schema; "
        "seed the demo data (idempotent)",
    )
    command = parser.parse_args(argv).command
    configure_logging(name, settings.log_level, settings.log_format)
    try:
        if command == "migrate":
            revision = migrate(settings.database_url, migrations)
            log.info("database migrated", extra={"revision": revision})
            return 0
        check_schema(settings.database_url, migrations, name)
    except SchemaNotCurrent as exc:
        log.error(str(exc))
        return 2
    if command == "seed":
        db = Database(settings.database_url)
        try:
            log.info("demo data loaded", extra={"rows_added": seed(db)})
        finally:
            db.dispose()
        return 0
    try:
        telemetry = Telemetry.start(name, settings)
    except (MetricsAddressInUse, TracingConfigError) as exc:
        log.error(str(exc))
        return 2
    try:
        try:
            app = build(settings)
        except (InsecureStart, KeyConfigError, TlsConfigError) as exc:
            log.error(str(exc))
            return 2
        telemetry.watch(app)
        return app.run_until_signalled()
    finally:
        telemetry.stop()
