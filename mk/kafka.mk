# Local Apache Kafka 4.3.1 on 127.0.0.1, run from Maven jars; no Docker needed.
# BROKERS=1 (default): one KRaft node. BROKERS=3: three nodes, each broker+controller (a
# 3-voter quorum), topics with replication 3 and min.insync.replicas 2.
# Override with environment or make variables: BROKERS, KAFKA_PORT, KAFKA_CONTROLLER_PORT,
# KAFKA_DATA_DIR, KAFKA_PARTITIONS. Node 0: KAFKA_PORT/KAFKA_CONTROLLER_PORT, data
# KAFKA_DATA_DIR, var/run/kafka.pid, var/log/kafka.log; node j >= 1: both ports + 100*j,
# data KAFKA_DATA_DIR-j, var/run/kafka-j.pid, var/log/kafka-j.log. kafka-down, -clean and
# -status find every node that exists by itself (no BROKERS needed).

BROKERS ?= 1
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
KAFKA_DATA_DIR ?= var/kafka
KAFKA_PARTITIONS ?= 6
# Every node's address, comma-separated: what the services and `make up` connect to.
ifeq ($(origin KAFKA_BOOTSTRAP_SERVERS),undefined)
KAFKA_BOOTSTRAP_SERVERS := $(shell for ((j = 0; j < $(BROKERS); j++)); do \
  printf '%s127.0.0.1:%d' "$${sep-}" $$(($(KAFKA_PORT) + 100 * j)); sep=,; done)
endif
export BROKERS KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_DATA_DIR KAFKA_PARTITIONS KAFKA_BOOTSTRAP_SERVERS

KAFKA_JARS := deploy/kafka/lib/.complete
KAFKA := $(PY) -m deploy.kafka

# The stamp is newer than the pom once Maven has copied every jar: then nothing runs.
$(KAFKA_JARS): deploy/kafka/pom.xml | check-java venv
	@$(KAFKA) jars

.PHONY: kafka-jars kafka-up kafka-down kafka-clean kafka-status kafka-topics
kafka-jars: $(KAFKA_JARS) ## fetch the Kafka broker jars with Maven (once)

kafka-up: $(KAFKA_JARS) ## start Kafka (BROKERS=1 node on 9092, or BROKERS=3), create the topics
	@$(KAFKA) up

kafka-down: venv ## stop every Kafka node cleanly (data kept)
	@$(KAFKA) down

kafka-clean: venv ## stop every Kafka node and delete its data
	@$(KAFKA) clean

kafka-status: venv ## which Kafka nodes run, where
	@$(KAFKA) status

kafka-topics: venv ## list the topics: partitions, replication, min.insync.replicas
	@$(KAFKA) topics
