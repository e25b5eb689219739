# Prerequisites: Python 3.11+, a JDK 17+ with Maven, Go. Each check says what to install.

.PHONY: check-prereqs check-python check-java check-go check-postgres
check-prereqs: check-python check-java check-go ## check that Python, a JDK with Maven and Go are installed

check-python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or newer" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: $$($(PYTHON) --version) is too old: install Python 3.11 or newer (or set PYTHON=...)" >&2; exit 1; }

check-java:
	@command -v java >/dev/null || { echo "error: java not found: install a JDK 17 or newer (Kafka runs on it)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found: install Apache Maven (it fetches the Kafka jars)" >&2; exit 1; }
	@v=$$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $$2}'); \
	  [ "$${v%%.*}" -ge 17 ] 2>/dev/null || { echo "error: Java $$v found: Kafka 4 needs a JDK 17 or newer" >&2; exit 1; }

check-go:
	@command -v go >/dev/null || { echo "error: go not found: install Go (it builds the pinned buf and grpcurl)" >&2; exit 1; }

# PostgreSQL is optional (SQLite is the default): PG_BIN, pg_config --bindir, the newest
# /usr/lib/postgresql/*/bin, PATH; the message says what to install.
check-postgres: check-python
	@$(PYTHON) -m deploy.postgres check >/dev/null
