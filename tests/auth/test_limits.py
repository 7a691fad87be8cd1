"""Bounded input: body limits per route (413, declared or streamed), bounded fields
(422), and every error in the envelope, parse errors and 405 included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from world_helpers import World, snapshot, spec

from dawms.ddm_bridge.rucio.messages import MAX_BODY_BYTES as RUCIO_MAX
from dawms.server.settings import ServerSettings

pytestmark = pytest.mark.auth
MB = 1024 * 1024


def _envelope(reply, status: int, fragment: str = "") -> None:  # type: ignore[no-untyped-def]
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"success", "code", "message", "data"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert body["success"] is False and body["data"] is None
    assert fragment in body["message"], body["message"]


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_default_limit_refuses_a_big_body_and_changes_nothing(world: World) -> None:
    big = {**spec("big"), "description": "x" * (2 * MB)}
    before = snapshot(world.db)
    reply = world.api.post("/api/v1/task/submit", json=big, headers=world.headers("production"))
    _envelope(reply, 413, "larger than 1048576 bytes")
    # streamed, with no Content-Length: counted as it arrives
    data = json.dumps(big).encode()
    reply = world.api.post("/api/v1/task/submit", content=_chunks(data),
                           headers={**world.headers("production"),
                                    "Content-Type": "application/json"})
    _envelope(reply, 413, "larger than 1048576 bytes")
    assert snapshot(world.db) == before


def test_bulk_routes_take_more_but_not_unbounded(world: World) -> None:
    fence = {"job_id": world.jobs_of(world.alice_task)[0], "attempt": 1,
             "lease_token": "0" * 32, "state": "running", "error_diag": "d" * 3000}
    updates = {"updates": [fence] * 600}  # about 2 MB: above the default, under the bulk
    assert 1.5 * MB < len(json.dumps(updates)) < 16 * MB
    reply = world.api.post("/api/v1/pilot/update_jobs_bulk", json=updates,
                           headers=world.headers("pilot"))
    assert reply.status_code == 200 and len(reply.json()["data"]) == 600
    reply = world.api.post("/api/v1/pilot/update_job", json={**fence, "error_diag": "x"},
                           content=None, headers=world.headers("pilot"))
    assert reply.status_code == 409  # a stale lease: the size was fine
    reply = world.api.post("/api/v1/pilot/update_jobs_bulk", content=b"[" * (17 * MB),
                           headers={**world.headers("pilot"),
                                    "Content-Type": "application/json"})
    _envelope(reply, 413, "larger than 16777216 bytes")


def test_limits_come_from_the_settings_and_the_openapi_document(world: World, db) -> None:
    from dawms.ddm_bridge.local import LocalDDM
    from dawms.scheduler.config import SchedulerConfig
    from dawms.server.app import create_app

    settings = ServerSettings(max_body_bytes=4096, max_bulk_body_bytes=8192,
                              max_ddm_body_bytes=2 * MB)
    with TestClient(create_app(db, LocalDDM(), SchedulerConfig(), settings=settings)) as api:
        doc = api.get("/openapi.json").json()["paths"]
        assert doc["/api/v1/task/submit"]["post"]["x-max-body-bytes"] == 4096
        assert doc["/api/v1/pilot/update_jobs_bulk"]["post"]["x-max-body-bytes"] == 8192
        assert doc["/api/v1/ddm/event"]["post"]["x-max-body-bytes"] == 2 * MB
        # hermes' route takes the bound its own parser enforces, whatever the settings
        assert doc["/api/v1/ddm/rucio/messages"]["post"]["x-max-body-bytes"] == RUCIO_MAX
        reply = api.post("/api/v1/task/submit", json={"x": "y" * 5000},
                         headers=world.headers("production"))
        _envelope(reply, 413, "larger than 4096 bytes")
        for path in ("/api/v1/ddm/rucio/messages", "/api/v1/ddm/rucio/_bulk"):
            reply = api.post(path, content=b" " * (RUCIO_MAX + 1), headers=world.headers("ddm"))
            _envelope(reply, 413, f"larger than {RUCIO_MAX} bytes")


def test_a_ddm_bulk_of_1000_events_fits_and_1001_is_refused(world: World) -> None:
    events = [{"dedup_key": f"rule-ok-{i}", "outcome": "done", "external_id": f"x{i}",
               "error": "e" * 3000} for i in range(1000)]
    assert len(json.dumps({"events": events})) > 2 * MB  # above the default limit
    reply = world.api.post("/api/v1/ddm/event", json={"events": events},
                           headers=world.headers("ddm"))
    assert reply.status_code == 200, reply.text[:300]
    results = reply.json()["data"]["results"]
    assert len(results) == 1000 and {r["result"] for r in results} == {"refused"}
    reply = world.api.post("/api/v1/ddm/event", json={"events": events + events[:1]},
                           headers=world.headers("ddm"))
    _envelope(reply, 422, "at most 1000")


@pytest.mark.parametrize("path, role, body, fragment", [
    ("/api/v1/pilot/update_job", "pilot",
     {"metrics": {f"m{i}": i for i in range(65)}}, "metrics"),
    ("/api/v1/pilot/update_job", "pilot", {"metrics": {"cpu": {"deep": [1]}}}, "metrics"),
    ("/api/v1/pilot/update_job", "pilot", {"metrics": {"x" * 65: 1}}, "metrics"),
    ("/api/v1/pilot/update_job", "pilot", {"metrics": {"note": "n" * 257}}, "metrics"),
    ("/api/v1/pilot/update_job", "pilot", {"error_diag": "d" * 4001}, "error_diag"),
    ("/api/v1/ddm/event", "ddm", {"error": "e" * 4001}, "error"),
    ("/api/v1/task/submit", "production", {"transformation": "t" * 16385}, "transformation"),
])
def test_bounded_fields_are_a_422_and_change_nothing(world: World, path: str, role: str,
                                                     body: dict, fragment: str) -> None:
    base = {"/api/v1/pilot/update_job": {"job_id": world.jobs_of(world.alice_task)[0],
                                         "attempt": 1, "lease_token": "0" * 32,
                                         "state": "running"},
            "/api/v1/ddm/event": {"dedup_key": "k", "outcome": "failed", "external_id": "x"},
            "/api/v1/task/submit": spec("bounded")}[path]
    before = snapshot(world.db)
    reply = world.api.post(path, json={**base, **body}, headers=world.headers(role))
    _envelope(reply, 422, fragment)
    assert snapshot(world.db) == before


def test_parse_errors_405_and_unknown_paths_answer_the_envelope(world: World) -> None:
    api, headers = world.api, {**world.headers("production"),
                               "Content-Type": "application/json"}
    before = snapshot(world.db)
    _envelope(api.post("/api/v1/task/submit", content=b'{"name": "\xff\xfe"}',
                       headers=headers), 400)
    _envelope(api.post("/api/v1/task/submit", content=b"[" * 1000 + b"]" * 1000,
                       headers=headers), 400)
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    reply = api.post("/api/v1/task/submit", content=deep, headers=headers)
    assert reply.status_code in (400, 422)
    _envelope(reply, reply.status_code)
    _envelope(api.post("/api/v1/task/submit", content=b"{not json", headers=headers), 422)
    _envelope(api.put("/api/v1/summary", headers=headers), 405, "Method Not Allowed")
    _envelope(api.put("/healthz"), 405)
    _envelope(api.get("/api/v1/nothing-here", headers=headers), 404)
    assert snapshot(world.db) == before


def test_health_probes_are_open_and_say_what_they_check(world: World) -> None:
    assert world.api.get("/healthz").json()["data"] == {"alive": True}
    assert world.api.get("/readyz").json()["data"]["database"] is True
    world.db.engine.dispose()
    world.db.engine.url  # noqa: B018 (the engine reconnects on demand; still ready)
    assert world.api.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_gone(tmp_path) -> None:
    from dawms.catalog.db import Database
    from dawms.ddm_bridge.local import LocalDDM
    from dawms.scheduler.config import SchedulerConfig
    from dawms.server.app import create_app

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    db.upgrade()
    app = create_app(db, LocalDDM(), SchedulerConfig())
    with TestClient(app) as api:
        assert api.get("/readyz").status_code == 200
        (tmp_path / "c.db").unlink()
        (tmp_path / "c.db").mkdir()  # the file is gone and cannot be made again
        db.engine.dispose()
        _envelope(api.get("/readyz"), 503, "database unreachable")
        assert api.get("/healthz").status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading(world: World) -> None:
    """The Content-Length check answers 413 without reading a byte (or calling the app)."""
    import asyncio

    from dawms.server.limits import BodyLimit

    calls: list[str] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        calls.append("app")

    async def receive() -> dict:
        calls.append("receive")
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    guard = BodyLimit(app, world.api.app, ServerSettings())
    scope = {"type": "http", "method": "POST", "path": "/api/v1/task/submit",
             "headers": [(b"content-length", str(10**12).encode())]}
    asyncio.run(guard(scope, receive, send))
    assert calls == [] and sent[0]["status"] == 413
    assert b"larger than 1048576 bytes" in sent[1]["body"]
