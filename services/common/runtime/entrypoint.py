"""The command line of a service process: `python -m services.<name> [serve|migrate|seed]`,
`serve --role api|worker|all` (services.common.runtime.roles; default <NAME>_ROLE)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from services.common.observability.logs import configure_logging
from services.common.observability.metrics_endpoint import MetricsAddressInUse
from services.common.observability.thread_names import name_threads_natively
from services.common.observability.tracing import TracingConfigError
from services.common.persistence.db import Database
from services.common.persistence.migrate import SchemaNotCurrent, check_schema, migrate
from services.common.persistence.wakeup import RelayAlreadyRunning
from services.common.runtime.roles import ROLES, BadRole, check_role
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
    settings: Callable[[], S],
    migrations: Path,
    build: Callable[[S], GrpcApp],
    seed: Callable[[Database], int],
    argv: list[str] | None = None,
) -> int:
    """Serve (the default), migrate the schema, or load the demo data; return the exit status.

    `settings` reads the service's settings (its settings class): a value it refuses is
    reported as the variable to fix, and exit status 2.
    """
    prefix = f"{name.upper()}_"
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
    parser.add_argument(
        "--role",
        choices=ROLES,
        default=None,
        help=f"serve: which part this process runs: api (the gRPC API), worker (the "
        f"consumer, the outbox relay, the background workers), all (both); default "
        f"${prefix}ROLE, else all",
    )
    args = parser.parse_args(argv)
    command = args.command
    try:
        read = settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = "_".join(str(part) for part in error["loc"])
            variable = field if field.isupper() else prefix + field.upper()  # an alias as is
            sys.stderr.write(f"{variable}={error.get('input')!r}: {error['msg']}\n")
        return 2
    if args.role is not None:
        read = read.model_copy(update={"role": args.role})
    return _run(name, read, command, migrations, build, seed)


def _run(
    name: str,
    settings: S,
    command: str,
    migrations: Path,
    build: Callable[[S], GrpcApp],
    seed: Callable[[Database], int],
) -> int:
    configure_logging(name, settings.log_level, settings.log_format)
    try:
        if command == "serve":
            check_role(settings.role, f"{name.upper()}_ROLE")
        if command == "migrate":
            revision = migrate(settings.database_url, migrations)
            log.info("database migrated", extra={"revision": revision})
            return 0
        check_schema(settings.database_url, migrations, name)
    except (SchemaNotCurrent, BadRole) as exc:
        log.error(str(exc))
        return 2
    if command == "seed":
        db = Database(settings.database_url)
        try:
            log.info("demo data loaded", extra={"rows_added": seed(db)})
        finally:
            db.dispose()
        return 0
    name_threads_natively()  # `top -H` shows which part spends the CPU
    try:
        telemetry = Telemetry.start(name, settings)
    except (MetricsAddressInUse, TracingConfigError) as exc:
        log.error(str(exc))
        return 2
    try:
        try:
            app = build(settings)
        except (InsecureStart, KeyConfigError, TlsConfigError, RelayAlreadyRunning) as exc:
            log.error(str(exc))
            return 2
        telemetry.watch(app)
        return app.run_until_signalled()
    finally:
        telemetry.stop()
