# The whole system in the background: Kafka, the databases and the services (deploy/stack/).
# make up REPLICAS=N DB=sqlite|postgres BROKERS=B: B Kafka nodes (kafka-up), PostgreSQL when
# DB=postgres (pg-up), both databases migrated and seeded, N replicas of each service.
# Replica 0 on 50051/50052; replica i on the ports + 100·i. Defaults: one replica on SQLite
# (var/*.db), one broker, ROLES=split.
# Then the web console (mk/console.mk) on PAYSAGA_CONSOLE_ADDRESS (127.0.0.1:8088), pointed at
# every replica; `make up` ends with its URL, `make ps` and `make down` include it.
# Running `make up` again starts only what is missing; `make ps` and `make down` find every
# replica, every Kafka node and PostgreSQL by themselves.
# ROLES=split (the default, measured faster on 2 cores: docs/operations.md#roles-one-replica-
# as-two-processes) runs each replica as two processes, named in `make ps`: order-0-api (the
# gRPC API, on the replica's ports; var/run/order-0-api.pid, var/log/order-0-api.log) and
# order-0-worker (consumer, relay, background workers; health and admin API on the ports +
# 10: 50061, metrics 9111). ROLES=all runs each as one process (order.pid, order-1.pid, ...).

DB ?= sqlite
REPLICAS ?= 1
ROLES ?= split
STACK := $(PY) -m deploy.stack --db $(DB) --replicas $(REPLICAS) --roles $(ROLES)
# PostgreSQL is started only for DB=postgres; SQLite needs nothing.
DB_UP := $(if $(filter postgres,$(DB)),pg-up)

.PHONY: up down ps migrate seed check-stack
check-stack: venv
	@$(STACK) check

up: check-prereqs venv tools check-stack kafka-up $(DB_UP) ## start Kafka, the databases and the services (REPLICAS=1 DB=sqlite BROKERS=1 ROLES=split)
	@$(STACK) up

migrate: check-stack $(DB_UP) ## bring both databases' schema up to date (Alembic; idempotent)
	@$(STACK) migrate

seed: check-stack $(DB_UP) ## migrate, then load the demo products and funded users (idempotent)
	@$(STACK) seed

down: ## stop every service replica, every Kafka node and PostgreSQL (data kept)
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack down; fi
	@$(MAKE) kafka-down
	@if [ -e $(PG_DATA_DIR)/PG_VERSION ]; then $(MAKE) pg-down; fi

ps: venv ## show what runs where: service replicas, Kafka nodes, PostgreSQL
	@$(PY) -m deploy.stack ps
	@$(MAKE) kafka-status
	@if [ -e $(PG_DATA_DIR)/PG_VERSION ]; then $(MAKE) pg-status; fi
