"""Integration tests against a real, private Kafka broker."""
