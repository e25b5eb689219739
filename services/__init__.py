"""paysaga services: the Order and Payment gRPC services and what they share."""
