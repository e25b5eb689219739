"""How a commit that wrote outbox rows wakes the relay, in this process or in another one.

`OutboxSignal` is `Database.outbox_signal`: set once a transaction that wrote outbox rows
has committed (messaging.outbox registers `set` with `run_after_commit`), waited on and
cleared by the relay, as a `threading.Event` would be. Within one process that is all it
takes. When the process that writes the rows is not the one whose relay publishes them
(`<SVC>_ROLE=api` and `worker`, services.common.runtime.roles), a `WakeupChannel` carries
the wake-up across: the writing process `announce()`s after each such commit, and a
`WakeupListener` in the relay's process sets its own signal for every announcement it
`receive()`s. A lost announcement costs latency, never a row: the relay also looks every
`<SVC>_RELAY_IDLE_POLL_S`.

- SQLite, `DatagramWakeup`: a UNIX datagram socket named after the database file (the
  processes sharing one SQLite file share a machine), about one `sendto` per commit. The
  relay's process binds it holding a lock file, so one process at a time publishes a
  SQLite outbox (two relays on one file would publish every row twice).
- PostgreSQL, `NotifyWakeup`: LISTEN/NOTIFY on the service's own database. A writing
  process NOTIFYs after its commit, from a thread and a connection of its own, in a
  transaction of its own: a NOTIFY inside the writers' transactions would hold a
  database-wide lock from their commit until it is durable, queueing every writer's
  commit behind the others'. Announcements made while one is sent are folded into the
  next. Any number of relay processes may share the database (their leases share the rows
  out, services.common.messaging.claims), but one of them at a time is woken: the one whose
  connection holds an advisory lock (`WAKEUP_LOCK_KEY`) LISTENs; each of the others tries
  the lock every second (its relay polls meanwhile) and takes over when that connection
  ends. Waking them all would cost each of the others a claim per commit that finds the
  rows taken.
- Other databases: no channel (`channel_for` answers None) and the relay polls.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import select
import socket
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine.url import make_url

from services.common.persistence.kinds import sqlite_file
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)

#: The longest path a UNIX socket address may have (sun_path is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107


class RelayAlreadyRunning(RuntimeError):
    """Another process publishes this database's outbox already; the message says which."""


class WakeupChannel(ABC):
    """Carries "outbox rows committed" from the processes that write them to the relay's."""

    @abstractmethod
    def announce(self) -> None:
        """In a writing process, after the commit: tell the relay. Never blocks or raises."""

    @abstractmethod
    def listen(self) -> None:
        """In the relay's process, before `receive`: start receiving announcements.
        Raises RelayAlreadyRunning if another process receives them already."""

    @abstractmethod
    def receive(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for announcements; True if any came (all are taken)."""

    @abstractmethod
    def close(self) -> None:
        """Stop sending and receiving; free what `listen` took."""


class OutboxSignal:
    """Set after a commit that wrote outbox rows; the relay waits on it and clears it.

    `announce_through(channel)`: every set() also announces the commit on `channel`, for a
    relay in another process. The relay's own wake-ups (`wake_here`, `wake_to_settle`) never
    cross. A wake-up says whether rows were committed (`take_committed`): the relay claims
    after those, not after its own rounds are answered, which would find nothing new.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._committed = threading.Event()
        self._channel: WakeupChannel | None = None

    def announce_through(self, channel: WakeupChannel) -> None:
        self._channel = channel

    def set(self) -> None:
        self._committed.set()
        self._event.set()
        channel = self._channel
        if channel is not None:
            channel.announce()

    def wake_here(self) -> None:
        """Wake this process's relay only, as after a commit (an announcement from another
        process came, or the relay is to publish what is pending and stop)."""
        self._committed.set()
        self._event.set()

    def wake_to_settle(self) -> None:
        """Wake this process's relay to settle a round the broker answered: no commit."""
        self._event.set()

    def take_committed(self) -> bool:
        """Whether rows were committed since the last call. Call it before claiming: a
        commit announced after it is taken by the next call."""
        if not self._committed.is_set():
            return False
        self._committed.clear()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class WakeupListener(BackgroundWorker):
    """Wakes this process's relay for every announcement `channel` receives."""

    def __init__(self, channel: WakeupChannel, signal: OutboxSignal) -> None:
        super().__init__("relay-wakeup")
        self.channel = channel
        self.signal = signal

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if self.channel.receive(1.0):
                        self.signal.wake_here()
                except OSError:
                    # Never fatal: the relay polls anyway; a broken socket is logged once.
                    log.exception("relay wake-up channel failed; the relay polls instead")
                    self._stopping.wait()
        finally:
            self.channel.close()

    def _wake(self) -> None:
        self.channel.announce()


class DatagramWakeup(WakeupChannel):
    """A UNIX datagram socket next to a SQLite file (`<file>.relay.sock`), or in Linux's
    abstract namespace when that path is too long for a socket address."""

    def __init__(self, database_file: str) -> None:
        path = Path(database_file).resolve()
        self.lock_path = Path(f"{path}.relay-lock")
        socket_path = f"{path}.relay.sock"
        if len(socket_path.encode()) <= _MAX_SOCKET_PATH:
            self.address = socket_path
        else:
            digest = hashlib.sha256(str(path).encode()).hexdigest()[:32]
            self.address = f"\0paysaga-relay-{digest}"
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._receiver: socket.socket | None = None
        self._lock: IO[str] | None = None

    def announce(self) -> None:
        try:
            self._sender.sendto(b"\x01", self.address)
        except OSError:
            # No relay listens (it finds the rows when it starts), or its queue is full
            # (it has announcements to wake for already).
            pass

    def listen(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.lock_path, "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RelayAlreadyRunning(
                f"another process publishes the outbox of this SQLite database already (it "
                f"holds {self.lock_path}): a SQLite database has one worker process; stop "
                "that one first, or give this process <SVC>_ROLE=api"
            ) from None
        self._lock = lock
        if not self.address.startswith("\0"):
            Path(self.address).unlink(missing_ok=True)  # a crashed relay's; we hold the lock
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(self.address)
        receiver.setblocking(False)
        self._receiver = receiver

    def receive(self, timeout_s: float) -> bool:
        receiver = self._receiver
        if receiver is None:
            raise RuntimeError("DatagramWakeup.receive before listen()")
        ready, _, _ = select.select([receiver], [], [], timeout_s)
        if not ready:
            return False
        while True:  # every announcement queued so far: one relay round covers them all
            try:
                receiver.recv(16)
            except BlockingIOError:
                return True

    def close(self) -> None:
        self._sender.close()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
            if not self.address.startswith("\0"):
                Path(self.address).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


#: The LISTEN/NOTIFY channel of a service's database (each service has a database of its own).
NOTIFY_CHANNEL = "paysaga_outbox"
#: The advisory lock ("pswakeup" in ASCII) held by the one relay process that LISTENs.
WAKEUP_LOCK_KEY = int.from_bytes(b"pswakeup", "big")
#: The listener's keepalives (about 10 s to notice the other side gone): libpq's on this
#: side, the server's (its settings, for this session) on the other.
_CLIENT_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}
_SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
    "-c tcp_user_timeout=10000"
)


class NotifyWakeup(WakeupChannel):
    """PostgreSQL's LISTEN/NOTIFY on `NOTIFY_CHANNEL` (see the module docstring)."""

    def __init__(self, url: str, retry_s: float = 1.0) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.retry_s = retry_s
        self._pending = threading.Event()
        self._closed = threading.Event()
        self._start_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._listener: psycopg.Connection[tuple[object, ...]] | None = None
        #: Whether this process's listener holds the wake-up lock and LISTENs.
        self.listening = False

    def announce(self) -> None:
        self._pending.set()
        if self._sender is None:
            with self._start_lock:
                if self._sender is None and not self._closed.is_set():
                    self._sender = threading.Thread(
                        target=self._send, name="relay-wakeup-notify", daemon=True
                    )
                    self._sender.start()

    def _send(self) -> None:
        connection: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._closed.is_set():
            self._pending.wait()
            self._pending.clear()
            if self._closed.is_set():
                break
            try:
                if connection is None or connection.closed:
                    connection = psycopg.connect(
                        self.conninfo, autocommit=True, options="-c synchronous_commit=off"
                    )
                connection.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            except psycopg.Error as exc:
                # The relay polls meanwhile; the next announcement connects again.
                log.warning("relay wake-up not sent", extra={"error": str(exc)})
                connection = None
                self._closed.wait(self.retry_s)
        if connection is not None:
            connection.close()

    def listen(self) -> None:
        self._listener = self._connect_listener()

    def _connect_listener(self) -> psycopg.Connection[tuple[object, ...]]:
        # Keepalives both ways: a server that lost this process's host (no FIN) ends its
        # session, and the wake-up lock with it, within seconds rather than hours, so another
        # relay takes over; and this side notices a server gone the same way.
        given = conninfo_to_dict(self.conninfo).get("options")
        options = f"{given} {_SERVER_KEEPALIVES}" if given else _SERVER_KEEPALIVES
        conninfo = make_conninfo(self.conninfo, options=options, **_CLIENT_KEEPALIVES)
        connection = psycopg.connect(conninfo, autocommit=True)
        self.listening = False
        try:
            self._take_the_lead(connection)
        except BaseException:
            connection.close()  # and the lock with it, if it was taken
            raise
        return connection

    def _take_the_lead(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        """LISTEN on `connection` if it gets the wake-up lock (see the module docstring)."""
        locked = connection.execute("SELECT pg_try_advisory_lock(%s)", (WAKEUP_LOCK_KEY,))
        row = locked.fetchone()
        if row is not None and row[0]:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening = True

    def receive(self, timeout_s: float) -> bool:
        try:
            if self._listener is None or self._listener.closed:
                # Lost, and listening again: what was announced meanwhile is not known,
                # so the relay looks once.
                self._listener = self._connect_listener()
                return True
            if not self.listening:  # another relay is woken; try again after a while
                if self._closed.wait(timeout_s):
                    return False
                self._take_the_lead(self._listener)
                return self.listening  # it just took over: the relay looks once
            if not any(True for _ in self._listener.notifies(timeout=timeout_s, stop_after=1)):
                return False
            for _ in self._listener.notifies(timeout=0):
                pass  # every announcement queued so far: one relay round covers them all
            return True
        except (psycopg.Error, OSError) as exc:
            # Closed, and the lock with it: another relay may take over meanwhile.
            log.warning("relay wake-up channel lost; listening again", extra={"error": str(exc)})
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            self._closed.wait(min(timeout_s, self.retry_s))
            return False

    def close(self) -> None:
        self._closed.set()
        self._pending.set()
        if self._sender is not None:
            self._sender.join(5.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def channel_for(url: str) -> WakeupChannel | None:
    """The channel between the processes of one database at `url`, or None (they poll)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            return None  # a database of one process only
        return DatagramWakeup(os.path.abspath(path))
    if parsed.get_backend_name() == "postgresql":
        return NotifyWakeup(url)
    return None
