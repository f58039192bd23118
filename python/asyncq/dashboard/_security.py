"""Who may use the dashboard, and proof that a POST came from its own page.

- Access: with a token, a request must carry it (``Authorization: Bearer <token>``, or the
  cookie the login form sets); with an ``auth`` callable, it must accept the request; with
  neither, only loopback clients are answered (and the CLI refuses to listen elsewhere).
- CSRF: every action is a POST that must carry the page's token (header ``X-CSRF-Token`` or
  form field ``csrf``) equal to the ``asyncq_csrf`` cookie, signed by this server.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

__all__ = ["AUTH_COOKIE", "CSRF_COOKIE", "Auth", "Guard", "is_loopback"]

#: A user's check of a request: true lets it in.
Auth = Callable[[HTTPConnection], "bool | Awaitable[bool]"]

AUTH_COOKIE = "asyncq_auth"
CSRF_COOKIE = "asyncq_csrf"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """The dashboard's access and CSRF checks.

    Args:
        token: The shared secret, or None.
        auth: A callable that accepts or refuses a request (sync or async), or None.
    """

    def __init__(self, token: str | None, auth: Auth | None) -> None:
        if token is not None and not token:
            raise ValueError("token must not be empty")
        self.token = token
        self.auth = auth
        self._secret = secrets.token_bytes(32)

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    @property
    def open(self) -> bool:
        """No token and no auth callable: loopback clients only."""
        return self.token is None and self.auth is None

    async def allowed(self, conn: HTTPConnection) -> bool:
        """Whether ``conn`` may see the dashboard."""
        if self.open:
            return conn.client is not None and is_loopback(conn.client.host)
        if self.token is not None and self._has_token(conn):
            return True
        if self.auth is not None:
            verdict = self.auth(conn)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return bool(verdict)
        return False

    def _has_token(self, conn: HTTPConnection) -> bool:
        assert self.token is not None
        scheme, _, given = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        cookie = conn.cookies.get(AUTH_COOKIE, "")
        return hmac.compare_digest(cookie, self._sign("auth:" + self.token))

    def check_login(self, given: str) -> bool:
        """Whether ``given`` (typed into the login form) is the token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def set_auth_cookie(self, response: Response, request: Request) -> None:
        """Remember a successful login (the cookie holds a signature, not the token)."""
        assert self.token is not None
        response.set_cookie(
            AUTH_COOKIE,
            self._sign("auth:" + self.token),
            path=_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # ---- CSRF --------------------------------------------------------------------------------

    def _valid_csrf(self, value: str) -> bool:
        nonce, _, sig = value.partition(".")
        return bool(nonce) and hmac.compare_digest(sig, self._sign("csrf:" + nonce))

    def csrf_for(self, request: Request) -> tuple[str, bool]:
        """The page's CSRF token: the cookie's when valid, else a new one; and whether the
        cookie must be (re)set."""
        current = request.cookies.get(CSRF_COOKIE, "")
        if self._valid_csrf(current):
            return current, False
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign('csrf:' + nonce)}", True

    def set_csrf_cookie(self, response: Response, request: Request, value: str) -> None:
        """Set the CSRF cookie (strict same-site, not readable by scripts)."""
        response.set_cookie(
            CSRF_COOKIE,
            value,
            path=_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def csrf_ok(self, request: Request, form_value: str | None) -> bool:
        """Whether a POST carries this server's CSRF token, the same in cookie and request."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get("x-csrf-token") or form_value or ""
        return self._valid_csrf(cookie) and hmac.compare_digest(given, cookie)


def _path(request: Request) -> str:
    return (request.scope.get("root_path") or "") + "/"
