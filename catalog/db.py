"""Engines and sessions: the one way code of ours opens a transaction.

SQLite (WAL, ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing
on a stale snapshot) is the embedded default; PostgreSQL is chosen by URL, with a
connection pool sized by ``PoolSettings`` (``DAWMS_DB_POOL_SIZE`` ...): connections
stay open and are reused, so a busy server does not start a backend per request. The
schema is built and upgraded by Alembic (``upgrade()``), never by ``create_all``
outside tests of the models themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from . import events

DEFAULT_HOME = Path(os.environ.get("DAWMS_HOME", Path.home() / ".dawms"))


class PoolSettings(BaseSettings):
    """The PostgreSQL connection pool of one process (``DAWMS_DB_*``).

    A process holds at most ``pool_size + max_overflow`` connections; the server runs
    that many request threads, so no request waits for a connection and none is
    opened and closed per request. Several server processes (``--workers N``) and
    nodes: ``N x (pool_size + max_overflow)`` plus the schedulers' must stay below
    PostgreSQL's ``max_connections``.
    """

    model_config = SettingsConfigDict(env_prefix="DAWMS_DB_", extra="ignore")

    pool_size: int = Field(16, ge=1, le=1000, description="connections kept open")
    max_overflow: int = Field(4, ge=0, le=1000,
                              description="extra connections under load, closed on return")
    pool_timeout_s: float = Field(30.0, gt=0, description="wait for a free connection")
    pool_recycle_s: int = Field(1800, ge=-1, description="reopen connections this old")
    pre_ping: bool = Field(False, description="test each connection on checkout (one more "
                                              "round trip; for links that drop idle ones)")

    @property
    def connections(self) -> int:
        return self.pool_size + self.max_overflow


def default_url() -> str:
    return os.environ.get("DAWMS_DB_URL") or f"sqlite:///{DEFAULT_HOME / 'dawms.db'}"


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``$DAWMS_DB_URL`` or ``~/.dawms/dawms.db``)."""
    url = url or default_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               **kwargs)
        _sqlite_pragmas(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    pool = PoolSettings()
    options: dict[str, Any] = {"pool_pre_ping": pool.pre_ping, "pool_size": pool.pool_size,
                               "max_overflow": pool.max_overflow,
                               "pool_timeout": pool.pool_timeout_s,
                               "pool_recycle": pool.pool_recycle_s}
    return create_engine(url, **{**options, **kwargs})


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) \
        else session_or_engine
    return bind.dialect.name == "postgresql"


class Database:
    """An engine plus a session factory whose commits publish catalog events.

    ``broker`` carries them: in-process on SQLite, PostgreSQL ``LISTEN/NOTIFY`` on
    PostgreSQL, so a change committed by one process wakes daemons in another.
    """

    def __init__(self, url: str | None = None, **engine_kwargs: Any) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url, **engine_kwargs)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self.broker = events.broker_for(self.engine.url.render_as_string(hide_password=False),
                                        self.engine)
        events.install(self._factory, self.broker)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._factory() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        from .migrate import upgrade

        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
