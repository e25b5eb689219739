"""Local Apache Kafka for paysaga: `python -m deploy.kafka up|down|clean|status|topics|jars`."""
