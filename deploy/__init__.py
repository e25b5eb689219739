"""Running paysaga: the local Kafka runtime (deploy.kafka), the private PostgreSQL
(deploy.postgres), the whole stack of `make up` (deploy.stack), and the Docker files.

May import services and the generated stubs; services never import deploy.
"""
