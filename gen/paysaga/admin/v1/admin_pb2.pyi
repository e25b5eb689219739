import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_ORDER_CREATED: _ClassVar[StepKind]
    STEP_KIND_PRODUCED: _ClassVar[StepKind]
    STEP_KIND_APPLIED: _ClassVar[StepKind]
    STEP_KIND_DEAD_LETTERED: _ClassVar[StepKind]
    STEP_KIND_REDRIVEN: _ClassVar[StepKind]
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_ORDER_CREATED: StepKind
STEP_KIND_PRODUCED: StepKind
STEP_KIND_APPLIED: StepKind
STEP_KIND_DEAD_LETTERED: StepKind
STEP_KIND_REDRIVEN: StepKind

class Step(_message.Message):
    __slots__ = ("time", "kind", "service", "replica", "topic", "partition", "offset", "event_id", "event_type", "produced_time", "detail")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_TIME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    kind: StepKind
    service: str
    replica: str
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    produced_time: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[StepKind, str]] = ..., service: _Optional[str] = ..., replica: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., produced_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartitionLag(_message.Message):
    __slots__ = ("topic", "partition", "committed", "end", "lag", "assigned_here")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_HERE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    assigned_here: bool
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., committed: _Optional[int] = ..., end: _Optional[int] = ..., lag: _Optional[int] = ..., assigned_here: _Optional[bool] = ...) -> None: ...

class TopicCount(_message.Message):
    __slots__ = ("topic", "count")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    count: int
    def __init__(self, topic: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("service", "replica", "outbox_pending", "outbox_oldest_age_seconds", "outbox_parked", "consumer_group", "lag", "lag_error", "dead_letters", "last_batch_time", "records_applied", "health_names", "problems", "inbox_rows", "inbox_retention_days", "held_orders")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PENDING_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_OLDEST_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PARKED_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    LAG_ERROR_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    LAST_BATCH_TIME_FIELD_NUMBER: _ClassVar[int]
    RECORDS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    INBOX_ROWS_FIELD_NUMBER: _ClassVar[int]
    INBOX_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    HELD_ORDERS_FIELD_NUMBER: _ClassVar[int]
    service: str
    replica: str
    outbox_pending: int
    outbox_oldest_age_seconds: float
    outbox_parked: int
    consumer_group: str
    lag: _containers.RepeatedCompositeFieldContainer[PartitionLag]
    lag_error: str
    dead_letters: _containers.RepeatedCompositeFieldContainer[TopicCount]
    last_batch_time: _timestamp_pb2.Timestamp
    records_applied: int
    health_names: _containers.RepeatedScalarFieldContainer[str]
    problems: _containers.RepeatedScalarFieldContainer[str]
    inbox_rows: int
    inbox_retention_days: float
    held_orders: int
    def __init__(self, service: _Optional[str] = ..., replica: _Optional[str] = ..., outbox_pending: _Optional[int] = ..., outbox_oldest_age_seconds: _Optional[float] = ..., outbox_parked: _Optional[int] = ..., consumer_group: _Optional[str] = ..., lag: _Optional[_Iterable[_Union[PartitionLag, _Mapping]]] = ..., lag_error: _Optional[str] = ..., dead_letters: _Optional[_Iterable[_Union[TopicCount, _Mapping]]] = ..., last_batch_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., records_applied: _Optional[int] = ..., health_names: _Optional[_Iterable[str]] = ..., problems: _Optional[_Iterable[str]] = ..., inbox_rows: _Optional[int] = ..., inbox_retention_days: _Optional[float] = ..., held_orders: _Optional[int] = ...) -> None: ...

class GetOrderTimelineRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderTimelineResponse(_message.Message):
    __slots__ = ("steps", "status", "failure_reason")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    status: str
    failure_reason: str
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., status: _Optional[str] = ..., failure_reason: _Optional[str] = ...) -> None: ...

class ListStuckOrdersRequest(_message.Message):
    __slots__ = ("older_than_seconds", "limit", "page_token")
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    older_than_seconds: float
    limit: int
    page_token: str
    def __init__(self, older_than_seconds: _Optional[float] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StuckOrder(_message.Message):
    __slots__ = ("order_id", "user_id", "create_time", "waiting_for", "deadline_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    create_time: _timestamp_pb2.Timestamp
    waiting_for: str
    deadline_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting_for: _Optional[str] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListStuckOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[StuckOrder]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[StuckOrder, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "topic", "partition", "offset", "event_id", "event_type", "order_id", "reason", "dead_letter_time", "redrive_count", "redrive_time", "redriven_by", "service")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_TIME_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    REDRIVEN_BY_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    id: str
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    order_id: str
    reason: str
    dead_letter_time: _timestamp_pb2.Timestamp
    redrive_count: int
    redrive_time: _timestamp_pb2.Timestamp
    redriven_by: str
    service: str
    def __init__(self, id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., order_id: _Optional[str] = ..., reason: _Optional[str] = ..., dead_letter_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., redrive_count: _Optional[int] = ..., redrive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., redriven_by: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("topic", "since", "limit", "page_token")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    topic: str
    since: _timestamp_pb2.Timestamp
    limit: int
    page_token: str
    def __init__(self, topic: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetDeadLetterResponse(_message.Message):
    __slots__ = ("dead_letter", "key", "value", "headers", "decoded", "decode_error")
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DECODED_FIELD_NUMBER: _ClassVar[int]
    DECODE_ERROR_FIELD_NUMBER: _ClassVar[int]
    dead_letter: DeadLetter
    key: bytes
    value: bytes
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    decoded: str
    decode_error: str
    def __init__(self, dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., decoded: _Optional[str] = ..., decode_error: _Optional[str] = ...) -> None: ...

class RedriveDeadLettersRequest(_message.Message):
    __slots__ = ("ids", "all", "topic", "requested_by", "dry_run")
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    topic: str
    requested_by: str
    dry_run: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., topic: _Optional[str] = ..., requested_by: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class Redriven(_message.Message):
    __slots__ = ("id", "redrive_id", "redrive_count", "topic", "partition", "offset", "event_id", "event_type", "key", "reason", "order_id", "note", "record_redrive_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_ID_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    RECORD_REDRIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    redrive_id: str
    redrive_count: int
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    key: bytes
    reason: str
    order_id: str
    note: str
    record_redrive_count: int
    def __init__(self, id: _Optional[str] = ..., redrive_id: _Optional[str] = ..., redrive_count: _Optional[int] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., key: _Optional[bytes] = ..., reason: _Optional[str] = ..., order_id: _Optional[str] = ..., note: _Optional[str] = ..., record_redrive_count: _Optional[int] = ...) -> None: ...

class RedriveDeadLettersResponse(_message.Message):
    __slots__ = ("redriven", "dry_run", "left_out")
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    redriven: _containers.RepeatedCompositeFieldContainer[Redriven]
    dry_run: bool
    left_out: _containers.RepeatedCompositeFieldContainer[Redriven]
    def __init__(self, redriven: _Optional[_Iterable[_Union[Redriven, _Mapping]]] = ..., dry_run: _Optional[bool] = ..., left_out: _Optional[_Iterable[_Union[Redriven, _Mapping]]] = ...) -> None: ...

class ListHeldOrdersRequest(_message.Message):
    __slots__ = ("older_than_seconds", "limit", "order_ids", "page_token")
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    older_than_seconds: float
    limit: int
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    page_token: str
    def __init__(self, older_than_seconds: _Optional[float] = ..., limit: _Optional[int] = ..., order_ids: _Optional[_Iterable[str]] = ..., page_token: _Optional[str] = ...) -> None: ...

class HeldOrder(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "charge_time", "failure_reason", "reannounce_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CHARGE_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    REANNOUNCE_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    amount_cents: int
    charge_time: _timestamp_pb2.Timestamp
    failure_reason: str
    reannounce_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., amount_cents: _Optional[int] = ..., charge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failure_reason: _Optional[str] = ..., reannounce_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListHeldOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[HeldOrder]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[HeldOrder, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
