"""Why Kafka did not take an outbox row, and whether that ever can change.

A row Kafka refuses for good is **permanent**: the relay parks it at once. Only the record
itself can be at fault for that: too large, an invalid record, a record the client cannot
serialize (an error code that no retry can change, or produce() raising ValueError or
TypeError). Everything else may be transient and is retried with backoff: a topic missing
from the metadata, a denied or failed authorization (an ACL being granted, a credential
being rotated), produce() raising anything else. Such a row is parked only once it has
failed `max_attempts` times and is older than `stale_after_s` (the relay's rule). Errors
that mean "the cluster is not reachable right now" (and a full local queue) never count
towards those attempts. (confluent-kafka leaves KafkaError.retriable() unset on delivery
reports, so errors are classified by code.)
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


#: Errors no retry can cure: the record itself is wrong, or cannot be serialized.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError._INVALID_ARG,
    KafkaError._INVALID_TYPE,
    KafkaError._BAD_MSG,
    KafkaError._KEY_SERIALIZATION,
    KafkaError._VALUE_SERIALIZATION,
}

#: Refusals of who we are, not of the record: an ACL or a credential an operator can fix
#: while the row waits. Retried like any other transient error, never parked at once.
_DENIED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
    }
)

_DENIED_HINT = (
    " (Kafka refused this service's credentials or ACLs: check its KAFKA_SASL_* settings "
    "and its WRITE permission on the topic; the row is retried meanwhile)"
)

#: Exceptions of produce() that say the record cannot be sent as it is (not serializable).
_UNSENDABLE = (ValueError, TypeError)


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
        if code in _DENIED:
            return cls(f"{err}{_DENIED_HINT}", permanent=False, counts=True)
        return cls(str(err), permanent=code in _PERMANENT, counts=True)

    @classmethod
    def of_exception(cls, exc: Exception) -> Failure:
        """The failure of a produce() call that raised `exc`."""
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return cls.of_kafka(exc.args[0])
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, BufferError):  # the local queue is full: the cluster is slow
            return cls(error, permanent=False, counts=False)
        return cls(error, permanent=isinstance(exc, _UNSENDABLE), counts=True)


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
