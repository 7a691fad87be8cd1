"""Bearer tokens: issued and verified with PyJWT, revoked by ``jti`` in the catalog.

Our own tokens are ES256 JWTs signed by the catalog's signing key (``keys.py``),
with ``iss``/``aud`` from the settings and the claims ``sub``, ``role``,
``queues`` (pilot and factory tokens), ``iat``, ``exp`` and ``jti``. Tokens of an
external OIDC issuer are verified against its JWKS (``PyJWKClient``) and mapped
to a role by a claim. Error texts say what is wrong with a token, never its text.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from dawms.catalog.db import Database
from dawms.catalog.models import TokenRevocation

from . import keys
from .settings import ROLE_NAMES, OIDCIssuer, ServerSettings

MAX_SUBJECT = 120  # "user:" + subject fits the 128-character actor and owner columns
MAX_QUEUES = 100
MAX_QUEUE_NAME = 128
MAX_TOKEN_CHARS = 8192
MAX_LIFETIME_S = 400 * 86400
MAX_CACHED_TOKENS = 100_000
BOUND_ROLES = ("pilot", "factory")  # roles that act only on their queues
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_JTI = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class TokenError(Exception):
    """A token that cannot be accepted (HTTP 401); the message never quotes the token."""


class TokenRequestError(ValueError):
    """A token that cannot be issued as asked (bad role, subject, queues or lifetime)."""


@dataclass(frozen=True)
class Principal:
    """Who calls: from a verified token (or Basic credentials, or auth off)."""

    subject: str
    role: str
    queues: frozenset[str] = field(default_factory=frozenset)
    jti: str | None = None
    issuer: str = "dawms"

    @property
    def actor(self) -> str:
        return f"user:{self.subject}"


def parse_duration(text: str) -> int:
    """``12h``, ``30m``, ``7d``, ``90s`` or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise TokenRequestError(f"cannot read {text[:40]!r} as a duration (e.g. 12h, 30m, 7d)")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if not 1 <= seconds <= MAX_LIFETIME_S:
        raise TokenRequestError(f"a lifetime must be from 1 s to {MAX_LIFETIME_S // 86400} days")
    return seconds


def check_request(role: str, subject: str, queues: list[str] | tuple[str, ...]) -> None:
    problems = []
    if role not in ROLE_NAMES:
        problems.append(f"unknown role {role[:40]!r}; one of {', '.join(ROLE_NAMES)}")
    if not 1 <= len(subject) <= MAX_SUBJECT or not subject.isprintable() or subject.strip() \
            != subject:
        problems.append(f"the subject must be 1 to {MAX_SUBJECT} printable characters "
                        "without leading or trailing spaces")
    if len(queues) > MAX_QUEUES or any(not 1 <= len(q) <= MAX_QUEUE_NAME for q in queues):
        problems.append(f"at most {MAX_QUEUES} queues of 1 to {MAX_QUEUE_NAME} characters")
    if role in BOUND_ROLES and not queues:
        problems.append(f"a {role} token must name its queues (--queue)")
    if problems:
        raise TokenRequestError("; ".join(problems))


def issue(db: Database, *, role: str, subject: str, queues: list[str] | tuple[str, ...] = (),
          lifetime_s: int = 12 * 3600, settings: ServerSettings | None = None
          ) -> tuple[str, dict[str, Any]]:
    """A signed token and its claims."""
    st = settings or ServerSettings()
    queues = list(dict.fromkeys(queues))
    check_request(role, subject, queues)
    if not 1 <= lifetime_s <= MAX_LIFETIME_S:
        raise TokenRequestError(f"a lifetime must be from 1 s to {MAX_LIFETIME_S // 86400} days")
    kid, algorithm, private_pem = keys.signer(db)
    now = datetime.now(UTC).replace(microsecond=0)
    claims: dict[str, Any] = {"iss": st.token_issuer, "aud": st.token_audience, "sub": subject,
                              "role": role, "iat": now, "nbf": now,
                              "exp": now + timedelta(seconds=lifetime_s),
                              "jti": uuid.uuid4().hex}
    if queues:
        claims["queues"] = queues
    token = jwt.encode(claims, private_pem, algorithm=algorithm, headers={"kid": kid})
    return token, {**claims, "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
                   "exp": int(claims["exp"].timestamp())}


def revoke(db: Database, jti: str, *, actor: str, reason: str = "") -> bool:
    """Refuse the token with this ``jti`` from now on; False if it was revoked already."""
    if not _JTI.match(jti):
        raise TokenRequestError("a jti is 1 to 64 letters, digits, '.', '_' or '-'")
    with db.session() as s:
        dialect = s.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        added = s.scalar(insert(TokenRevocation)
                         .values(jti=jti, revoked_at=datetime.now(UTC), actor=actor[:128],
                                 reason=reason[:2000])
                         .on_conflict_do_nothing(index_elements=["jti"])
                         .returning(TokenRevocation.jti))
    return added is not None


def is_revoked(db: Database, jti: str) -> bool:
    with db.session() as s:
        return s.scalar(select(TokenRevocation.jti).where(TokenRevocation.jti == jti)) \
            is not None


_MESSAGES: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidAudienceError, "token audience is not accepted here"),
    (jwt.InvalidIssuerError, "token issuer is not accepted here"),
    (jwt.InvalidSignatureError, "token signature does not verify"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
]


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim!r} claim"
    for exc_type, message in _MESSAGES:
        if isinstance(exc, exc_type):
            return message
    return "malformed token"


class Verifier:
    """Turns a bearer token into a ``Principal`` or raises ``TokenError``."""

    def __init__(self, db: Database, settings: ServerSettings) -> None:
        self.db = db
        self.settings = settings
        self.keys = keys.VerifyingKeys(db, settings.key_cache_s)
        self._oidc = {i.issuer: i for i in settings.oidc_issuers}
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._jwks = {i.issuer: jwt.PyJWKClient(i.jwks_url, cache_keys=True,
                                                lifespan=max(i.jwks_cache_s, 1e-3), timeout=10,
                                                cooldown_duration=i.jwks_refresh_cooldown_s)
                      for i in settings.oidc_issuers}

    def verify(self, token: str, cached: bool = False) -> Principal:
        """The token's principal, or ``TokenError``. ``cached``: a token verified less than
        ``token_cache_s`` ago (and not expired) is taken without checking its signature
        and revocation again (the pilot hot path: a revocation takes effect within
        ``token_cache_s``)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token too long")
        if cached:
            hit = self._cache.get(token)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        principal = self._verify(token, header, unverified.get("iss"))
        ttl = self.settings.token_cache_s
        exp = unverified.get("exp")
        if cached and ttl > 0 and isinstance(exp, int | float):
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()  # bounded: start over rather than grow
            until = min(time.monotonic() + ttl, time.monotonic() + exp - time.time())
            self._cache[token] = (until, principal)
        return principal

    def _verify(self, token: str, header: dict[str, Any], issuer: Any) -> Principal:
        if issuer == self.settings.token_issuer:
            principal = self._ours(token, header)
        elif isinstance(issuer, str) and issuer in self._oidc:
            principal = self._external(token, self._oidc[issuer])
        else:
            raise TokenError("token issuer is not accepted here")
        if principal.jti is not None and is_revoked(self.db, principal.jti):
            raise TokenError("token revoked")
        return principal

    def _ours(self, token: str, header: dict[str, Any]) -> Principal:
        kid = header.get("kid")
        found = self.keys.get(kid) if isinstance(kid, str) and len(kid) <= 64 else None
        if found is None:
            raise TokenError("token signed by an unknown or retired key")
        algorithm, public_key = found
        try:
            claims = jwt.decode(token, public_key, algorithms=[algorithm],
                                audience=self.settings.token_audience,
                                issuer=self.settings.token_issuer,
                                options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
                                leeway=30)
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        role, subject, queues = claims.get("role"), claims.get("sub"), claims.get("queues", [])
        if not isinstance(role, str) or not isinstance(subject, str) or not isinstance(
                queues, list) or not all(isinstance(q, str) for q in queues):
            raise TokenError("token claims are malformed")
        try:
            check_request(role, subject, queues)
        except TokenRequestError as exc:
            raise TokenError(f"token claims are not acceptable: {exc}") from None
        return Principal(subject, role, frozenset(queues), str(claims["jti"]),
                         self.settings.token_issuer)

    def _external(self, token: str, cfg: OIDCIssuer) -> Principal:
        try:
            signing_key = self._jwks[cfg.issuer].get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=cfg.algorithms,
                                audience=cfg.audience, issuer=cfg.issuer,
                                options={"require": ["exp", "iat", "iss", "aud"]}, leeway=30)
        except jwt.PyJWKClientConnectionError:
            raise TokenError("the token issuer's keys cannot be fetched now") from None
        except jwt.PyJWKClientError:
            raise TokenError("token signed by a key its issuer does not publish") from None
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        subject = claims.get(cfg.subject_claim)
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
            raise TokenError(f"token's {cfg.subject_claim!r} claim is missing or longer than "
                             f"{MAX_SUBJECT} characters")
        raw_values = claims.get(cfg.role_claim)
        if isinstance(raw_values, str):  # e.g. a space-separated `scope`
            values = set(raw_values.split())
        elif isinstance(raw_values, list):
            values = {v for v in raw_values if isinstance(v, str)}
        else:
            values = set()
        role = next((r for v, r in cfg.roles.items() if v in values), None)
        if role is None:
            raise TokenError(f"token's {cfg.role_claim!r} claim grants no role here")
        queues: list[str] = []
        if cfg.queues_claim:
            raw = claims.get(cfg.queues_claim, [])
            raw = raw.split() if isinstance(raw, str) else raw
            queues = [q for q in raw if isinstance(q, str)] if isinstance(raw, list) else []
        try:
            check_request(role, subject, queues)
        except TokenRequestError as exc:
            raise TokenError(f"token claims are not acceptable: {exc}") from None
        jti = claims.get("jti")
        return Principal(subject, role, frozenset(queues),
                         f"{jti}"[:64] if isinstance(jti, str) and _JTI.match(jti) else None,
                         cfg.issuer)
