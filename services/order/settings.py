"""Order service settings: ORDER_* environment variables (and KAFKA_BOOTSTRAP_SERVERS)."""

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    """Defaults run locally: gRPC on 127.0.0.1:50051, SQLite in var/order.db."""

    model_config = SettingsConfigDict(env_prefix="ORDER_")

    grpc_address: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///var/order.db"
    consumer_group: str = "paysaga-order"
    #: An order not COMPLETED or FAILED this many seconds after its creation is FAILED
    #: (and any money taken for it given back): ORDER_SAGA_DEADLINE_S.
    saga_deadline_s: float = 60.0
    #: How often the saga deadlines are looked at.
    deadline_poll_s: float = 1.0
