"""Payment service settings: PAYMENT_* environment variables (and KAFKA_BOOTSTRAP_SERVERS)."""

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    """Defaults run locally: gRPC on 127.0.0.1:50052, SQLite in var/payment.db."""

    model_config = SettingsConfigDict(env_prefix="PAYMENT_")

    grpc_address: str = "127.0.0.1:50052"
    database_url: str = "sqlite:///var/payment.db"
    metrics_address: str = "127.0.0.1:9102"
    consumer_group: str = "paysaga-payment"
