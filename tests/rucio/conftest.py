"""Fixtures for the Rucio bridge: the real Rucio server `make services` prepares, its daemons.

Scoped to the whole run: the Rucio server (started under gunicorn if /ping does
not answer, stopped by pid at the end only if this run started it), one world
per run (a scope, two RSEs with posix protocols under a temporary root, account
limits and distances, so Rucio's conveyor can plan transfers), and ``pump``,
which runs Rucio's own daemons once in the server's venv (judge, conveyor with
the mock transfertool, hermes). Each test gets a fresh dawms catalog whose
SITE_A/SITE_B endpoints map to those RSEs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rucio_helpers import HERMES_SECRET, HERMES_USER, RUCIO_DIR, World, site_file

from dawms.catalog.db import Database
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.ddm_bridge.rucio.settings import RucioSettings
from dawms.server.auth import hash_secret

RUCIO_URL = os.environ.get("DAWMS_TEST_RUCIO_URL", "http://127.0.0.1:18480")
STOMP = os.environ.get("DAWMS_TEST_STOMP", "127.0.0.1:61613")
PUMP = Path(__file__).with_name("rucio_pump.py")
# Rucio's own upload client (the tests' way to put data into Rucio) reads a rucio.cfg;
# a client-only one (with a [database] section rucio-clients believes it is the server).
# The bridge itself needs none: it is configured by DAWMS_RUCIO_* settings.
_CLIENT_CFG = Path(tempfile.mkdtemp(prefix="dawms-rucio-client-")) / "rucio.cfg"
_CLIENT_CFG.write_text(f"""[client]
rucio_host = {RUCIO_URL}
auth_host = {RUCIO_URL}
auth_type = userpass
username = ddmlab
password = secret
account = root
""")
os.environ["RUCIO_CONFIG"] = str(_CLIENT_CFG)

def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def rucio_server() -> Iterator[str]:
    """The Rucio server; started (and later stopped, by pid) only if it is not running."""
    if _ping(RUCIO_URL):
        yield RUCIO_URL
        return
    gunicorn = RUCIO_DIR / "venv" / "bin" / "gunicorn"
    if not gunicorn.exists():
        pytest.skip(f"no Rucio server at {RUCIO_URL} and none installed in {RUCIO_DIR}; "
                    "run `make services`")
    port = RUCIO_URL.rsplit(":", 1)[1]
    log = open(RUCIO_DIR / "gunicorn-tests.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(gunicorn), "--no-control-socket", "-b", f"127.0.0.1:{port}", "-w", "2",
         "--threads", "4", "--chdir", str(RUCIO_DIR),
         "rucio.web.rest.flaskapi.v1.main:application"],
        env={**os.environ, "RUCIO_CONFIG": str(RUCIO_DIR / "rucio.cfg")}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while not _ping(RUCIO_URL):
        assert proc.poll() is None, f"the Rucio server exited; see {log.name}"
        assert time.monotonic() < deadline, "the Rucio server did not answer in 90 s"
        time.sleep(0.3)
    yield RUCIO_URL
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="session")
def rucio_settings(rucio_server: str) -> RucioSettings:
    return RucioSettings(host=rucio_server, account="root", auth_type="userpass",
                         username="ddmlab", password="secret", poll_interval_s=0.001,
                         cache_ttl_s=0, backoff_initial_s=0.2, backoff_max_s=1.0)


@pytest.fixture(scope="session")
def rucio_client(rucio_settings: RucioSettings):  # type: ignore[no-untyped-def]
    from rucio.client import Client

    return Client(**rucio_settings.client_kwargs())


def _domains() -> dict:
    return {"lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {"read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1,
                    "third_party_copy_write": 1}}


@pytest.fixture(scope="session")
def world(rucio_client, tmp_path_factory: pytest.TempPathFactory) -> World:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:6]
    root = tmp_path_factory.mktemp("rucio-storage")
    scope = f"t{tag}"
    rses = {site: f"DAWMS_{tag.upper()}_{site[-1]}" for site in ("SITE_A", "SITE_B")}
    dirs = {}
    for rse in rses.values():
        d = root / rse
        d.mkdir()
        dirs[rse] = d
        rucio_client.add_rse(rse)
        rucio_client.add_protocol(rse, {
            "scheme": "file", "hostname": "localhost", "port": 0, "prefix": f"{d}/",
            "impl": "rucio.rse.protocols.posix.Default", "domains": _domains()})
        rucio_client.set_local_account_limit("root", rse, -1)
    names = list(rses.values())
    for a in names:
        for b in names:
            if a != b:
                rucio_client.add_distance(a, b, {"distance": 1})
    rucio_client.add_scope("root", scope)
    return World(tag, scope, rses, dirs)


@pytest.fixture
def rucio_sites(db: Database, world: World) -> World:
    with db.session() as s:
        sync(s, validate(site_file(world)), actor="test", source="rucio fixture")
    return world


@pytest.fixture
def rucio_ddm(rucio_settings: RucioSettings) -> RucioDDM:
    return RucioDDM(rucio_settings)


@pytest.fixture(scope="session")
def pump(rucio_server: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., float]:
    """``pump(transfers=True, cleaner=False, hermes=None|"elastic"|"activemq", elastic=URL,
    elastic_auth=(user, secret))``: Rucio's daemons once (hermes for that one service,
    until its queue is empty, posting with HTTP Basic if given); seconds taken."""
    python = RUCIO_DIR / "venv" / "bin" / "python"
    base = (RUCIO_DIR / "rucio.cfg").read_text()
    cfg_dir = tmp_path_factory.mktemp("rucio-cfg")

    def run(*, transfers: bool = True, cleaner: bool = False, hermes: str | None = None,
            elastic: str = "http://127.0.0.1:9/_bulk",
            elastic_auth: tuple[str, str] | None = None) -> float:
        cfg = cfg_dir / f"rucio-{uuid.uuid4().hex[:6]}.cfg"
        line = f"elastic_endpoint = {elastic}"
        if elastic_auth:  # hermes sends these as HTTP Basic (its only auth for elastic)
            line += f"\nelastic_username = {elastic_auth[0]}\nelastic_password = {elastic_auth[1]}"
        text = re.sub(r"(?m)^elastic_endpoint = .*$", lambda _: line, base)
        if hermes:  # this hermes serves one service only (messages are kept per service)
            text = re.sub(r"(?m)^services_list = .*$",
                          f"services_list = {hermes}\nquery_by_service = True", text)
        cfg.write_text(text)
        argv = [str(python), str(PUMP)] + (["--transfers"] if transfers else []) + \
            (["--cleaner"] if cleaner else []) + \
            (["--hermes", hermes] if hermes else [])
        t0 = time.monotonic()
        res = subprocess.run(argv, env={**os.environ, "RUCIO_CONFIG": str(cfg)},
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return time.monotonic() - t0

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dawms_server(db: Database, world: World, rucio_settings: RucioSettings,
                 tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``dawms_server(**env)``: a real `dawms server` process in Rucio mode over ``db``.

    SITE_A's queue takes no new work (brokeroff), so a job over data at SITE_A's RSE
    runs at SITE_B and its inputs must be replicated there by Rucio.
    """
    procs: list[tuple[subprocess.Popen[bytes], object]] = []

    def start(**extra: str) -> str:
        cfg = site_file(world)
        cfg["queue"][0]["status"] = "brokeroff"
        with db.session() as s:
            sync(s, validate(cfg), actor="test", source="rucio e2e")
        port = _free_port()
        env = {**os.environ, "DAWMS_DB_URL": db.url, "DAWMS_DDM": "rucio",
               "DAWMS_RUCIO_HOST": str(rucio_settings.host), "DAWMS_RUCIO_ACCOUNT": "root",
               "DAWMS_RUCIO_AUTH_TYPE": "userpass", "DAWMS_RUCIO_USERNAME": "ddmlab",
               "DAWMS_RUCIO_PASSWORD": "secret", "DAWMS_RUCIO_CACHE_TTL_S": "0",
               "DAWMS_HEARTBEAT_S": "1", "DAWMS_INTERVAL_S": "1",
               "DAWMS_SENT_TIMEOUT_S": "60", "DAWMS_HEARTBEAT_TIMEOUT_S": "30",
               "DAWMS_DDM_BASIC_USERS": json.dumps({HERMES_USER: hash_secret(HERMES_SECRET)}),
               **extra}
        log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 (closed at the end)
        proc = subprocess.Popen([sys.executable, "-m", "dawms", "-v", "server", "--port",
                                 str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    return url
            except OSError:
                assert time.monotonic() < deadline, "the dawms server did not start"
                time.sleep(0.2)

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(20)
        log.close()  # type: ignore[attr-defined]
