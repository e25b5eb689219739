# Local PostgreSQL from the machine's own binaries (Debian `postgresql`); no Docker needed.
# Listens on 127.0.0.1:PG_PORT only and trusts loopback only; role paysaga owns the databases
# paysaga_order and paysaga_payment. Override with environment or make variables: PG_PORT,
# PG_DATA_DIR, PG_BIN (where initdb is), PG_OS_USER (the account it runs as under root).
# Data in var/postgres, log in var/log/postgres.log, pid in var/run/postgres.pid.
# `$(PY) -m deploy.postgres url order|payment` prints a service's SQLAlchemy URL.

PG_PORT ?= 5432
PG_DATA_DIR ?= var/postgres
export PG_PORT PG_DATA_DIR PG_BIN PG_OS_USER

POSTGRES := $(PY) -m deploy.postgres

.PHONY: pg-up pg-down pg-clean pg-status
pg-up: check-postgres venv ## start PostgreSQL on 127.0.0.1:PG_PORT (5432), create role and databases
	@$(POSTGRES) up

pg-down: venv ## stop PostgreSQL cleanly (data kept)
	@$(POSTGRES) down

pg-clean: venv ## stop PostgreSQL and delete its data
	@$(POSTGRES) clean

pg-status: venv ## is PostgreSQL running, where
	@$(POSTGRES) status
