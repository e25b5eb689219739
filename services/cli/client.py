"""Calls to the services' admin API and health service, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paysaga.admin.v1 import admin_pb2_grpc
from services.cli.targets import Targets
from services.common.security import tls

T = TypeVar("T")
Item = TypeVar("Item")

#: The most items one page of an admin list has (the admin API's limit).
MAX_PAGE = 1000


class CommandError(Exception):
    """What went wrong, said so that the user knows what to do; exit status 1."""


def explain(error: grpc.RpcError, service: str, address: str) -> str:
    """A failed call in words: what happened and what to try."""
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return (
            f"cannot reach the {service} service at {address} ({code.name.lower()}): is it "
            f"running (`make ps`)? Give its address with --{service} HOST:PORT"
        )
    if code == grpc.StatusCode.UNIMPLEMENTED and "AdminService" in details + str(error):
        return f"the {service} service at {address} does not serve the admin API (too old?)"
    return f"{service} at {address}: {details or code.name}"


class Client:
    """One channel per address, reused for the command's calls; `close()` at the end."""

    def __init__(self, targets: Targets, timeout_s: float) -> None:
        self.targets = targets
        self.timeout_s = timeout_s
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            # TLS if PAYSAGA_TLS_CA_FILE is set; PAYSAGA_TOKEN (an operator's) on every call.
            self._channels[address] = tls.channel(address)
        return self._channels[address]

    def admin(self, address: str) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel(address))

    def health(self, address: str, name: str) -> str:
        """The grpc.health.v1 status of `name` at `address`, or why there is none."""
        stub = health_pb2_grpc.HealthStub(self.channel(address))
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            return exc.code().name  # type: ignore[attr-defined,no-any-return]
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def first(self, service: str, call: Callable[[admin_pb2_grpc.AdminServiceStub], T]) -> T:
        """`call` on the first replica of `service` that answers (every replica can).

        An answer that is an error of the call itself (NOT_FOUND, INVALID_ARGUMENT) is
        raised as is; CommandError if no replica can be reached.
        """
        problems = []
        for address in self.targets.of(service):
            try:
                return call(self.admin(address))
            except grpc.RpcError as exc:
                if exc.code() not in (  # type: ignore[attr-defined]
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                problems.append(explain(exc, service, address))
        raise CommandError("; ".join(problems))

    def pages(
        self,
        service: str,
        call: Callable[[admin_pb2_grpc.AdminServiceStub, str, int], Any],
        items: Callable[[Any], Sequence[Item]],
        limit: int,
    ) -> list[Item]:
        """Up to `limit` items of an admin list, following its next_page_token page by page:
        `call(stub, page_token, page_size)` asks for one page, `items(answer)` are its items."""
        found: list[Item] = []
        token = ""
        while len(found) < limit:
            size = min(limit - len(found), MAX_PAGE)
            answer = self.first(service, lambda stub: call(stub, token, size))  # noqa: B023
            found.extend(items(answer))
            token = answer.next_page_token
            if not token:
                break
        return found[:limit]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
