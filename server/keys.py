"""The server's signing keys, kept in the catalog so every server process shares them.

The first start makes an ES256 key with no manual step (``ensure_key``); the
newest unretired key signs, every unretired key verifies, so ``rotate`` makes a
new signer while tokens signed by the old one keep working until it is
``retire``-d. Verifying keys are cached per process for ``cache_s``; a ``kid``
not in the cache (a key rotated in by another process) reloads at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from dawms.catalog.db import Database
from dawms.catalog.models import SigningKey

ALGORITHM = "ES256"


def _new_key() -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return SigningKey(kid=uuid.uuid4().hex, algorithm=ALGORITHM, private_pem=private_pem,
                      public_pem=public_pem, created_at=datetime.now(UTC))


def ensure_key(db: Database) -> str:
    """The signer's kid; a key is made if there is none (first start)."""
    with db.session() as s:
        kid = _signer_kid(s)
        if kid is None:
            key = _new_key()
            s.add(key)
            kid = key.kid
    return kid


def rotate(db: Database) -> str:
    """Make a new signing key; older keys keep verifying until retired. Returns its kid."""
    key = _new_key()
    with db.session() as s:
        s.add(key)
    return key.kid


def retire(db: Database, kid: str) -> bool:
    """Stop accepting tokens signed by ``kid``; False if no such unretired key."""
    with db.session() as s:
        done = s.execute(update(SigningKey).where(SigningKey.kid == kid,
                                                  SigningKey.retired_at.is_(None))
                         .values(retired_at=datetime.now(UTC))).rowcount
    return bool(done)


def list_keys(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.execute(select(SigningKey.kid, SigningKey.algorithm, SigningKey.created_at,
                                SigningKey.retired_at).order_by(SigningKey.created_at)).all()
    return [{"kid": k, "algorithm": a, "created_at": c.isoformat(),
             "retired_at": r.isoformat() if r else None} for k, a, c, r in rows]


def _signer_kid(s: Any) -> str | None:
    return s.scalar(select(SigningKey.kid).where(SigningKey.retired_at.is_(None))
                    .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc()).limit(1))


def signer(db: Database) -> tuple[str, str, str]:
    """(kid, algorithm, private PEM) of the key that signs now (made if missing)."""
    ensure_key(db)
    with db.session() as s:
        row = s.execute(select(SigningKey.kid, SigningKey.algorithm, SigningKey.private_pem)
                        .where(SigningKey.retired_at.is_(None))
                        .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc())
                        .limit(1)).one()
    return row[0], row[1], row[2]


class VerifyingKeys:
    """Public keys by kid, for verification; only unretired keys are returned."""

    def __init__(self, db: Database, cache_s: float = 10.0) -> None:
        self._db = db
        self._cache_s = cache_s
        self._keys: dict[str, tuple[str, Any]] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, kid: str) -> tuple[str, Any] | None:
        """(algorithm, public key) for ``kid``, or None if unknown or retired."""
        age = time.monotonic() - self._loaded_at
        # an unknown kid reloads at once (a key rotated in elsewhere), but at most once a
        # second, so made-up kids cannot turn every request into a key query
        if age >= self._cache_s or (kid not in self._keys and age >= min(1.0, self._cache_s)):
            self._reload()
        return self._keys.get(kid)

    def _reload(self) -> None:
        with self._lock:
            with self._db.session() as s:
                rows = s.execute(select(SigningKey.kid, SigningKey.algorithm,
                                        SigningKey.public_pem)
                                 .where(SigningKey.retired_at.is_(None))).all()
            self._keys = {kid: (alg, serialization.load_pem_public_key(pem.encode()))
                          for kid, alg, pem in rows}
            self._loaded_at = time.monotonic()
