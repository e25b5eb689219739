# Local Apache Kafka 4.3.1 (one KRaft node on 127.0.0.1) run from Maven jars; no Docker needed.
# Override with environment or make variables: KAFKA_PORT, KAFKA_CONTROLLER_PORT,
# KAFKA_DATA_DIR, KAFKA_PARTITIONS. Pid in var/run/kafka.pid, log in var/log/kafka.log.

KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
KAFKA_DATA_DIR ?= var/kafka
KAFKA_PARTITIONS ?= 6
KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(KAFKA_PORT)
export KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_DATA_DIR KAFKA_PARTITIONS KAFKA_BOOTSTRAP_SERVERS

KAFKA_JARS := deploy/kafka/lib/.complete
KAFKA := $(PY) -m deploy.kafka

# The stamp is newer than the pom once Maven has copied every jar: then nothing runs.
$(KAFKA_JARS): deploy/kafka/pom.xml | check-java venv
	@$(KAFKA) jars

.PHONY: kafka-jars kafka-up kafka-down kafka-clean kafka-status kafka-topics
kafka-jars: $(KAFKA_JARS) ## fetch the Kafka broker jars with Maven (once)

kafka-up: $(KAFKA_JARS) ## start Kafka on 127.0.0.1:KAFKA_PORT (9092), create the topics
	@$(KAFKA) up

kafka-down: venv ## stop Kafka cleanly (data kept)
	@$(KAFKA) down

kafka-clean: venv ## stop Kafka and delete its data
	@$(KAFKA) clean

kafka-status: venv ## is Kafka running, where
	@$(KAFKA) status

kafka-topics: venv ## list the topics with their partition counts
	@$(KAFKA) topics
