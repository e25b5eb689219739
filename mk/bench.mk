# benchmark targets
# `make bench` starts a private Kafka broker and both services (fresh SQLite) in a temp dir,
# measures, stops them and prints a table plus one JSON line. Options: BENCH_ARGS=--help,
# e.g. BENCH_ARGS="--use-running" (a stack from `make up`) or "--duration 60 --rate 300".

BENCH_ARGS ?=

.PHONY: bench
bench: venv kafka-jars check-java ## saga throughput + latency next to gRPC/Kafka ceilings (BENCH_ARGS=--help)
	$(PY) -m bench.run $(BENCH_ARGS)
