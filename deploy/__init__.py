"""Deployment helpers: the local Kafka runtime (deploy.kafka) and the Docker files."""
