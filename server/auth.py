"""Who may call what: every route declares a ``Rule`` as a dependency.

A rule names the roles it admits and returns the caller's ``Principal``; the
role x endpoint matrix test (tests/auth) walks ``app.routes`` and fails for any
route without one. ``PUBLIC`` admits anyone (health and the OpenAPI document
only). Every authenticated caller may read (``ANY``); changes need a role;
``admin`` passes every rule. Object-level checks (an analyst's own tasks, a
pilot's queues) are the helpers at the bottom, called by the routes.

The DDM callback rule also takes HTTP Basic credentials (Rucio's hermes can send
nothing else), checked against scrypt hashes in the settings. With
``DAWMS_AUTH=off`` a caller without a token is an admin named ``anonymous``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy import select

from dawms.catalog.models import Job, Queue, Task

from .tokens import Principal, TokenError, Verifier

log = logging.getLogger(__name__)

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="a JWT from `dawms token issue` or a configured OIDC issuer")
BASIC = HTTPBasic(auto_error=False, scheme_name="ddm_basic",
                  description="DDM callbacks only (Rucio hermes): a configured user and secret")
ANONYMOUS = Principal("anonymous", "admin", issuer="auth-off")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class Unauthorized(HTTPException):
    def __init__(self, message: str, scheme: str = "Bearer") -> None:
        super().__init__(401, message, headers={"WWW-Authenticate": scheme})


class Forbidden(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)


_UNSET = object()


def _verifier(request: Request) -> Verifier | None:
    """The app's verifier (None: auth is off). A mounted sub-app must share its parent's
    ``state.verifier`` and ``state.settings``; one that does not refuses every caller."""
    found = getattr(request.app.state, "verifier", _UNSET)
    if found is _UNSET:
        raise Unauthorized("this part of the server has no authentication configured")
    return found  # type: ignore[return-value]


class Rule:
    """A route's rule: ``roles`` that may call it (``None``: anyone, no token needed)."""

    def __init__(self, name: str, roles: Iterable[str] | None, cached: bool = False) -> None:
        self.name = name
        self.roles = None if roles is None else frozenset(roles) | {"admin"}
        self.cached = cached  # the hot path: verified tokens cached (DAWMS_TOKEN_CACHE_S)

    def __repr__(self) -> str:
        return f"Rule({self.name})"

    def admits(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def __call__(self, request: Request,
                 bearer: HTTPAuthorizationCredentials | None = Depends(BEARER)
                 ) -> Principal | None:
        return self.check(request, bearer)

    def check(self, request: Request, bearer: HTTPAuthorizationCredentials | None
              ) -> Principal | None:
        if self.roles is None:
            return None
        verifier = _verifier(request)
        if bearer is None:
            if verifier is None:
                return ANONYMOUS
            raise Unauthorized("authentication required: send Authorization: Bearer <token>")
        if verifier is None:
            raise Unauthorized("this server runs with DAWMS_AUTH=off and accepts no tokens")
        try:
            principal = verifier.verify(bearer.credentials, cached=self.cached)
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None
        return self.authorize(principal)

    def authorize(self, principal: Principal) -> Principal:
        if not self.admits(principal.role):
            raise Forbidden(f"role {principal.role} may not do this ({self.name}: "
                            f"{', '.join(sorted(self.roles or ()))})")
        return principal


class BasicOrBearerRule(Rule):
    """A rule that also takes HTTP Basic credentials of the configured DDM users."""

    def __call__(self, request: Request,  # type: ignore[override]
                 bearer: HTTPAuthorizationCredentials | None = Depends(BEARER),
                 basic: HTTPBasicCredentials | None = Depends(BASIC)) -> Principal | None:
        if basic is None or bearer is not None:
            return self.check(request, bearer)
        if _verifier(request) is None:
            return ANONYMOUS
        users: dict[str, str] = request.app.state.settings.ddm_basic_users
        stored = users.get(basic.username)
        # compare against a dummy hash for unknown users: the same time either way
        if not check_secret(basic.password, stored or _DUMMY_HASH) or stored is None:
            raise Unauthorized("bad DDM credentials", scheme='Basic realm="dawms-ddm"')
        return self.authorize(Principal(basic.username[:120], "ddm", issuer="basic"))


class PublicRule(Rule):
    """Anyone, no credentials (and none declared in the OpenAPI document)."""

    def __call__(self) -> None:  # type: ignore[override]
        return None


# ------------------------------------------------------------------ the rules
PUBLIC = PublicRule("public", None)
ANY = Rule("any authenticated caller", ("production", "analyst", "reader", "pilot", "factory",
                                        "ddm"))
SUBMIT = Rule("submit tasks", ("production", "analyst"))
MANAGE = Rule("manage tasks and jobs", ("production", "analyst"))
STAGING = Rule("steer tape staging", ("production",))  # shared tape quotas: operators only
METRICS = Rule("read metrics", ("reader",))  # Prometheus scrapes with a reader token
REPLICAS = Rule("declare replicas bad", ("production",))  # makes the DDM copy data again
PILOT = Rule("pilot", ("pilot",), cached=True)  # the dispatch hot path
FACTORY = Rule("pilot factory", ("factory",))
DDM = BasicOrBearerRule("DDM events", ("ddm",))


# ------------------------------------------------------------------ object checks
def owner_for_submit(who: Principal, spec: dict[str, Any]) -> str | None:
    """The owner a new task gets: an analyst's own name; production may name one."""
    if who.role == "analyst":
        if spec.get("owner") not in (None, who.subject):
            raise Forbidden("an analyst submits tasks as themself only")
        return who.subject
    return None if spec.get("owner") else who.subject


def check_own_tasks(s: Any, who: Principal, task_ids: Iterable[int]) -> None:
    """An analyst may manage only tasks they own (unknown ids are the route's 404)."""
    if who.role != "analyst":
        return
    owners = s.execute(select(Task.id, Task.owner).where(Task.id.in_(list(task_ids)))).all()
    foreign = sorted(i for i, owner in owners if owner != who.subject)
    if foreign:
        raise Forbidden(f"task(s) {foreign[:20]} are not yours")


def check_own_jobs(s: Any, who: Principal, job_ids: Iterable[int]) -> None:
    if who.role != "analyst":
        return
    rows = s.execute(select(Job.id, Task.owner).join(Task, Task.id == Job.task_id)
                     .where(Job.id.in_(list(job_ids)))).all()
    foreign = sorted(i for i, owner in rows if owner != who.subject)
    if foreign:
        raise Forbidden(f"job(s) {foreign[:20]} belong to tasks that are not yours")


def check_queue(who: Principal, queue: str) -> None:
    """A pilot or factory acts only on the queues its token names."""
    if who.role in ("pilot", "factory") and queue not in who.queues:
        raise Forbidden(f"this token is not bound to queue {queue[:128]!r}")


def job_queues(s: Any, job_ids: Iterable[int]) -> dict[int, str | None]:
    rows = s.execute(select(Job.id, Queue.name).outerjoin(Queue, Queue.id == Job.queue_id)
                     .where(Job.id.in_(list(job_ids)))).all()
    return {job_id: queue for job_id, queue in rows}


def foreign_jobs(request: Request, who: Principal, job_ids: list[int],
                 session: Any = None) -> set[int]:
    """The jobs among ``job_ids`` a pilot token may not report (not of its queues);
    read in ``session`` if given, else in a transaction of its own."""
    if who.role != "pilot":
        return set()
    if session is not None:
        queues = job_queues(session, job_ids)
    else:
        with request.app.state.db.session() as s:
            queues = job_queues(s, job_ids)
    return {j for j in job_ids if j in queues and queues[j] not in who.queues}


# ------------------------------------------------------------------ secrets
def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for DAWMS_DDM_BASIC_USERS."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def check_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or int(n) > 2**20 or int(r) > 32 or int(p) > 16:
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(secret.encode()[:1024], salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(want), maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = hash_secret(secrets.token_hex(8))
