"""The OrderService servicer: protobuf <-> domain, and errors -> status codes.

CreateOrder and WatchOrders are coroutines on the server's event loop (CreateOrder awaits
its group commit; a stream costs no thread); GetOrder and ListOrders are short database
reads, run on the server's thread pool. WatchOrders writes responses already serialized
(a change once for all its watchers, services.order.feed): `register_order_service`
registers it with no response serializer, the wire format unchanged.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial

import grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.persistence.db import Database
from services.common.persistence.group_commit import GroupCommitter, ShuttingDown
from services.common.security import authz
from services.common.serving.grpc_errors import abort, abort_async, echo
from services.common.serving.paging import BadPageRequest, parse_page, split_page
from services.order import store
from services.order.changes import STATUS_FROM_PROTO, order_to_proto
from services.order.domain import InvalidOrderRequest, check_order_request
from services.order.models import Order, OrderRow
from services.order.streams import WatchStreams

log = logging.getLogger(__name__)

#: The RPCs whose responses the servicer writes as bytes, serialized already.
_PRESERIALIZED = ("WatchOrders",)


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    """paysaga.v1.OrderService over the order database."""

    def __init__(self, db: Database, streams: WatchStreams, *, deadline_s: float) -> None:
        self.db = db
        self.streams = streams
        #: CreateOrder writes, committed in groups (see services.common.persistence.group_commit).
        self.writes: GroupCommitter[store.NewOrder, OrderRow] = GroupCommitter(
            db, partial(store.create_orders, deadline_s=deadline_s)
        )

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.CreateOrderResponse:
        try:
            check_order_request(request.user_id, request.product_id, request.request_id)
            authz.require_user(request.user_id)
            order = await self.writes.write(
                store.NewOrder(request.user_id, request.product_id, request.request_id)
            )
        except (InvalidOrderRequest, store.RequestIdReused) as exc:
            reused = isinstance(exc, store.RequestIdReused)
            await abort_async(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(exc),
                "REQUEST_ID_REUSED" if reused else "INVALID_ORDER_REQUEST",
            )
        except store.UnknownProduct as exc:
            await abort_async(context, grpc.StatusCode.NOT_FOUND, str(exc), "PRODUCT_NOT_FOUND")
        except ShuttingDown as exc:
            await abort_async(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"{exc} with the same request_id",
                "SHUTTING_DOWN",
            )
        log.debug(
            "order created", extra={"order_id": order["id"], "request_id": request.request_id}
        )
        return orders_pb2.CreateOrderResponse(order=order_to_proto(order))

    def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetOrderResponse:
        try:
            uuid.UUID(request.order_id)
        except ValueError:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"order_id must be an order id (a UUID), got {echo(request.order_id)}",
                "INVALID_ORDER_ID",
            )
        with self.db.read() as session:
            order = session.get(Order, request.order_id)
        if order is None or not authz.may_see(order.user_id):
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"order {request.order_id} does not exist",
                "ORDER_NOT_FOUND",
            )
        return orders_pb2.GetOrderResponse(order=order_to_proto(order.model_dump()))

    def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        if request.user_id < 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"user_id must be positive (or 0 for any user), got {request.user_id}",
                "INVALID_USER_ID",
            )
        if request.status not in STATUS_FROM_PROTO and request.status != 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown status {request.status}",
                "INVALID_STATUS",
            )
        authz.require_user(request.user_id)
        status = STATUS_FROM_PROTO.get(request.status)
        scope = f"orders:{request.user_id}:{request.status}"
        try:
            limit, after = parse_page(request.page_size, request.page_token, scope)
        except BadPageRequest as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_PAGE_REQUEST")
        with self.db.read() as session:
            rows = store.list_orders(
                session=session,
                user_id=request.user_id,
                status=status,
                after=after,
                limit=limit + 1,
            )
        page, token = split_page(rows, limit, scope)
        return orders_pb2.ListOrdersResponse(
            orders=[order_to_proto(o.model_dump()) for o in page], next_page_token=token
        )

    async def WatchOrders(
        self, request: orders_pb2.WatchOrdersRequest, context: grpc.aio.ServicerContext
    ) -> None:
        authz.require_user(request.user_id)
        await self.streams.serve(request, context)


def register_order_service(server: grpc.aio.Server, servicer: OrderServicer) -> None:
    """OrderService on `server` as the generated code registers it, except that WatchOrders'
    responses are bytes the feed serialized (the identity as response serializer)."""
    servicer.streams.writes_bytes = True
    generated = _Registration()
    orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, generated)  # type: ignore[arg-type]
    handlers = {
        name: handler._replace(response_serializer=None) if name in _PRESERIALIZED else handler
        for name, handler in generated.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(generated.service, handlers),)
    )
    server.add_registered_method_handlers(generated.service, handlers)


class _Registration:
    """Takes the generated code's method handlers instead of a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: object) -> None:
        pass  # the same handlers come to add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, handlers
