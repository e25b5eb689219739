"""paysaga's tests: unit, contract, integration (real Kafka), e2e and faults."""
