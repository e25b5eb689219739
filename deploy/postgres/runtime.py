"""One PostgreSQL server on 127.0.0.1: start, stop, kill, clean, and its role and databases.

The server runs from a data folder (deploy/postgres/data_folder.py) that it inits once;
it is ready when the superuser can run a query over TCP. A detached server lives on
after the command that started it; its pid is found again from the folder's lock file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy.kafka.install import port_in_use
from deploy.postgres import databases
from deploy.postgres.account import Account
from deploy.postgres.data_folder import DataFolder
from deploy.postgres.databases import Psql
from deploy.postgres.install import (
    REPO_ROOT,
    PortInUseError,
    PostgresRuntimeError,
    clean_env,
    find_bin_dir,
    server_version,
)

__all__ = ["PostgresRuntime"]

log = logging.getLogger(__name__)


class PostgresRuntime:
    """One PostgreSQL server on 127.0.0.1 with its data, pid file and log in given places."""

    def __init__(
        self,
        port: int = 5432,
        data_dir: Path = REPO_ROOT / "var/postgres",
        run_dir: Path = REPO_ROOT / "var/run",
        log_file: Path = REPO_ROOT / "var/log/postgres.log",
        bin_dir: Path | None = None,
        os_user: str | None = None,
        detach: bool = True,
    ) -> None:
        self.port = port
        self.data_dir = Path(data_dir).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.log_file = Path(log_file).resolve()
        self._bin_dir = bin_dir
        self.os_user = os_user
        self.detach = detach  # own session: a detached server outlives the command that started it
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_command = ""

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def pid_file(self) -> Path:
        """A copy of the postmaster's pid for `make ps`; postmaster.pid is the real lock."""
        return self.run_dir / "postgres.pid"

    @property
    def account(self) -> Account | None:
        """Who runs initdb and the server: None means this process's own user."""
        return Account.for_root(self.os_user) if os.geteuid() == 0 else None

    def _data_folder(self) -> DataFolder:
        return DataFolder(self.data_dir, self.bin_dir, self.account)

    @staticmethod
    def database_name(database: str) -> str:
        """'order' -> 'paysaga_order', 'payment' -> 'paysaga_payment'; other names unchanged."""
        return databases.database_name(database)

    def url(self, database: str = "order") -> str:
        """The SQLAlchemy URL (psycopg 3 driver) for role paysaga on one database."""
        return databases.database_url(self.port, database)

    def version(self) -> str:
        """The server binaries' version, e.g. '15.18'."""
        return server_version(self.bin_dir)

    # -- state ---------------------------------------------------------------------------

    def _lock(self) -> list[str]:
        """postmaster.pid: pid, data folder, start time, port, ... (empty if there is none)."""
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def pid(self) -> int | None:
        """Pid of this data folder's live postmaster, else None (a stale lock file is removed)."""
        lock = self._lock()
        try:
            pid = int(lock[0])
        except (IndexError, ValueError):
            return None
        args = self._command_line(pid)
        if args is not None and str(self.data_dir) in args.split():
            return pid
        if args is None or "postgres" not in args:  # gone (a crash), or the pid was reused
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        return None

    def running_port(self) -> int | None:
        """The port the live server of this data folder listens on (it may differ from .port)."""
        lock = self._lock()
        return int(lock[3]) if self.pid() is not None and len(lock) > 3 else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def _command_line(self, pid: int) -> str | None:
        """The command line of a live process (not a zombie), None if there is none."""
        if self._proc is not None and self._proc.pid == pid:  # our child: poll() also reaps it
            return self._proc_command if self._proc.poll() is None else None
        ps = subprocess.run(
            ["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True
        )
        state, _, args = ps.stdout.strip().partition(" ")
        return args if ps.returncode == 0 and not state.startswith("Z") else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"(no log at {self.log_file})"

    # -- lifecycle -----------------------------------------------------------------------

    def _check_port(self) -> None:
        if port_in_use(self.port):
            raise PortInUseError(
                f"port 127.0.0.1:{self.port} is already in use by another process (not the "
                f"PostgreSQL of {self.data_dir}): stop that process or choose another port "
                "(PG_PORT)"
            )

    def init_if_needed(self) -> bool:
        """Create the data folder with initdb once; True if it was created now."""
        return self._data_folder().init_if_needed()

    def start(self, timeout: float = 60.0) -> int:
        """Start the server (a no-op if already running), wait until it answers; return its pid."""
        if (pid := self.pid()) is not None:
            if (port := self.running_port()) != self.port:
                raise PostgresRuntimeError(
                    f"the PostgreSQL of {self.data_dir} already runs on port {port}, not "
                    f"{self.port}: stop it first (make pg-down) or use PG_PORT={port}"
                )
            log.info("PostgreSQL already running at 127.0.0.1:%d (pid %d)", self.port, pid)
            return pid
        self._check_port()
        self.init_if_needed()
        folder = self._data_folder()
        folder.check_version()
        folder.write_config(self.port)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        # The log is opened here (maybe as root): the server's account needs no access to it.
        with self.log_file.open("ab") as out:
            prefix = folder.account.command() if folder.account else []
            command = [*prefix, str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
            self._proc_command = " ".join(command)
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=clean_env(),
                start_new_session=self.detach,
            )
        try:
            self._wait_ready(began + timeout)
        except PostgresRuntimeError:
            self._signal_and_wait(self._proc.pid, signal.SIGQUIT, 10)
            raise
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info(
            "PostgreSQL %s up at 127.0.0.1:%d (pid %d) in %.1f s",
            self.version(),
            self.port,
            self._proc.pid,
            time.monotonic() - began,
        )
        return self._proc.pid

    def _wait_ready(self, deadline: float) -> None:
        """Ready = the superuser can run a query over TCP."""
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresRuntimeError(
                    f"PostgreSQL exited with code {self._proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if self._psql().run("SELECT 1").returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresRuntimeError(
            f"PostgreSQL did not answer on 127.0.0.1:{self.port} in time; "
            f"last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def _signal_and_wait(self, pid: int, sig: signal.Signals, timeout: float) -> bool:
        """Send sig to pid and wait for it to exit; True if it did."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._command_line(pid) is None:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop cleanly (fast shutdown; immediate, SIGKILL if ignored); False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        began = time.monotonic()
        if self._signal_and_wait(pid, signal.SIGINT, timeout):
            log.info("PostgreSQL stopped (pid %d) in %.1f s", pid, time.monotonic() - began)
        elif self._signal_and_wait(pid, signal.SIGQUIT, 10):
            log.warning("PostgreSQL (pid %d) ignored a fast shutdown: shut down immediately", pid)
        else:
            log.warning("PostgreSQL (pid %d) ignored SIGINT and SIGQUIT: killing it", pid)
            self.kill()
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the postmaster and its backends at once, as a crash would (fault tests)."""
        pid = self.pid()
        if pid is None:
            return False
        ps = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
        )
        for each in [pid, *map(int, ps.stdout.split())]:
            if not self._signal_and_wait(each, signal.SIGKILL, 10):
                raise PostgresRuntimeError(f"PostgreSQL process {each} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        log.info("PostgreSQL killed (pid %d)", pid)
        return True

    def clean(self) -> None:
        """Stop the server if it runs and remove its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        log.info("removed PostgreSQL data in %s", self.data_dir)

    # -- role and databases --------------------------------------------------------------

    def _psql(self) -> Psql:
        return Psql(self.bin_dir, self.port)

    def query(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; its rows as psql's unaligned text (`a|b` per line)."""
        return self._psql().query(sql, self.database_name(database))

    def ensure_databases(self) -> list[str]:
        """Create role paysaga and its two databases if missing; return what was created."""
        return self._psql().ensure_databases()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by paysaga (a random name by default); its URL."""
        name = databases.checked_name(name or databases.random_database_name())
        psql = self._psql()
        psql.ensure_role()
        psql.create_database(name)
        return self.url(name)

    def drop_database(self, database: str) -> None:
        """Drop a database (by name, or 'order'/'payment'), closing its connections."""
        self._psql().drop_database(databases.checked_name(self.database_name(database)))
