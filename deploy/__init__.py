"""Running paysaga: the local Kafka runtime (deploy.kafka), the private PostgreSQL
(deploy.postgres), the whole stack of `make up` (deploy.stack), the Docker files, and the
Helm chart with its schemas and checks (deploy.helm).

May import services and the generated stubs; services never import deploy.
"""
