"""Command line for the local PostgreSQL; settings come from the PG_* environment."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from deploy.postgres.databases import DATABASES
from deploy.postgres.install import REPO_ROOT, PostgresRuntimeError
from deploy.postgres.runtime import PostgresRuntime

#: What `python -m deploy.postgres --help` says.
DESCRIPTION = """\
A real local PostgreSQL from the machine's own binaries: init once, start, stop, kill, clean.

`python -m deploy.postgres up|down|clean|status|url|check`; settings from PG_* variables.
The server listens on 127.0.0.1 only (no unix socket) and trusts loopback connections only.
It holds the role `paysaga` and its databases `paysaga_order` and `paysaga_payment`.
PostgreSQL refuses to run as root, so under root it runs as an unprivileged account
(`postgres` if the machine has it, else `nobody`; PG_OS_USER overrides) that owns the data.
Only the standard library is used: role and databases are made with the server's own psql.
"""


def runtime_from_env() -> PostgresRuntime:
    """The server the Makefile means: PG_PORT, PG_DATA_DIR, PG_OS_USER (PG_BIN: find_bin_dir)."""
    env = os.environ.get
    return PostgresRuntime(
        port=int(env("PG_PORT") or "5432"),
        data_dir=Path(env("PG_DATA_DIR") or REPO_ROOT / "var/postgres"),
        os_user=env("PG_OS_USER") or None,
    )


def up(pg: PostgresRuntime) -> None:
    if (pid := pg.pid()) is not None and pg.running_port() == pg.port:
        print(f"PostgreSQL is already running at 127.0.0.1:{pg.port} (pid {pid}): nothing to start")
    else:  # (start() explains a server of this data folder running on another port)
        pg.start(timeout=float(os.environ.get("PG_START_TIMEOUT") or "60"))
        print(f"server log: {pg.log_file}; stop it with `make pg-down`")
    for what in pg.ensure_databases():
        print(f"created {what}")
    for database in DATABASES:
        print(f"  {database:<8} {pg.url(database)}")


def down(pg: PostgresRuntime) -> None:
    if not pg.stop():
        print("PostgreSQL is not running: nothing to stop")
        return
    print(f"data kept in {pg.data_dir} (`make pg-clean` removes it)")


def clean(pg: PostgresRuntime) -> None:
    pg.clean()
    print(f"PostgreSQL data removed: {pg.data_dir}")


def status(pg: PostgresRuntime) -> None:
    pid = pg.pid()
    state = f"running at 127.0.0.1:{pg.running_port()} (pid {pid})" if pid else "not running"
    print(f"PostgreSQL is {state}; data {pg.data_dir}; log {pg.log_file}")


def check(pg: PostgresRuntime) -> None:
    print(f"PostgreSQL {pg.version()} binaries in {pg.bin_dir}")


COMMANDS = {"up": up, "down": down, "clean": clean, "status": status, "check": check}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.postgres", description=DESCRIPTION)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        commands.add_parser(name)
    url = commands.add_parser("url", help="print a database's SQLAlchemy URL")
    url.add_argument("database", choices=DATABASES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="==> %(message)s", stream=sys.stdout)
    pg = runtime_from_env()
    try:
        if args.command == "url":
            print(pg.url(args.database))
        else:
            COMMANDS[args.command](pg)
    except PostgresRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
