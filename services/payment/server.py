"""The PaymentService servicer: balances and transactions, read-only over the payment database."""

from __future__ import annotations

import uuid

import grpc

from paysaga.v1 import payments_pb2, payments_pb2_grpc
from services.common.persistence.db import Database
from services.common.security import authz
from services.common.serving.grpc_errors import abort, echo
from services.common.serving.paging import BadPageRequest, parse_page, split_page
from services.common.timeutil import to_timestamp
from services.payment import store
from services.payment.models import CHARGE, REFUND, Account, Transaction

_KINDS = {
    CHARGE: payments_pb2.TRANSACTION_KIND_CHARGE,
    REFUND: payments_pb2.TRANSACTION_KIND_REFUND,
}


def transaction_to_proto(transaction: Transaction) -> payments_pb2.Transaction:
    return payments_pb2.Transaction(
        id=transaction.id,
        order_id=transaction.order_id,
        user_id=transaction.user_id,
        amount_cents=transaction.amount_cents,
        create_time=to_timestamp(transaction.created_at),
        kind=_KINDS[transaction.kind],
    )


def _check_uuid(context: grpc.ServicerContext, name: str, value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{name} must be a UUID, got {echo(value)}",
            f"INVALID_{name.upper()}",
        )


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    """paysaga.v1.PaymentService over the payment database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def GetBalance(
        self, request: payments_pb2.GetBalanceRequest, context: grpc.ServicerContext
    ) -> payments_pb2.GetBalanceResponse:
        if request.user_id <= 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"user_id must be a positive integer, got {request.user_id}",
                "INVALID_USER_ID",
            )
        authz.require_user(request.user_id)
        with self.db.read() as session:
            account = session.get(Account, request.user_id)
        if account is None:
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"user {request.user_id} does not exist",
                "USER_NOT_FOUND",
            )
        return payments_pb2.GetBalanceResponse(
            user_id=account.user_id,
            balance_cents=account.balance_cents,
            update_time=to_timestamp(account.updated_at),
        )

    def GetTransaction(
        self, request: payments_pb2.GetTransactionRequest, context: grpc.ServicerContext
    ) -> payments_pb2.GetTransactionResponse:
        _check_uuid(context, "transaction_id", request.transaction_id)
        with self.db.read() as session:
            transaction = session.get(Transaction, request.transaction_id)
        if transaction is None or not authz.may_see(transaction.user_id):
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"transaction {request.transaction_id} does not exist",
                "TRANSACTION_NOT_FOUND",
            )
        return payments_pb2.GetTransactionResponse(transaction=transaction_to_proto(transaction))

    def ListTransactions(
        self, request: payments_pb2.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> payments_pb2.ListTransactionsResponse:
        if request.user_id < 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"user_id must be positive (or 0 for any user), got {request.user_id}",
                "INVALID_USER_ID",
            )
        if request.order_id:
            _check_uuid(context, "order_id", request.order_id)
        authz.require_user(request.user_id)
        scope = f"transactions:{request.user_id}:{request.order_id}"
        try:
            limit, after = parse_page(request.page_size, request.page_token, scope)
        except BadPageRequest as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_PAGE_REQUEST")
        with self.db.read() as session:
            rows = store.list_transactions(
                session=session,
                user_id=request.user_id,
                order_id=request.order_id,
                after=after,
                limit=limit + 1,
            )
        page, token = split_page(rows, limit, scope)
        return payments_pb2.ListTransactionsResponse(
            transactions=[transaction_to_proto(t) for t in page], next_page_token=token
        )
