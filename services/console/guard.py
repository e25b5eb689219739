"""Who may use the console and how a form post proves it came from the console's own page.

Sessions: a random id in an HttpOnly, SameSite=Strict cookie (Secure over TLS) naming a
session held in memory; a new session gets a new id, and logging in gets another (no
fixation). With PAYSAGA_AUTH_ENABLED every page but /login needs a session logged in with a
bearer token that the services' own verifier accepts and that has the operator scope (the
admin API needs it); the token's subject is who a redrive is recorded as. With auth off (a
loopback console) nobody logs in and a redrive is recorded as the console's own OS user.

Every POST must carry the session's CSRF token (a hidden form field; compared in constant
time) and come from the console's own origin (Origin, else Referer, must be this scheme and
host): a page elsewhere can neither read the token nor forge the origin.
"""

from __future__ import annotations

import getpass
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt

from services.common.security.auth_settings import AuthSettings
from services.common.security.tokens import InvalidCredentials, KeyConfigError, TokenVerifier

COOKIE = "paysaga_console"
#: A session without a login lives this long without use; a login lives as long as its token.
IDLE_S = 12 * 3600
#: Sessions held at once; the least recently used goes first.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    #: Who logged in (a token's subject); empty: nobody (auth off, or not yet).
    subject: str = ""
    operator: bool = False
    #: A message for the next page (e.g. after a redrive), shown once.
    notices: list[str] = field(default_factory=list)


def _new_id() -> str:
    return secrets.token_urlsafe(32)


class Sessions:
    """The sessions of this console process (a restart logs everyone out)."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, Session] = OrderedDict()

    def new(self, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        session = Session(id=_new_id(), csrf=secrets.token_urlsafe(32), expires=now + IDLE_S)
        self._held[session.id] = session
        while len(self._held) > MAX_SESSIONS:
            self._held.popitem(last=False)
        return session

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        now = time.time() if now is None else now
        session = self._held.get(session_id or "")
        if session is None:
            return None
        if session.expires <= now:
            del self._held[session.id]
            return None
        self._held.move_to_end(session.id)
        if not session.subject:
            session.expires = now + IDLE_S
        return session

    def log_in(self, old: Session, subject: str, operator: bool, expires: float) -> Session:
        """A new session (new id, new CSRF token) for `subject`; the old one ends."""
        self._held.pop(old.id, None)
        session = self.new()
        session.subject, session.operator, session.expires = subject, operator, expires
        return session

    def end(self, session: Session) -> None:
        self._held.pop(session.id, None)


def same_origin(headers: dict[str, str], scheme: str, host: str) -> str:
    """Why a POST with these headers is not from this console's origin, or "" if it is."""
    expected = f"{scheme}://{host}".lower()
    origin = headers.get("origin", "")
    if origin and origin != "null":
        return "" if origin.lower() == expected else f"the form came from {origin}, not {expected}"
    referer = headers.get("referer", "")
    if referer:
        parts = urlsplit(referer)
        found = f"{parts.scheme}://{parts.netloc}".lower()
        return "" if found == expected else f"the form came from {found}, not {expected}"
    return "the request says neither where it came from (Origin) nor which page sent it (Referer)"


def csrf_problem(
    session: Session | None, sent: str, headers: dict[str, str], scheme: str, host: str
) -> str:
    """Why a POST must be refused, or "" when it carries the session's token from our origin."""
    if session is None:
        return "no console session: open the page again, then send the form"
    if not sent or not secrets.compare_digest(sent.encode(), session.csrf.encode()):
        return "the form's CSRF token is not this session's: open the page again and resend"
    return same_origin(headers, scheme, host)


def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


class Login:
    """Checks a bearer token for the console: the services' verifier, the operator scope."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self._verifier = TokenVerifier(settings) if settings.enabled else None

    def check(self, token: str) -> tuple[str, float]:
        """(subject, expiry) of an operator's valid token; ValueError says what is wrong."""
        token = token.strip().removeprefix("Bearer ").strip()
        if self._verifier is None:
            raise ValueError("auth is off: nobody needs to log in")
        if not token:
            raise ValueError("paste an operator's token: `make -s token OPERATOR=1`")
        try:
            caller = self._verifier.verify(token)
        except (InvalidCredentials, KeyConfigError) as exc:
            raise ValueError(str(exc)) from exc
        if not caller.operator:
            raise ValueError(
                f"{caller.subject}'s token lacks the {self.settings.operator_scope} scope: the "
                "console shows every user's orders and can redrive; get an operator's token "
                "(`make -s token OPERATOR=1`)"
            )
        claims = jwt.decode(token, options={"verify_signature": False})
        return caller.subject, float(claims.get("exp") or time.time() + 3600)

    def recorded_as(self, session: Session) -> str:
        """Who a redrive from this session is recorded as."""
        if session.subject:
            return f"{session.subject} (console)"
        return f"{local_user()} (console, auth off)"
