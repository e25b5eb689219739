"""`make bench`: the saga's throughput and latency, next to the gRPC and Kafka ceilings."""
