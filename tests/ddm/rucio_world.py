"""The Rucio entry of the DDM conformance suite: a real Rucio server plays the world.

Each test gets its own scope and three RSEs in the Rucio that `make services`
runs (posix protocols on the test's ``SITE_*_DISK`` directories, account limits
and distances so the conveyor can plan), and its catalog's endpoints map to them.
``RucioWorld.complete`` carries out replications as Rucio does, telling dawms
nothing: Rucio's own judge and conveyor run once with the ``mock`` transfertool
(``tests/rucio/rucio_pump.py``, in the server's venv) and, as the mock copies no
bytes, the bytes are copied from a source replica to the PFN Rucio names (what
FTS would have done); a request meant to fail has its destination replicas
declared unavailable (``U``), so its rule goes STUCK. Only ``poll()`` can then
tell dawms how each rule ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from ddm_world import BUFFER, ENDPOINTS, TAPE, Backend, World, with_tape
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.site_config import sync, validate
from dawms.catalog.states import ReplicaState, RequestState
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.ddm_bridge.rucio.settings import RucioSettings
from factories import site_config

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
RUCIO_DIR = Path(os.environ.get("DAWMS_RUCIO_SERVER_DIR", ROOT / ".services" / "rucio"))
RUCIO_URL = os.environ.get("DAWMS_TEST_RUCIO_URL", "http://127.0.0.1:18480")
PUMP = TESTS / "rucio" / "rucio_pump.py"
_clients: dict[str, Any] = {}


def _settings() -> RucioSettings:
    # one STUCK check fails a request (the suite's failure is final: its replicas are
    # declared unavailable); the poller asks at every call; the cache never answers alone
    return RucioSettings(host=RUCIO_URL, account="root", auth_type="userpass",
                         username="ddmlab", password="secret", poll_interval_s=0.001,
                         cache_ttl_s=0, max_tries=1, backoff_initial_s=0.2,
                         backoff_max_s=1.0)


def _client() -> Any:
    if "c" not in _clients:
        try:
            with urllib.request.urlopen(f"{RUCIO_URL}/ping", timeout=5) as resp:
                assert resp.status == 200
        except OSError as exc:
            pytest.skip(f"no Rucio server at {RUCIO_URL} ({exc}); run scripts/services.sh")
        from rucio.client import Client

        _clients["c"] = Client(**_settings().client_kwargs())
    return _clients["c"]


def _domains() -> dict[str, dict[str, int]]:
    return {"lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {"read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1,
                    "third_party_copy_write": 1}}


def make_rucio(request: pytest.FixtureRequest, db: Database) -> Backend:
    """A scope and three RSEs of this test's own in Rucio; the endpoints map to them."""
    client = _client()
    tag = uuid.uuid4().hex[:8]
    scope = f"t{tag}"
    tmp_path: Path = request.getfixturevalue("tmp_path")
    cfg = with_tape(site_config(tmp_path / "storage",
                                [e.removesuffix("_DISK") for e in ENDPOINTS]),
                    tmp_path / "storage")
    rses = {}
    for ep in cfg["endpoint"]:
        tape = ep["kind"] == "tape"
        rse = f"DDM_{tag.upper()}_{ep['site'][-1]}" + ("_TAPE" if tape else "")
        ep["rse"] = rses[ep["name"]] = rse
        root = ep["url"].removeprefix("file://")
        client.add_rse(rse, rse_type="TAPE" if tape else "DISK")
        client.add_protocol(rse, {"scheme": "file", "hostname": "localhost", "port": 0,
                                  "prefix": f"{root}/",
                                  "impl": "rucio.rse.protocols.posix.Default",
                                  "domains": _domains()})
        client.set_local_account_limit("root", rse, -1)
    for a in rses.values():
        for b in rses.values():
            if a != b:
                client.add_distance(a, b, {"distance": 1})
    client.add_scope("root", scope)
    assert client.get_rse(rses[TAPE])["rse_type"] == "TAPE"
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="ddm conformance (rucio)")
    ddm = RucioDDM(_settings())
    return Backend(ddm, RucioWorld(ddm, client), db, frozenset({"rucio_housekeeping"}),
                   scope=scope)


class RucioWorld(World):
    """Rucio's daemons carry out the rules; bytes move as FTS would move them."""

    def __init__(self, ddm: RucioDDM, client: Any) -> None:
        super().__init__(ddm)
        self.client = client

    def complete(self, db: Database, *, fail: Collection[int] = ()) -> None:
        with db.session() as s:
            reqs = list(s.scalars(select(DataRequest).where(
                DataRequest.state == RequestState.REQUESTED)))
            for req in reqs:
                dest = s.get(StorageEndpoint, req.endpoint_id)
                files = list(s.scalars(select(File).join(
                    DataRequestFile, DataRequestFile.file_id == File.id)
                    .where(DataRequestFile.request_id == req.id)))
                if req.id in fail:  # the transfers failed for good: the rule goes STUCK
                    self.client.update_replicas_states(dest.rse_name, [
                        {"scope": f.scope, "name": f.name, "state": "U"} for f in files])
                    continue
                for f in files:  # what the transfer tool copies (mock copies nothing)
                    if self.read(dest, f.scope, f.name) is not None:
                        continue
                    src = s.scalar(select(StorageEndpoint).join(
                        Replica, Replica.endpoint_id == StorageEndpoint.id)
                        .where(Replica.file_id == f.id,
                               Replica.state == ReplicaState.AVAILABLE).limit(1))
                    data = self.read(src, f.scope, f.name) if src is not None else None
                    assert data is not None, f"{f.scope}:{f.name} has no source with bytes"
                    self.place(dest, f.scope, f.name, data)
        res = subprocess.run([str(RUCIO_DIR / "venv" / "bin" / "python"), str(PUMP),
                              "--transfers"],
                             env={**os.environ, "RUCIO_CONFIG": str(RUCIO_DIR / "rucio.cfg")},
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        print(res.stdout.strip(), file=sys.stderr)

    def recall(self, db: Database, *, at_least: int | None = None) -> None:
        """All of it: Rucio's conveyor (mock) after the bytes went tape -> buffer, as
        FTS's bring-online and copy would; ``at_least``: that many files of each rule
        declared available on the buffer (``update_replicas_states``, issue 7)."""
        with db.session() as s:
            reqs = list(s.scalars(select(DataRequest).where(
                DataRequest.kind == "stage", DataRequest.state == RequestState.REQUESTED)))
            tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == TAPE))
            for req in reqs:
                dest = s.get(StorageEndpoint, req.endpoint_id)
                assert dest.name == BUFFER
                files = list(s.scalars(select(File).join(
                    DataRequestFile, DataRequestFile.file_id == File.id)
                    .where(DataRequestFile.request_id == req.id).order_by(File.name)))
                some = files if at_least is None else files[:at_least]
                assert len(some) < len(files) or at_least is None
                for f in some:
                    data = self.read(tape, f.scope, f.name)
                    assert data is not None, f"{f.scope}:{f.name} has no bytes on tape"
                    self.place(dest, f.scope, f.name, data)
                if at_least is not None:
                    self.client.update_replicas_states(dest.rse_name, [
                        {"scope": f.scope, "name": f.name, "state": "A"} for f in some])
        if at_least is None:
            self.complete(db)

    def staged_copy_held(self, db: Database, request_id: int) -> bool:
        """The rule is the pin: held while it exists and has not expired."""
        from datetime import UTC, datetime

        from rucio.common.exception import RuleNotFound

        with db.session() as s:
            rule_id = s.get(DataRequest, request_id).external_id
        try:
            rule = self.client.get_replication_rule(rule_id)
        except RuleNotFound:
            return False
        expires = rule.get("expires_at")
        return expires is None or expires.replace(tzinfo=UTC) > datetime.now(UTC)
