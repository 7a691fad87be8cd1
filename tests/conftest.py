"""Shared fixtures: a catalog on SQLite and on PostgreSQL, sites, datasets.

Every DB test runs on both backends. PostgreSQL is the server `make services`
prepares (``DAWMS_TEST_PG_URL``, default the machine's 127.0.0.1:5432); each test
session gets a throwaway database. With ``DAWMS_NO_SKIP=1`` (set by `make test`)
a skipped test is an error: in CI nothing may skip silently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from dawms.catalog.db import Database
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM
from factories import site_config

PG_ADMIN_URL = os.environ.get("DAWMS_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("DAWMS_NO_SKIP") == "1" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but DAWMS_NO_SKIP=1 forbids skips: {rep.longrepr}"


@pytest.fixture(autouse=True)
def _no_user_client_config(tmp_path_factory: pytest.TempPathFactory,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the real user's client config: ``XDG_CONFIG_HOME`` is a fresh
    empty directory (and ``$DAWMS_CONFIG`` unset) in every test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.delenv("DAWMS_CONFIG", raising=False)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped at the end."""
    name = f"dawms_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server: say so (DAWMS_NO_SKIP turns this into a failure)
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not usable ({exc}); run `make services`")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    base = request.getfixturevalue("pg_server_url")
    # one schema-fresh database per test: drop everything the previous test made
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return base


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def ddm() -> LocalDDM:
    return LocalDDM()


@pytest.fixture
def sites(db: Database, tmp_path: Path) -> list[str]:
    names = ["SITE_A", "SITE_B", "SITE_C"]
    with db.session() as s:
        sync(s, validate(site_config(tmp_path / "storage", names)), actor="test",
             source="fixture")
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_token(db: Database) -> Callable[..., str]:
    """``make_token(role, subject="test", queues=())``: a real token signed by ``db``'s key."""
    from dawms.server.tokens import issue

    def make(role: str, subject: str = "test", queues: tuple[str, ...] | list[str] = (),
             lifetime_s: int = 3600) -> str:
        return issue(db, role=role, subject=subject, queues=list(queues),
                     lifetime_s=lifetime_s)[0]

    return make


@pytest.fixture
def bearer(make_token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """``bearer(role, ...)``: the Authorization header of ``make_token(role, ...)``."""
    def headers(role: str, subject: str = "test", queues: tuple[str, ...] | list[str] = ()
                ) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(role, subject, queues)}"}

    return headers


@pytest.fixture
def server(db: Database, tmp_path: Path) -> Iterator[str]:
    """A real `dawms server` process (with its scheduler) over ``db``; SITE_B is brokeroff.

    Auth is on, as in production: callers need tokens (``make_token``)."""
    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"])
    cfg["queue"][1]["status"] = "brokeroff"  # SITE_B's data must move to run
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="e2e")
    port = _free_port()
    env = {**os.environ, "DAWMS_DB_URL": db.url, "DAWMS_AUTH": "on", "DAWMS_HEARTBEAT_S": "1",
           "DAWMS_INTERVAL_S": "1", "DAWMS_TRANSFER_INTERVAL_S": "0.5",
           "DAWMS_SENT_TIMEOUT_S": "30", "DAWMS_HEARTBEAT_TIMEOUT_S": "8"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed after the yield)
    proc = subprocess.Popen([sys.executable, "-m", "dawms", "server", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            httpx.get(f"{url}/readyz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()
