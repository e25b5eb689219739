"""The server's data folder: initdb once, its version check, paysaga's settings and trust rules.

The settings (paysaga.conf, included from postgresql.conf) and pg_hba.conf are rewritten
at every start: the server listens on 127.0.0.1 only, with no unix socket, and trusts
loopback connections only. Under root the account the server runs as owns the folder.
"""

from __future__ import annotations

import logging
import stat
import subprocess
from pathlib import Path

from deploy.postgres.account import Account
from deploy.postgres.install import PostgresRuntimeError, clean_env, server_version

log = logging.getLogger(__name__)

SUPERUSER = "postgres"  # the bootstrap superuser initdb creates, whatever account runs it
# Sized for a small 2-core machine: N service replicas, each with a connection pool.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP only: never /var/run/postgresql, no path-length limit
    "max_connections": "200",
    "shared_buffers": "128MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}
HBA = """\
# Written by deploy/postgres: trust on loopback only, nothing else.
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
"""


class DataFolder:
    """One data folder, made and checked with the binaries in `bin_dir`, run by `account`.

    `account` None: this process's own user runs initdb and the server.
    """

    def __init__(self, path: Path, bin_dir: Path, account: Account | None) -> None:
        self.path = path
        self.bin_dir = bin_dir
        self.account = account

    def _own(self, path: Path, recursive: bool = False) -> None:
        if self.account is not None:
            self.account.own(path, recursive=recursive)

    def _check_reachable(self, account: Account) -> None:
        """The account must traverse every parent of the data folder (pytest's tmp is 0700)."""
        for parent in reversed(self.path.parents):
            if parent.exists() and not account.can_enter(parent):
                raise PostgresRuntimeError(
                    f"{parent} (mode {stat.filemode(parent.stat().st_mode)}) cannot be entered by "
                    f"{account.name}, the account PostgreSQL runs as: put the data elsewhere "
                    f"(PG_DATA_DIR) or allow it (chmod o+x {parent})"
                )

    def init_if_needed(self) -> bool:
        """Create the data folder with initdb once; True if it was created now."""
        account = self.account
        if account is not None:
            self._check_reachable(account)
        if (self.path / "PG_VERSION").exists():
            if account is not None and self.path.stat().st_uid != account.uid:
                log.info("giving %s to %s (PostgreSQL runs as it)", self.path, account.name)
                self._own(self.path, recursive=True)
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        if any(self.path.iterdir()):
            raise PostgresRuntimeError(
                f"{self.path} is neither empty nor a PostgreSQL data folder: remove it first"
            )
        self.path.chmod(0o700)
        self._own(self.path)
        initdb = [str(self.bin_dir / "initdb"), "-D", str(self.path), "-U", SUPERUSER]
        initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
        prefix = account.command() if account else []
        run = subprocess.run(
            [*prefix, *initdb], capture_output=True, text=True, cwd=self.path, env=clean_env()
        )
        if run.returncode != 0:
            raise PostgresRuntimeError(f"initdb {self.path} failed:\n{run.stdout}{run.stderr}")
        with (self.path / "postgresql.conf").open("a") as conf:
            conf.write("\n# paysaga's settings, rewritten at every start\ninclude 'paysaga.conf'\n")
        log.info("initialised PostgreSQL %s data in %s", server_version(self.bin_dir), self.path)
        return True

    def check_version(self) -> None:
        """Refuse data made by another major version than the binaries'."""
        made_by = (self.path / "PG_VERSION").read_text().strip()
        binaries = server_version(self.bin_dir)
        if binaries.split(".")[0] != made_by.split(".")[0]:
            raise PostgresRuntimeError(
                f"{self.path} was made by PostgreSQL {made_by} but the binaries in "
                f"{self.bin_dir} are {binaries}: point PG_BIN at PostgreSQL {made_by}, "
                f"or remove the data (make pg-clean)"
            )

    def write_config(self, port: int) -> None:
        """paysaga.conf (our settings and `port`) and pg_hba.conf, readable by the server only."""
        settings = {**SETTINGS, "port": str(port)}
        conf = "".join(f"{name} = {value}\n" for name, value in settings.items())
        for name, text in (("paysaga.conf", conf), ("pg_hba.conf", HBA)):
            path = self.path / name
            path.write_text(text)
            path.chmod(0o600)
            self._own(path)
