# benchmark targets
# `make bench` starts a private stack (deploy/stack/: Kafka, a fresh database, the services)
# in a temp dir, measures, stops it and prints a table plus one JSON line. It takes the
# layout of `make up`: DB=sqlite|postgres, REPLICAS (of each service), BROKERS, ROLES, e.g.
# `make bench DB=postgres REPLICAS=2 BROKERS=3` (the load is spread over every Order replica
# with gRPC's round_robin). `make bench-shapes` runs the default shape and that one back to
# back, with the same phases, and prints the second's figures over the first's.
# More options: BENCH_ARGS=--help, e.g. BENCH_ARGS="--use-running" (a stack from `make up`),
# "--duration 60 --rate 300" or "--only light,watchers"; BENCH_ARGS="--metrics off" runs the
# services without metrics (compare with a run right before or after it: the machine is
# shared and noisy).

BENCH_ARGS ?=

.PHONY: bench bench-shapes
bench: venv kafka-jars check-java check-stack $(if $(filter postgres,$(DB)),check-postgres) ## saga throughput, latency and watchers next to gRPC/Kafka ceilings (DB, REPLICAS, BROKERS, ROLES; BENCH_ARGS=--help)
	$(PY) -m bench.run --db $(DB) --replicas $(REPLICAS) --brokers $(BROKERS) --roles $(ROLES) $(BENCH_ARGS)

bench-shapes: venv kafka-jars check-java check-postgres ## `make bench` on the default shape, then DB=postgres REPLICAS=2 BROKERS=3; prints the ratios (BENCH_ARGS)
	$(PY) -m bench.shapes $(BENCH_ARGS)
