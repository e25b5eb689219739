"""One gRPC channel over every replica of a service: gRPC's own client-side balancing.

The channel's target lists every replica (`ipv4:127.0.0.1:50051,127.0.0.1:50151`) and its
service config picks the `round_robin` policy: the channel connects to each replica and
spreads calls over the ones that are ready, skipping a replica that is down until it is back.
This is how docs/operations.md (Scaling out) tells clients to call N replicas.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import grpc

#: The service config that spreads calls over every address of the target.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def split_addresses(text: str) -> list[str]:
    """`host:port,host:port` as a list, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _is_ipv4(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return port.isdigit()


def target(addresses: Sequence[str]) -> str:
    """The channel target for `addresses`: one address as it is, several as an `ipv4:` list."""
    if not addresses:
        raise ValueError("no address to call: give at least one host:port")
    if len(addresses) == 1:
        return addresses[0]
    names = [a for a in addresses if not _is_ipv4(a)]
    if names:
        raise ValueError(
            f"{', '.join(names)}: a target listing several replicas takes IPv4 host:port "
            "addresses (e.g. 127.0.0.1:50051,127.0.0.1:50151); for host names use one DNS "
            "name that resolves to every replica"
        )
    return "ipv4:" + ",".join(addresses)


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Channel options with the round_robin service config, then `extra`."""
    return [("grpc.service_config", ROUND_ROBIN), *extra]


def balanced_channel(
    addresses: Sequence[str], options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An insecure aio channel that spreads its calls over every one of `addresses`."""
    return grpc.aio.insecure_channel(target(addresses), options=channel_options(options))
