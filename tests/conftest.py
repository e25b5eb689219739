"""Test-wide plugins: the private Kafka broker and PostgreSQL server fixtures."""

pytest_plugins = ["tests.kafka_broker", "tests.postgres_server"]
