"""Order service settings: ORDER_* environment variables (and KAFKA_BOOTSTRAP_SERVERS)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    """Defaults run locally: gRPC on 127.0.0.1:50051, SQLite in var/order.db."""

    model_config = SettingsConfigDict(env_prefix="ORDER_")

    grpc_address: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///var/order.db"
    metrics_address: str = "127.0.0.1:9101"
    consumer_group: str = "paysaga-order"
    #: An order not COMPLETED or FAILED this many seconds after its creation is FAILED
    #: (and any money taken for it given back): ORDER_SAGA_DEADLINE_S.
    saga_deadline_s: float = 60.0
    #: How often the saga deadlines are looked at.
    deadline_poll_s: float = 1.0
    #: Most WatchOrders streams open at once in one process; more get RESOURCE_EXHAUSTED.
    watch_max_streams: int = 10_000
    #: Most WatchOrders streams one authenticated caller (a token's subject) may hold open
    #: in one process, so that no caller takes every slot; more get RESOURCE_EXHAUSTED. With
    #: auth off callers are not told apart: only watch_max_streams applies.
    watch_max_streams_per_caller: int = Field(default=100, ge=1)
    #: The same for a caller with the operator scope (dashboards watching every user).
    watch_max_streams_per_operator: int = Field(default=1_000, ge=1)
    #: Changes queued for one stream before it is ended as too slow (RESOURCE_EXHAUSTED).
    watch_max_backlog: int = 1_000
    #: Recent order changes held (and read back at start) to resume streams from a token.
    watch_history: int = 50_000
    #: A FAILED order whose charge was seen and whose refund was not, this many seconds
    #: on, has its OrderFailed announced again (at most once per this many seconds):
    #: ORDER_REFUND_REANNOUNCE_S. See services.order.refunds.
    refund_reannounce_s: float = Field(default=60.0, gt=0)
