"""Test-wide plugins: the private Kafka broker fixture."""

pytest_plugins = ["tests.kafka_broker"]
