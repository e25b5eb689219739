import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paysaga.v1 import orders_pb2 as _orders_pb2
from paysaga.v1 import payments_pb2 as _payments_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_APPROVED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_DECLINED: _ClassVar[PaymentStatus]

class TransactionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSACTION_STATUS_UNSPECIFIED: _ClassVar[TransactionStatus]
    TRANSACTION_STATUS_SUCCESSFUL: _ClassVar[TransactionStatus]
    TRANSACTION_STATUS_UNSUCCESSFUL: _ClassVar[TransactionStatus]
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_APPROVED: PaymentStatus
PAYMENT_STATUS_DECLINED: PaymentStatus
TRANSACTION_STATUS_UNSPECIFIED: TransactionStatus
TRANSACTION_STATUS_SUCCESSFUL: TransactionStatus
TRANSACTION_STATUS_UNSUCCESSFUL: TransactionStatus

class OrderPurchased(_message.Message):
    __slots__ = ("order_id", "user_id", "product_id", "amount_cents", "create_time", "deadline_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    product_id: int
    amount_cents: int
    create_time: _timestamp_pb2.Timestamp
    deadline_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., product_id: _Optional[int] = ..., amount_cents: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PaymentProcessed(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "status", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    amount_cents: int
    status: PaymentStatus
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., amount_cents: _Optional[int] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class TransactionRecorded(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "status", "transaction_id", "reason", "kind")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    amount_cents: int
    status: TransactionStatus
    transaction_id: str
    reason: str
    kind: _payments_pb2.TransactionKind
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., amount_cents: _Optional[int] = ..., status: _Optional[_Union[TransactionStatus, str]] = ..., transaction_id: _Optional[str] = ..., reason: _Optional[str] = ..., kind: _Optional[_Union[_payments_pb2.TransactionKind, str]] = ...) -> None: ...

class OrderFailed(_message.Message):
    __slots__ = ("order_id", "user_id", "amount_cents", "reason", "fail_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAIL_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: int
    amount_cents: int
    reason: str
    fail_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[int] = ..., amount_cents: _Optional[int] = ..., reason: _Optional[str] = ..., fail_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderUpdated(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _orders_pb2.Order
    def __init__(self, order: _Optional[_Union[_orders_pb2.Order, _Mapping]] = ...) -> None: ...
