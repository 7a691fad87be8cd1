"""The DDM's HTTP Basic credentials (Rucio hermes), DAWMS_AUTH=off on loopback only,
and a real server process: open probes, everything else behind a token, 413."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from world_helpers import snapshot

from dawms.catalog.db import Database
from dawms.cli import is_loopback, main
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.server.app import create_app
from dawms.server.auth import check_secret, hash_secret
from dawms.server.settings import ServerSettings

pytestmark = pytest.mark.auth
SECRET = "correct horse battery staple"


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_secret_hashes_are_scrypt_and_salted() -> None:
    one, two = hash_secret(SECRET), hash_secret(SECRET)
    assert one.startswith("scrypt$16384$8$1$") and one != two
    assert check_secret(SECRET, one) and check_secret(SECRET, two)
    assert not check_secret(SECRET + "!", one)
    assert not check_secret(SECRET, "scrypt$99999999$8$1$AAAA$AAAA")  # no memory bomb
    assert not check_secret(SECRET, "plain")


def test_hermes_posts_events_with_basic_credentials(db: Database, ddm: LocalDDM,
                                                    sites: list[str], tmp_path) -> None:
    settings = ServerSettings(ddm_basic_users={"hermes": hash_secret(SECRET)})
    event = {"dedup_key": "hermes-1", "outcome": "done", "external_id": "nope"}
    with TestClient(create_app(db, ddm, SchedulerConfig(), settings=settings)) as api:
        before = snapshot(db)
        for headers in (_basic("hermes", "wrong"), _basic("nobody", SECRET), _basic("", "")):
            reply = api.post("/api/v1/ddm/event", json=event, headers=headers)
            assert reply.status_code == 401, reply.text
            assert reply.headers["www-authenticate"].startswith("Basic")
            assert SECRET not in reply.text
        assert snapshot(db) == before
        reply = api.post("/api/v1/ddm/event", json=event, headers=_basic("hermes", SECRET))
        assert reply.status_code == 404 and "nope" in reply.json()["message"]  # got through
        # the DDM's credentials open nothing else
        for method, path in (("GET", "/api/v1/task/list"),
                             ("POST", "/api/v1/pilot/acquire_jobs")):
            reply = api.request(method, path, json={"queue": "SITE_A_PROD", "pilot_id": "x"},
                                headers=_basic("hermes", SECRET))
            assert reply.status_code == 401
        assert snapshot(db) == before


def test_auth_off_admits_tokenless_callers_and_warns(db: Database,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    app = create_app(db, LocalDDM(), SchedulerConfig(), settings=ServerSettings(auth="off"))
    assert "DAWMS_AUTH=off" in caplog.text
    with TestClient(app) as api:
        assert api.get("/api/v1/task/list").status_code == 200
        reply = api.get("/api/v1/ping", headers={"Authorization": "Bearer x.y.z"})
        assert reply.status_code == 401  # tokens cannot be checked there: refused, not trusted


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False),
                                            ("192.0.2.7", False), ("no-such-host.invalid",
                                                                   False)])
def test_what_counts_as_a_loopback_bind(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_off_on_a_public_bind_refuses_to_start(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str],
                                                    tmp_path) -> None:
    monkeypatch.setenv("DAWMS_AUTH", "off")
    monkeypatch.setenv("DAWMS_DB_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert main(["server", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "loopback binds only" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_a_real_server_process_guards_every_route(server: str, make_token) -> None:
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{server}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{server}/openapi.json", timeout=10).status_code == 200
    assert httpx.get(f"{server}/api/v1/summary", timeout=10).status_code == 401
    token = make_token("production", "p")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server}/api/v1/summary", headers=headers, timeout=10).status_code == 200
    reply = httpx.post(f"{server}/api/v1/task/submit", headers=headers, timeout=30,
                       content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert reply.status_code == 413 and reply.json()["success"] is False


def test_the_pilot_reads_its_token_from_a_file_or_the_environment_only(tmp_path) -> None:
    from dawms.pilot.main import TokenFileError, build_parser, load_token

    path = tmp_path / "token"
    path.write_text("abc.def.ghi\n")
    path.chmod(0o600)
    env_before = dict(os.environ)
    os.environ["DAWMS_TOKEN"] = "from-env"
    try:
        assert load_token(path) == "abc.def.ghi"
        assert "DAWMS_TOKEN" not in os.environ  # removed either way: payloads never see it
        os.environ["DAWMS_TOKEN"] = "from-env"
        assert load_token(None) == "from-env" and "DAWMS_TOKEN" not in os.environ
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    path.write_bytes(b"x" * 9000)
    with pytest.raises(TokenFileError, match="larger than"):
        load_token(path)
    with pytest.raises(TokenFileError, match="cannot read"):
        load_token(tmp_path / "missing")
    with pytest.raises(SystemExit):  # there is no option taking the token itself
        build_parser().parse_args(["--server", "x", "--queue", "q", "--token", "t"])
    # and a pilot with no token gets a clear refusal from the server, not a hang
    out = subprocess.run([sys.executable, "-m", "dawms.pilot", "--server",
                          "http://127.0.0.1:9", "--queue", "q", "--token-file",
                          str(tmp_path / "missing")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "cannot read the token file" in out.stderr
