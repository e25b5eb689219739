"""The relay's wake-up across processes: a commit's announcement reaches the relay's process
over a UNIX datagram socket named after the SQLite file, one process at a time listens, and
nothing crosses where no channel exists (the relay polls)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services.common.persistence.db import Database
from services.common.persistence.wakeup import (
    DatagramWakeup,
    NotifyWakeup,
    OutboxSignal,
    RelayAlreadyRunning,
    WakeupListener,
    channel_for,
)

pytestmark = pytest.mark.unit


def test_an_announcement_reaches_the_listening_process(tmp_path: Path) -> None:
    database = str(tmp_path / "order.db")
    relay_side, writer_side = DatagramWakeup(database), DatagramWakeup(database)
    relay_side.listen()
    try:
        assert relay_side.address == f"{tmp_path.resolve()}/order.db.relay.sock"
        assert not relay_side.receive(0.0), "nothing announced yet"
        for _ in range(50):  # a burst of commits: one wake-up takes them all
            writer_side.announce()
        assert relay_side.receive(1.0)
        assert not relay_side.receive(0.0), "all fifty were taken at once"
    finally:
        relay_side.close()
        writer_side.close()
    assert not Path(relay_side.address).exists(), "the socket goes with its listener"


def test_announcing_with_no_relay_listening_is_harmless(tmp_path: Path) -> None:
    writer_side = DatagramWakeup(str(tmp_path / "order.db"))
    writer_side.announce()  # the relay finds the rows when it starts
    writer_side.close()


def test_one_process_at_a_time_publishes_a_sqlite_outbox(tmp_path: Path) -> None:
    database = str(tmp_path / "order.db")
    first, second = DatagramWakeup(database), DatagramWakeup(database)
    first.listen()
    with pytest.raises(RelayAlreadyRunning, match=r"order\.db\.relay-lock.*<SVC>_ROLE=api"):
        second.listen()
    first.close()
    second.listen()  # the first one is gone: its lock and socket are free again
    second.close()


def test_a_path_too_long_for_a_socket_uses_the_abstract_namespace(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    relay_side, writer_side = (
        DatagramWakeup(str(deep / "order.db")),
        DatagramWakeup(str(deep / "order.db")),
    )
    assert relay_side.address.startswith("\0paysaga-relay-")
    assert relay_side.address == writer_side.address, "both processes name it alike"
    relay_side.listen()
    try:
        writer_side.announce()
        assert relay_side.receive(1.0)
    finally:
        relay_side.close()
        writer_side.close()


def test_set_announces_and_a_listener_wakes_its_own_relay_only(tmp_path: Path) -> None:
    database = str(tmp_path / "order.db")
    writer_signal, relay_signal = OutboxSignal(), OutboxSignal()
    writer_signal.announce_through(DatagramWakeup(database))
    channel = DatagramWakeup(database)
    channel.listen()
    listener = WakeupListener(channel, relay_signal)
    listener.start()
    try:
        writer_signal.set()  # after a commit in the api process
        assert relay_signal.wait(2.0), "the worker's relay was woken"
        assert writer_signal.is_set()
        relay_signal.clear()
        relay_signal.set()  # the relay's own set() (on stop) announces nowhere
        writer_signal.clear()
        time.sleep(0.05)
        assert not writer_signal.is_set()
    finally:
        listener.stop(2.0)
    assert not listener.is_alive()
    assert not Path(channel.address).exists()


def test_the_channel_of_each_kind_of_database(tmp_path: Path) -> None:
    assert isinstance(channel_for(f"sqlite:///{tmp_path}/order.db"), DatagramWakeup)
    assert channel_for("sqlite://") is None, "in memory: one process only"
    assert channel_for("sqlite:///:memory:") is None
    assert isinstance(channel_for("postgresql+psycopg://paysaga@127.0.0.1:1/order"), NotifyWakeup)


def test_the_database_signal_is_an_outbox_signal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    woken = threading.Event()
    assert isinstance(db.outbox_signal, OutboxSignal)
    threading.Thread(target=lambda: woken.set() if db.outbox_signal.wait(2.0) else None).start()
    db.outbox_signal.set()
    assert woken.wait(2.0)
    db.dispose()
