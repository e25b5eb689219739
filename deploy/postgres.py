"""A real local PostgreSQL from the machine's own binaries: init once, start, stop, kill, clean.

`python -m deploy.postgres up|down|clean|status|url|check`; settings from PG_* variables.
The server listens on 127.0.0.1 only (no unix socket) and trusts loopback connections only.
It holds the role `paysaga` and its databases `paysaga_order` and `paysaga_payment`.
PostgreSQL refuses to run as root, so under root it runs as an unprivileged account
(`postgres` if the machine has it, else `nobody`; PG_OS_USER overrides) that owns the data.
Only the standard library is used: role and databases are made with the server's own psql.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.install import port_in_use

__all__ = [
    "PortInUseError",
    "PostgresNotFoundError",
    "PostgresRuntime",
    "PostgresRuntimeError",
    "find_bin_dir",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARIES = ("initdb", "postgres", "psql")
SUPERUSER = "postgres"  # the bootstrap superuser initdb creates, whatever account runs it
ROLE = "paysaga"
DATABASES = {"order": "paysaga_order", "payment": "paysaga_payment"}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
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
# Written by deploy/postgres.py: trust on loopback only, nothing else.
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
"""


class PostgresRuntimeError(RuntimeError):
    """The server could not be found, initialised, started or stopped; the message says why."""


class PostgresNotFoundError(PostgresRuntimeError):
    """No PostgreSQL server binaries on this machine."""


class PortInUseError(PostgresRuntimeError):
    """The port the server needs is held by another process."""


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,), so 15 sorts after 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_bin_dir() -> Path:
    """PG_BIN, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    wanted = ", ".join(BINARIES)
    if explicit := os.environ.get("PG_BIN"):
        if _has_binaries(Path(explicit)):
            return Path(explicit)
        raise PostgresNotFoundError(
            f"PG_BIN={explicit} does not hold {wanted}: point it at the directory holding "
            "initdb, or unset it and install the `postgresql` package (e.g. `apt-get install "
            "postgresql`)"
        )
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for bin_dir in candidates:
        if _has_binaries(bin_dir):
            return bin_dir
    raise PostgresNotFoundError(
        f"PostgreSQL server binaries ({wanted}) not found via pg_config, /usr/lib/postgresql/*/bin "
        "or PATH: install the `postgresql` package (e.g. `apt-get install postgresql`) "
        "or set PG_BIN to the directory holding initdb"
    )


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_root(cls, name: str | None = None) -> Account:
        if name is None:
            name = "postgres" if _account_exists("postgres") else "nobody"
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PostgresRuntimeError(f"no account {name!r} to run PostgreSQL as") from None
        if entry.pw_uid == 0:
            raise PostgresRuntimeError(f"PostgreSQL refuses to run as root: PG_OS_USER={name}")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def command(self) -> list[str]:
        """The prefix that runs a command as this account (setpriv execs: the pid stays)."""
        if shutil.which("setpriv") is None:
            raise PostgresRuntimeError(
                "setpriv not found (util-linux): it runs PostgreSQL as an unprivileged account "
                "when started as root"
            )
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    def can_enter(self, path: Path) -> bool:
        """True if the account may traverse `path` (owner, primary group or other x bit)."""
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


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

    @staticmethod
    def database_name(database: str) -> str:
        """'order' -> 'paysaga_order', 'payment' -> 'paysaga_payment'; other names unchanged."""
        return DATABASES.get(database, database)

    def url(self, database: str = "order") -> str:
        """The SQLAlchemy URL (psycopg 3 driver) for role paysaga on one database."""
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{self.database_name(database)}"

    def version(self) -> str:
        """The server binaries' version, e.g. '15.18'."""
        out = subprocess.run(
            [str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        found = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out)
        return found.group(1) if found else "unknown"

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

    def _check_reachable(self, account: Account) -> None:
        """The account must traverse every parent of the data folder (pytest's tmp is 0700)."""
        for parent in reversed(self.data_dir.parents):
            if parent.exists() and not account.can_enter(parent):
                raise PostgresRuntimeError(
                    f"{parent} (mode {stat.filemode(parent.stat().st_mode)}) cannot be entered by "
                    f"{account.name}, the account PostgreSQL runs as: put the data elsewhere "
                    f"(PG_DATA_DIR) or allow it (chmod o+x {parent})"
                )

    def _own(self, path: Path, account: Account | None, recursive: bool = False) -> None:
        if account is None:
            return
        paths = [path, *(path.rglob("*") if recursive else [])]
        for each in paths:
            os.chown(each, account.uid, account.gid, follow_symlinks=False)

    def init_if_needed(self) -> bool:
        """Create the data folder with initdb once; True if it was created now."""
        account = self.account
        if account is not None:
            self._check_reachable(account)
        if (self.data_dir / "PG_VERSION").exists():
            if account is not None and self.data_dir.stat().st_uid != account.uid:
                log.info("giving %s to %s (PostgreSQL runs as it)", self.data_dir, account.name)
                self._own(self.data_dir, account, recursive=True)
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise PostgresRuntimeError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data folder: remove it first"
            )
        self.data_dir.chmod(0o700)
        self._own(self.data_dir, account)
        initdb = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
        initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
        prefix = account.command() if account else []
        run = subprocess.run(
            [*prefix, *initdb], capture_output=True, text=True, cwd=self.data_dir, env=_clean_env()
        )
        if run.returncode != 0:
            raise PostgresRuntimeError(f"initdb {self.data_dir} failed:\n{run.stdout}{run.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# paysaga's settings, rewritten at every start\ninclude 'paysaga.conf'\n")
        log.info("initialised PostgreSQL %s data in %s", self.version(), self.data_dir)
        return True

    def _check_data_version(self) -> None:
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        binaries = self.version()
        if binaries.split(".")[0] != made_by.split(".")[0]:
            raise PostgresRuntimeError(
                f"{self.data_dir} was made by PostgreSQL {made_by} but the binaries in "
                f"{self.bin_dir} are {binaries}: point PG_BIN at PostgreSQL {made_by}, "
                f"or remove the data (make pg-clean)"
            )

    def _write_config(self, account: Account | None) -> None:
        settings = {**SETTINGS, "port": str(self.port)}
        conf = "".join(f"{name} = {value}\n" for name, value in settings.items())
        for name, text in (("paysaga.conf", conf), ("pg_hba.conf", HBA)):
            path = self.data_dir / name
            path.write_text(text)
            path.chmod(0o600)
            self._own(path, account)

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
        self._check_data_version()
        account = self.account
        self._write_config(account)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        # The log is opened here (maybe as root): the server's account needs no access to it.
        with self.log_file.open("ab") as out:
            prefix = account.command() if account else []
            command = [*prefix, str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
            self._proc_command = " ".join(command)
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_clean_env(),
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
            if self._psql("SELECT 1").returncode == 0:
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

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        env = {**_clean_env(), "PGCONNECT_TIMEOUT": "2"}
        return subprocess.run([*command, "-c", sql], capture_output=True, text=True, env=env)

    def query(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; its rows as psql's unaligned text (`a|b` per line)."""
        done = self._psql(sql, self.database_name(database))
        if done.returncode != 0:
            raise PostgresRuntimeError(f"psql failed on {sql!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _ensure_role(self) -> bool:
        if self.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
            return False
        self.query(f'CREATE ROLE "{ROLE}" LOGIN')
        return True

    def _create(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}" OWNER "{ROLE}" TEMPLATE template0')

    def ensure_databases(self) -> list[str]:
        """Create role paysaga and its two databases if missing; return what was created."""
        created = [f"role {ROLE}"] if self._ensure_role() else []
        for name in DATABASES.values():
            if not self.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
                self._create(name)
                created.append(f"database {name}")
        return created

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by paysaga (a random name by default); its URL."""
        name = name or f"paysaga_test_{uuid.uuid4().hex[:12]}"
        if not _NAME.fullmatch(name):
            raise PostgresRuntimeError(f"database name {name!r} must match {_NAME.pattern}")
        self._ensure_role()
        self._create(name)
        return self.url(name)

    def drop_database(self, database: str) -> None:
        """Drop a database (by name, or 'order'/'payment'), closing its connections."""
        name = self.database_name(database)
        if not _NAME.fullmatch(name):
            raise PostgresRuntimeError(f"database name {name!r} must match {_NAME.pattern}")
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _clean_env() -> dict[str, str]:
    """Our environment without libpq's PG* variables (PGSSLMODE, PGSERVICE, ... would leak in)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


# -- command line ----------------------------------------------------------------------------


def runtime_from_env() -> PostgresRuntime:
    """The server the Makefile means: PG_PORT, PG_DATA_DIR, PG_OS_USER (PG_BIN: find_bin_dir)."""
    env = os.environ.get
    return PostgresRuntime(
        port=int(env("PG_PORT") or "5432"),
        data_dir=Path(env("PG_DATA_DIR") or REPO_ROOT / "var/postgres"),
        os_user=env("PG_OS_USER") or None,
    )


def _up(pg: PostgresRuntime) -> None:
    if (pid := pg.pid()) is not None and pg.running_port() == pg.port:
        print(f"PostgreSQL is already running at 127.0.0.1:{pg.port} (pid {pid}): nothing to start")
    else:  # (start() explains a server of this data folder running on another port)
        pg.start(timeout=float(os.environ.get("PG_START_TIMEOUT") or "60"))
        print(f"server log: {pg.log_file}; stop it with `make pg-down`")
    for what in pg.ensure_databases():
        print(f"created {what}")
    for database in DATABASES:
        print(f"  {database:<8} {pg.url(database)}")


def _down(pg: PostgresRuntime) -> None:
    if not pg.stop():
        print("PostgreSQL is not running: nothing to stop")
        return
    print(f"data kept in {pg.data_dir} (`make pg-clean` removes it)")


def _clean(pg: PostgresRuntime) -> None:
    pg.clean()
    print(f"PostgreSQL data removed: {pg.data_dir}")


def _status(pg: PostgresRuntime) -> None:
    pid = pg.pid()
    state = f"running at 127.0.0.1:{pg.running_port()} (pid {pid})" if pid else "not running"
    print(f"PostgreSQL is {state}; data {pg.data_dir}; log {pg.log_file}")


def _check(pg: PostgresRuntime) -> None:
    print(f"PostgreSQL {pg.version()} binaries in {pg.bin_dir}")


COMMANDS = {"up": _up, "down": _down, "clean": _clean, "status": _status, "check": _check}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.postgres", description=__doc__)
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


if __name__ == "__main__":
    sys.exit(main())
