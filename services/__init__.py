"""paysaga's services: the Order and Payment gRPC services, the saga contract they share, the
mechanisms under them and the operators' command.

    services.order, services.payment, services.cli   never import each other
    services.saga                                     the topic table both services speak
    services.common                                   mechanisms; knows no domain

Nothing here imports deploy or bench. `.importlinter` holds the contract.
"""
