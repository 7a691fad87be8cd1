"""The monitor's login: a token becomes a cookie, and the cookie is a bearer token.

A browser cannot send ``Authorization`` headers on page loads, and tokens must
never travel in URLs, so the login form POSTs the token once; the server checks
it and sets it as an HttpOnly, SameSite=Strict cookie scoped to ``/monitor``,
Secure unless the server is reached on a loopback address (plain HTTP there is
the development case). ``READ`` is the pages' rule: the same roles as the API's
``ANY``, fed by the cookie when there is no header. A page that needs a login
answers 401 with the login form when a browser asks (``Accept: text/html``) and
with the usual JSON envelope otherwise.
"""

from __future__ import annotations

import time
from ipaddress import ip_address
from urllib.parse import parse_qs

import jwt
from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from .auth import ANY, BEARER, Rule, Unauthorized
from .tokens import Principal, TokenError

COOKIE = "dawms_monitor"
PATH = "/monitor"
MAX_FORM_BYTES = 16 * 1024


class LoginRequired(Unauthorized):
    """401 for a page: a browser gets the login form (``monitor_pages`` renders it)."""


class CookieRule(Rule):
    """``ANY``'s roles, from the bearer header or else the monitor's cookie."""

    def __call__(self, request: Request,  # type: ignore[override]
                 bearer: HTTPAuthorizationCredentials | None = Depends(BEARER)
                 ) -> Principal | None:
        if bearer is None and (cookie := request.cookies.get(COOKIE)):
            bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=cookie)
        try:
            return self.check(request, bearer)
        except Unauthorized as exc:
            if "text/html" in request.headers.get("accept", ""):
                raise LoginRequired(str(exc.detail)) from None
            raise


READ = CookieRule("monitor: any authenticated caller", ANY.roles or ())


def is_loopback(request: Request) -> bool:
    host = (request.url.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the login's): first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Unauthorized("the login form is too large")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {k: v[0] for k, v in fields.items() if v}


def login(request: Request, token: str) -> Principal:
    """Check ``token`` as the API would (any role may read); TokenError if it is bad."""
    verifier = getattr(request.app.state, "verifier", None)
    if verifier is None:
        raise TokenError("this server runs with DAWMS_AUTH=off: no login is needed")
    principal = verifier.verify(token.strip())
    if not READ.admits(principal.role):
        raise TokenError(f"role {principal.role} may not read the monitor")
    return principal


def set_cookie(request: Request, response: Response, token: str) -> None:
    token = token.strip()
    try:
        exp = int(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
    except (jwt.PyJWTError, TypeError, ValueError):
        exp = 0
    max_age = max(60, exp - int(time.time())) if exp else 3600
    response.set_cookie(COOKIE, token, max_age=max_age, path=PATH, httponly=True,
                        secure=not is_loopback(request), samesite="strict")


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, secure=not is_loopback(request),
                           samesite="strict")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path of the monitor only (no open redirect)."""
    if (not target or not target.startswith(PATH + "/") or target.startswith("//")
            or "\\" in target or "://" in target or any(ord(c) < 32 for c in target)):
        return PATH + "/"
    return target[:2000]
