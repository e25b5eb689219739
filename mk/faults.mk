# fault-injection suite targets

.PHONY: test-faults
test-faults: venv tools check-java check-postgres kafka-jars ## fault injection: kill -9 services/broker, replay, poison, bad input; prints a table
	$(PY) -m pytest tests/faults -q -m faults
