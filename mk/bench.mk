# benchmark targets
# `make bench` starts a private stack (deploy/stack/: Kafka, a fresh database, the services)
# in a temp dir, measures, stops it and prints a table plus one JSON line. It takes the
# layout of `make up`: DB=sqlite|postgres, REPLICAS (of each service), BROKERS, e.g.
# `make bench DB=postgres REPLICAS=2 BROKERS=3` (the load goes to Order replica 0).
# More options: BENCH_ARGS=--help, e.g. BENCH_ARGS="--use-running" (a stack from `make up`)
# or "--duration 60 --rate 300"; BENCH_ARGS="--metrics off" runs the services without metrics
# (compare with a run right before or after it: the machine is shared and noisy).

BENCH_ARGS ?=

.PHONY: bench
bench: venv kafka-jars check-java check-stack $(if $(filter postgres,$(DB)),check-postgres) ## saga throughput + latency next to gRPC/Kafka ceilings (DB, REPLICAS, BROKERS; BENCH_ARGS=--help)
	$(PY) -m bench.run --db $(DB) --replicas $(REPLICAS) --brokers $(BROKERS) $(BENCH_ARGS)
