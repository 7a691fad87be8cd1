"""Tokens: signed by the catalog's key, refused when expired, revoked, tampered with,
signed by an unknown or retired key, or for another audience or issuer; shared by
every server process over one catalog. Error texts and logs never show a token.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import SigningKey
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.server import keys
from dawms.server.app import create_app
from dawms.server.settings import ServerSettings
from dawms.server.tokens import TokenRequestError, issue, parse_duration, revoke

pytestmark = pytest.mark.auth


def _app(db: Database, **settings: object) -> TestClient:
    return TestClient(create_app(db, LocalDDM(), SchedulerConfig(),
                                 settings=ServerSettings(key_cache_s=0, **settings)))


def _ping(api: TestClient, token: str) -> tuple[int, str]:
    reply = api.get("/api/v1/ping", headers={"Authorization": f"Bearer {token}"})
    return reply.status_code, reply.json()["message"]


def _forge(db: Database, **claims: object) -> str:
    """A token signed by the real signing key with chosen claims."""
    kid, algorithm, pem = keys.signer(db)
    now = datetime.now(UTC)
    base = {"iss": "dawms", "aud": "dawms", "sub": "x", "role": "admin", "iat": now,
            "exp": now + timedelta(hours=1), "jti": uuid.uuid4().hex}
    body = {k: v for k, v in {**base, **claims}.items() if v is not None}
    return jwt.encode(body, pem, algorithm=algorithm, headers={"kid": kid})


def test_first_start_makes_one_signing_key(db: Database) -> None:
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SigningKey)) == 0
    _app(db)
    _app(db)  # a second process over the same catalog uses the same key
    with db.session() as s:
        key = s.scalar(select(SigningKey))
        assert s.scalar(select(func.count()).select_from(SigningKey)) == 1
    assert key.algorithm == "ES256" and "PRIVATE KEY" in key.private_pem


def test_a_token_verifies_in_every_process_and_revocation_reaches_them_all(
        db: Database) -> None:
    one, two = _app(db), _app(db)
    token, claims = issue(db, role="reader", subject="prom", lifetime_s=600)
    assert jwt.get_unverified_header(token)["kid"] == keys.ensure_key(db)
    assert claims["exp"] - claims["iat"] == 600
    assert _ping(one, token)[0] == _ping(two, token)[0] == 200
    assert revoke(db, claims["jti"], actor="test") is True
    assert revoke(db, claims["jti"], actor="test") is False
    assert _ping(one, token) == (401, "token revoked")
    assert _ping(two, token) == (401, "token revoked")


@pytest.mark.parametrize("claims, message", [
    ({"exp": datetime.now(UTC) - timedelta(minutes=5)}, "token expired"),
    ({"exp": None}, "token lacks the 'exp' claim"),
    ({"jti": None}, "token lacks the 'jti' claim"),
    ({"aud": "someone-else"}, "token audience is not accepted here"),
    ({"iss": "https://elsewhere.example"}, "token issuer is not accepted here"),
    ({"role": "emperor"}, "unknown role"),
    ({"role": "pilot"}, "a pilot token must name its queues"),
    ({"sub": "x" * 500}, "the subject must be"),
    ({"nbf": datetime.now(UTC) + timedelta(hours=1)}, "token not valid yet"),
])
def test_bad_claims_are_refused(db: Database, claims: dict, message: str) -> None:
    api = _app(db)
    status, text = _ping(api, _forge(db, **claims))
    assert status == 401 and message in text


def test_expiry_is_enforced_on_our_own_tokens(db: Database) -> None:
    api = _app(db)
    good = _forge(db, exp=datetime.now(UTC) + timedelta(seconds=60))
    assert _ping(api, good)[0] == 200
    stale = _forge(db, exp=datetime.now(UTC) - timedelta(seconds=31))  # beyond the leeway
    assert _ping(api, stale) == (401, "token expired")


def test_tampered_unsigned_and_foreign_keys_are_refused(db: Database) -> None:
    api = _app(db)
    token, _ = issue(db, role="reader", subject="r", lifetime_s=600)
    head, body, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_body = jwt.utils.base64url_encode(
        jwt.api_jws.json.dumps({**claims, "role": "admin"}).encode()).decode()
    assert _ping(api, f"{head}.{forged_body}.{sig}") == (401, "token signature does not verify")
    none_alg = jwt.encode({**claims, "role": "admin"}, None, algorithm="none",
                          headers={"kid": jwt.get_unverified_header(token)["kid"]})
    assert _ping(api, none_alg)[0] == 401
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                          headers={"kid": jwt.get_unverified_header(token)["kid"]})
    assert _ping(api, stranger) == (401, "token signature does not verify")
    unknown_kid = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()),
                             algorithm="ES256", headers={"kid": "f" * 32})
    assert _ping(api, unknown_kid) == (401, "token signed by an unknown or retired key")
    # HS256 with the public key as secret (the classic algorithm confusion)
    with db.session() as s:
        public = s.scalar(select(SigningKey.public_pem))
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(claims, public, algorithm="HS256")  # PyJWT refuses to even make it


def test_rotation_keeps_old_tokens_until_the_old_key_is_retired(db: Database) -> None:
    api = _app(db)
    old_kid = keys.ensure_key(db)
    old, _ = issue(db, role="reader", subject="r", lifetime_s=600)
    new_kid = keys.rotate(db)
    new, _ = issue(db, role="reader", subject="r", lifetime_s=600)
    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    assert _ping(api, old)[0] == _ping(api, new)[0] == 200
    assert keys.retire(db, old_kid) is True and keys.retire(db, old_kid) is False
    assert _ping(api, old) == (401, "token signed by an unknown or retired key")
    assert _ping(api, new)[0] == 200


def test_issuing_refuses_what_it_cannot_bound() -> None:
    for text, seconds in (("12h", 43200), ("30m", 1800), ("7d", 604800), ("90", 90)):
        assert parse_duration(text) == seconds
    for bad in ("", "12x", "-1h", "0", "999d", "1e9"):
        with pytest.raises(TokenRequestError):
            parse_duration(bad)


@pytest.mark.parametrize("role, subject, queues, fragment", [
    ("root", "a", [], "unknown role"),
    ("reader", "", [], "the subject must be"),
    ("reader", "a\nb", [], "the subject must be"),
    ("factory", "f", [], "must name its queues"),
    ("pilot", "p", ["q" * 129], "at most 100 queues"),
])
def test_bad_token_requests_are_refused(db: Database, role: str, subject: str,
                                        queues: list[str], fragment: str) -> None:
    with pytest.raises(TokenRequestError, match=fragment):
        issue(db, role=role, subject=subject, queues=queues)


def test_tokens_never_appear_in_replies_or_logs(db: Database, caplog: pytest.LogCaptureFixture,
                                                bearer: Callable[..., dict[str, str]]) -> None:
    api = _app(db)
    token, claims = issue(db, role="reader", subject="r", lifetime_s=600)
    revoke(db, claims["jti"], actor="t")
    caplog.set_level(logging.DEBUG)
    replies = [api.get("/api/v1/ping", headers={"Authorization": f"Bearer {t}"})
               for t in (token, token[:-4] + "AAAA", token + "x" * 9000, "a.b.c")]
    replies.append(api.post("/api/v1/task/submit", headers=bearer("reader"), json={}))
    for reply in replies:
        assert reply.status_code in (401, 403)
        assert token not in reply.text and token[-20:] not in reply.text
    assert token[-20:] not in caplog.text
    with db.session() as s:
        pem = s.scalar(select(SigningKey.private_pem))
    assert pem.splitlines()[1] not in caplog.text
