# Security shortcuts for the local stack. `make up` is loopback, plaintext, auth off (each
# service logs a one-line warning saying so). `make up AUTH=1 TLS=1` runs it secured with
# development secrets generated once under var/secrets (never committed: var/ is ignored):
# a CA, a server certificate for localhost/127.0.0.1/::1, a client certificate (mTLS) and an
# HS256 JWT secret. `make token USER=N [OPERATOR=1] [TTL=1h]` prints a token for grpcurl:
#   export TOKEN=$(make -s token USER=2)
#   .tools/bin/grpcurl -cacert var/secrets/ca.pem -H "authorization: Bearer $TOKEN" ...

AUTH ?=
TLS ?=
OPERATOR ?=
TTL ?= 1h
SECRETS_DIR ?= $(CURDIR)/var/secrets
_on = $(filter 1 yes true on,$(1))

# Only for `up` (and what it runs): the tests start their own stacks, and must not inherit these.
ifneq ($(call _on,$(AUTH)),)
up: export PAYSAGA_AUTH_ENABLED := 1
up: export PAYSAGA_AUTH_HS256_SECRET_FILE := $(SECRETS_DIR)/jwt-hs256.secret
endif
ifneq ($(call _on,$(TLS)),)
up: export PAYSAGA_TLS_CERT_FILE := $(SECRETS_DIR)/server.pem
up: export PAYSAGA_TLS_KEY_FILE := $(SECRETS_DIR)/server.key
# What the stack launcher's health checks verify the servers with (`make ps`: var/run/stack.json).
up: export PAYSAGA_TLS_CA_FILE := $(SECRETS_DIR)/ca.pem
endif

.PHONY: secrets token
secrets: venv ## development CA, certificates and JWT secret in var/secrets (kept if present)
	@$(PY) -m services.common.security.tls dev --dir $(SECRETS_DIR)

# Secrets first whenever the stack starts secured.
up: $(if $(call _on,$(AUTH))$(call _on,$(TLS)),secrets)

token: venv ## print a development token: make token USER=N [OPERATOR=1] [TTL=1h]
	@$(PY) -m services.common.security.tls dev --quiet --dir $(SECRETS_DIR) >&2
	@user='$(USER)'; case "$$user" in \
	  ''|*[!0-9]*) if [ -z '$(call _on,$(OPERATOR))' ]; then \
	    echo "error: give a user id: make token USER=N [OPERATOR=1] [TTL=1h]" >&2; exit 2; fi; \
	    user_arg= ;; \
	  *) user_arg="--user $$user" ;; \
	esac; \
	PAYSAGA_AUTH_HS256_SECRET_FILE="$${PAYSAGA_AUTH_HS256_SECRET_FILE:-$(SECRETS_DIR)/jwt-hs256.secret}" \
	  $(PY) -m services.common.security.devtokens token $$user_arg $(if $(call _on,$(OPERATOR)),--operator) --ttl '$(TTL)'

# Kafka: KAFKA_SECURITY=sasl_ssl gives the local broker a SASL_SSL (SCRAM-SHA-512) listener
# instead of PLAINTEXT (deploy/kafka/security.py), and every client started from make (the
# services, the tools) the matching KAFKA_* settings. Once formatted that way, the broker's
# data remembers it: later make commands find it by themselves (until `make kafka-clean`).
# Only the targets that talk to the local broker get them (never the tests: their brokers
# are their own).
KAFKA_SECURITY ?= $(shell cat $(KAFKA_DATA_DIR)/security 2>/dev/null || echo plaintext)
export KAFKA_SECURITY
KAFKA_CLIENTS := kafka-up kafka-down kafka-clean kafka-status kafka-topics up down ps migrate seed
ifeq ($(KAFKA_SECURITY),sasl_ssl)
$(KAFKA_CLIENTS): export KAFKA_SECRETS_DIR := $(SECRETS_DIR)
$(KAFKA_CLIENTS): export KAFKA_SECURITY_PROTOCOL := SASL_SSL
$(KAFKA_CLIENTS): export KAFKA_SASL_MECHANISM := SCRAM-SHA-512
$(KAFKA_CLIENTS): export KAFKA_SASL_USERNAME := paysaga
$(KAFKA_CLIENTS): export KAFKA_SASL_PASSWORD_FILE := $(SECRETS_DIR)/kafka-paysaga.password
$(KAFKA_CLIENTS): export KAFKA_SSL_CA_LOCATION := $(SECRETS_DIR)/ca.pem
endif
