"""What the caller may do: a user acts on their own data only; an operator on everyone's.

Servicers call these at the top of a method, once the request is validated:

    authz.require_user(request.user_id)      # the caller's own id, or an operator; 0 = all users
    if not authz.may_see(order.user_id): ...  # a resource looked up by id: NOT_FOUND if not theirs

`PermissionDenied` ends the call with PERMISSION_DENIED (services.common.security.interceptor
turns it into the status). A method called outside an authenticated call is refused: no
caller, no rights.
"""

from __future__ import annotations

from services.common.security.identity import Caller, current_caller


class PermissionDenied(Exception):
    """The caller may not do this; the message says why (for PERMISSION_DENIED), `reason`
    names it for programs (the error's ErrorInfo reason)."""

    def __init__(self, message: str, reason: str = "INSUFFICIENT_SCOPE") -> None:
        super().__init__(message)
        self.reason = reason


def _caller() -> Caller:
    caller = current_caller()
    if caller is None:
        raise PermissionDenied(
            "no authenticated caller (the server's auth interceptor is missing)", "NO_CALLER"
        )
    return caller


def require_user(user_id: int) -> None:
    """The caller may act on `user_id`'s data: theirs, or they are an operator.

    0 (every user) needs the operator scope. A negative id is left to the method's own
    validation (INVALID_ARGUMENT).
    """
    caller = _caller()
    if caller.operator or user_id < 0:
        return
    if user_id == 0:
        raise PermissionDenied(
            "user_id 0 (every user) needs the operator scope: ask for your own user_id "
            f"({caller.user_id})"
        )
    if user_id != caller.user_id:
        raise PermissionDenied(
            f"user_id {user_id} is not you: your token acts for user {caller.user_id} only",
            "NOT_YOUR_USER",
        )


def may_see(owner_id: int) -> bool:
    """Whether the caller may see a resource of user `owner_id` (looked up by its id).

    Servicers answer NOT_FOUND when not: the caller learns nothing about others' resources.
    """
    caller = _caller()
    return caller.operator or caller.user_id == owner_id


def require_operator(what: str) -> None:
    """Only an operator may do `what` (e.g. "listing every user's orders")."""
    if not _caller().operator:
        raise PermissionDenied(f"{what} needs the operator scope")
