"""Why Kafka did not take an outbox row, and whether that ever can change.

A row Kafka refuses for good (an error code that no retry can change: too large, an
invalid record, a denied topic; or produce() raising anything but BufferError) is
permanent: the relay parks it at once. Errors that mean "the cluster is not reachable
right now" never count towards the attempts after which a row is parked; any other
failure does. (confluent-kafka leaves KafkaError.retriable() unset on delivery reports,
so errors are classified by code.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: Errors that say the cluster cannot be reached or is failing over: a row is never parked
#: for these, however long they last.
_UNREACHABLE = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION,
}


#: Errors no retry can cure: the record (or our right to write it) is wrong.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError._INVALID_ARG,
    KafkaError._BAD_MSG,
}


@dataclass(frozen=True)
class Failure:
    """Why one row was not published."""

    error: str
    #: Kafka will never take this record as it is: park it now.
    permanent: bool
    #: The failure counts towards max_attempts (it is not an unreachable cluster).
    counts: bool
    #: The producer is unusable (not the record): a new producer retries.
    fatal: bool = False

    @classmethod
    def of_kafka(cls, err: KafkaError) -> Failure:
        code = err.code()
        if code == KafkaError._FATAL or err.fatal():
            return cls(str(err), permanent=False, counts=False, fatal=True)
        if code in _UNREACHABLE:
            return cls(str(err), permanent=False, counts=False)
        return cls(str(err), permanent=code in _PERMANENT, counts=True)

    @classmethod
    def of_exception(cls, exc: Exception) -> Failure:
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return cls.of_kafka(exc.args[0])
        return cls(f"{type(exc).__name__}: {exc}", permanent=True, counts=True)


def record_failure(seq: int, failures: dict[int, Failure]) -> DeliveryCallback:
    """A delivery callback that records row `seq`'s failure, if any, in `failures`."""

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures[seq] = Failure.of_kafka(err)

    return on_delivery


def error_of(failures: dict[int, Failure], seq: int) -> str | None:
    """Row `seq`'s error, or None if it was confirmed."""
    failure = failures.get(seq)
    return failure.error if failure is not None else None
