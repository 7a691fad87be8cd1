"""Callback sources: hermes' HTTP bulk and STOMP messages, deduplicated, stored before the ack.

The messages are about real rules on the real Rucio server (made by the bridge),
in the exact shapes hermes sends (elastic bulk NDJSON: an action line, then the
message; STOMP: one JSON body). Duplicates, reordering and stale messages must
change nothing; a post is answered 200 only once stored; bad input is refused
whole with a clear message and changes nothing.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rucio_helpers import HERMES_SECRET, HERMES_USER, World, make_rucio_dataset, unique, wait_for
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    DDMEvent,
    File,
    Job,
    JobFile,
    Replica,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import Entity, JobState, TaskState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.events import apply_request_outcome
from dawms.ddm_bridge.rucio import housekeeping
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.ddm_bridge.rucio.messages import (
    MAX_BODY_BYTES,
    MAX_MESSAGES,
    apply_messages,
    parse_body,
)
from dawms.ddm_bridge.rucio.settings import RucioSettings
from dawms.server.app import create_app
from dawms.server.auth import hash_secret
from dawms.server.settings import ServerSettings

pytestmark = pytest.mark.rucio


def _request(db: Database, ddm: RucioDDM, world: World, client, tmp: Path,  # type: ignore[no-untyped-def]
             n: int = 2) -> tuple[int, str, str, list[str]]:
    did = unique(world, "cb")
    make_rucio_dataset(client, world, did, "SITE_A", n, tmp)
    with db.session() as s:
        files = ddm.list_files(s, did)
        b = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_DISK"))
        name = f"{did.split(':')[1]}_dis"
        req = ddm.request_replication(s, files, b, name=name)
        return req.id, req.external_id, name, [f.name for f in files]


def bulk(*messages: dict) -> bytes:
    """hermes' elastic form: ``{ "index":{ } }`` then the message, per message."""
    return "".join('{ "index":{ } }\n' + json.dumps(m) + "\n" for m in messages).encode()


def rule_ok(rule_id: str, scope: str, name: str, kind: str = "RULE_OK") -> dict:
    return {"id": f"{kind}-{rule_id}", "event_type": kind, "created_at": "2026-12-01 17:00:00",
            "services": "elastic",
            "payload": json.dumps({"scope": scope, "name": name, "rule_id": rule_id})}


def state(db: Database, req_id: int) -> str:
    with db.session() as s:
        return s.get(DataRequest, req_id).state


@pytest.fixture
def app_client(db: Database, rucio_ddm: RucioDDM, rucio_sites: World, bearer):  # type: ignore[no-untyped-def]
    """The app in Rucio mode; the client sends a ``ddm`` token, hermes' user is configured."""
    settings = ServerSettings(ddm_basic_users={HERMES_USER: hash_secret(HERMES_SECRET)})
    with TestClient(create_app(db, rucio_ddm, settings=settings),
                    headers=bearer("ddm", "rucio-tests")) as client:
        yield client


def hermes_basic() -> dict[str, str]:
    """What hermes sends with ``elastic_username``/``elastic_password``: HTTP Basic."""
    raw = base64.b64encode(f"{HERMES_USER}:{HERMES_SECRET}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_http_bulk_applies_once_and_marks_the_replicas(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client, app_client,  # type: ignore[no-untyped-def]
        tmp_path: Path, bearer) -> None:
    req_id, rule_id, name, files = _request(db, rucio_ddm, rucio_sites, rucio_client, tmp_path)
    body = bulk(rule_ok(rule_id, rucio_sites.scope, name),
                rule_ok(rule_id, rucio_sites.scope, name, "DATASETLOCK_OK"),
                rule_ok("f" * 32, rucio_sites.scope, "not-ours"),
                {"event_type": "CREATE_DTS", "payload": {"scope": "x", "name": "y"}})
    # nobody, a wrong secret and a token of another role are refused and change nothing
    wrong = base64.b64encode(f"{HERMES_USER}:nope".encode()).decode()
    for headers in ({"Authorization": ""}, {"Authorization": f"Basic {wrong}"},
                    bearer("pilot", "p", ["SITE_B_PROD"])):
        resp = app_client.post("/api/v1/ddm/rucio/_bulk", content=body, headers=headers)
        assert resp.status_code in (401, 403), (headers, resp.text)
        assert resp.json()["success"] is False and state(db, req_id) == "requested"
    # hermes posts with HTTP Basic
    resp = app_client.post("/api/v1/ddm/rucio/_bulk", content=body,
                           headers={"Content-Type": "application/json", **hermes_basic()})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["errors"] is False and data["success"] is True
    assert data["data"] == {"messages": 4, "results": {"applied": 1, "duplicate": 1,
                                                        "unknown": 1, "ignored": 1}}
    assert state(db, req_id) == "done"
    with db.session() as s:
        states = s.execute(select(File.name, Replica.state).join(Replica)
                           .join(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_DISK")
                           .where(File.name.in_(files))).all()
        assert dict(states) == {f: "available" for f in files}
    # hermes resends (it did not see our 200): nothing changes
    again = app_client.post("/api/v1/ddm/rucio/messages", content=body)
    assert again.json()["data"]["results"] == {"duplicate": 2, "unknown": 1, "ignored": 1}
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DDMEvent)) == 1


def test_http_plain_json_and_bad_bodies_change_nothing(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client, app_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    req_id, rule_id, name, _ = _request(db, rucio_ddm, rucio_sites, rucio_client, tmp_path, 1)
    good = rule_ok(rule_id, rucio_sites.scope, name)
    for body, status, words in (
            (b"not json at all", 400, "line 1 is not JSON"),
            (bulk(*[good] * (MAX_MESSAGES + 1)), 413, "more than 1000"),
            (json.dumps({"payload": {}}).encode(), 400, "event_type"),
            (b"\xff\xfe", 400, "UTF-8")):
        resp = app_client.post("/api/v1/ddm/rucio/messages", content=body)
        assert resp.status_code == status, resp.text
        assert words in resp.json()["message"] and resp.json()["success"] is False
        assert state(db, req_id) == "requested"
    huge = app_client.post("/api/v1/ddm/rucio/messages", content=b" " * (16 * 1024 * 1024 + 1))
    # the server's per-route limit for this route is the parser's own bound (16 MiB)
    assert huge.status_code == 413 and f"larger than {MAX_BODY_BYTES} bytes" in \
        huge.json()["message"]
    chunked = app_client.post("/api/v1/ddm/rucio/messages",  # no Content-Length to trust
                              content=iter([b" " * (1 << 20)] * 17))
    assert chunked.status_code == 413 and f"larger than {MAX_BODY_BYTES} bytes" in \
        chunked.json()["message"]
    # a bad message inside a bulk is skipped, the others are applied (else hermes' queue
    # would be stuck on it); here the good one is a rule of no request of ours
    other = rule_ok("e" * 32, rucio_sites.scope, "not-ours")
    resp = app_client.post("/api/v1/ddm/rucio/messages",
                           content=json.dumps([other, {"payload": {}}]).encode())
    assert resp.status_code == 200
    assert resp.json()["data"]["results"] == {"unknown": 1, "invalid": 1}
    assert state(db, req_id) == "requested"
    # one plain JSON object (a STOMP body posted by hand) is fine
    resp = app_client.post("/api/v1/ddm/rucio/messages",
                           json={"event_type": "datasetlock_ok", "payload": good["payload"]})
    assert resp.status_code == 200 and resp.json()["data"]["results"] == {"applied": 1}
    assert state(db, req_id) == "done"


def test_http_endpoint_refuses_when_the_ddm_is_not_rucio(db: Database, bearer) -> None:  # type: ignore[no-untyped-def]
    from dawms.ddm_bridge.local import LocalDDM

    with TestClient(create_app(db, LocalDDM())) as client:
        resp = client.post("/api/v1/ddm/rucio/messages", content=bulk(),
                           headers=bearer("ddm"))
        assert resp.status_code == 400 and "not 'rucio'" in resp.json()["message"]


def test_transfer_failed_messages_fail_the_request_after_max_tries(
        db: Database, rucio_settings: RucioSettings, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    ddm = RucioDDM(rucio_settings.model_copy(update={"max_tries": 2}))
    req_id, rule_id, name, files = _request(db, ddm, rucio_sites, rucio_client, tmp_path)

    def failed(request_id: str, reason: str) -> dict:
        return {"event_type": "transfer-failed", "payload": {
            "request-id": request_id, "scope": rucio_sites.scope, "name": files[0],
            "dataset": name, "datasetScope": rucio_sites.scope, "reason": reason,
            "dst-rse": rucio_sites.rse("SITE_B")}}

    now = datetime.now(UTC)
    with db.session() as s:
        first = parse_body(json.dumps(failed("a" * 32, "SOURCE checksum mismatch")))
        assert apply_messages(s, ddm, first, source="stomp", now=now) == {"counted": 1}
        # the same failure again (a redelivery) is not a second try
        assert apply_messages(s, ddm, first, source="stomp", now=now) == {"duplicate": 1}
    assert state(db, req_id) == "requested"
    with db.session() as s:
        second = parse_body(json.dumps(failed("b" * 32, "DESTINATION no space left")))
        assert apply_messages(s, ddm, second, source="stomp", now=now) == {"applied": 1}
    with db.session() as s:
        req = s.get(DataRequest, req_id)
        assert req.state == "failed" and req.attempts == 2
        assert req.error.startswith("ddm.transfer_failed: ") and "no space left" in req.error
        # a late rule_ok for a failed request is stale: it stays failed
        late = parse_body(json.dumps(rule_ok(rule_id, rucio_sites.scope, name)))
        assert apply_messages(s, ddm, late, source="http", now=now) == {"stale": 1}
    assert state(db, req_id) == "failed"
    with db.session() as s:  # ...and its files are not taken for arrived
        rows = s.execute(select(File.name, Replica.state).join(Replica).join(StorageEndpoint)
                         .where(StorageEndpoint.name == "SITE_B_DISK", File.name.in_(files)))
        assert dict(rows.all()) == {f: "copying" for f in files}


def test_stomp_consumer_stores_then_acks_and_survives_garbage(
        db: Database, rucio_settings: RucioSettings, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    from stomp_helpers import ensure_durable_queue, publish

    sub = f"dawms-test-{rucio_sites.tag}"
    ensure_durable_queue(sub)
    settings = rucio_settings.model_copy(update={"stomp_brokers": "127.0.0.1:61613",
                                                 "stomp_subscription": sub})
    ddm = RucioDDM(settings)
    req_id, rule_id, name, _ = _request(db, ddm, rucio_sites, rucio_client, tmp_path)
    # published while dawms is not connected: the durable subscription keeps them
    publish([{"event_type": "garbage-without-payload"},
             {"event_type": "rule_ok", "payload": {"scope": rucio_sites.scope, "name": name,
                                                   "rule_id": rule_id},
              "created_at": "2026-12-01 17:00:00"}])
    (consumer,) = [d for d in ddm.daemons() if d.name == "rucio_stomp"]
    try:
        assert consumer.run_once(db) == 1  # connected and subscribed
        wait_for(lambda: state(db, req_id) == "done", 10, "the request done by STOMP")
        assert consumer.run_once(db) == 0  # still connected: nothing to do
        stomp = ddm._stomp
        wait_for(lambda: stomp.applied >= 1, 5, "the ack")
        with db.session() as s:
            ev = s.scalar(select(DDMEvent).where(DDMEvent.source == "stomp"))
            assert ev.dedup_key == f"rucio:rule:{rule_id}:done"
    finally:
        ddm._stomp.stop()
    # everything was acked: a new consumer on the same subscription gets nothing again
    ddm2 = RucioDDM(settings)
    (again,) = [d for d in ddm2.daemons() if d.name == "rucio_stomp"]
    try:
        again.run_once(db)
        time.sleep(1.0)  # a redelivery would arrive at once; give it a moment to show
        assert ddm2._stomp.applied == 0
    finally:
        ddm2._stomp.stop()


def test_housekeeping_closes_outputs_and_deletes_rules_no_job_needs(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    from dawms.ddm_bridge.abc import FileInfo

    req_id, rule_id, name, _ = _request(db, rucio_ddm, rucio_sites, rucio_client, tmp_path, 1)
    out = unique(rucio_sites, "hk.out")
    scope, out_name = out.split(":")
    with db.session() as s:
        b = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_DISK"))
        path = Path(rucio_ddm.pfn(b, scope, f"{out_name}.1").removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"out")
        rucio_ddm.register_outputs(s, out, [FileInfo(scope, f"{out_name}.1", 3, "02a00145")], b)
        s.add(Task(name="hk", owner="t", state="running", transformation="x",
                   input_datasets=[], output_dataset=out, log_dataset="", split={},
                   resources={}, retry={}))
    assert housekeeping.run_once(db, rucio_ddm) == 0  # the task runs, the request is open
    assert rucio_client.get_did(scope, out_name)["open"] is True
    with db.session() as s:  # the task ends, the request is done; a queued job still reads it
        task_id = s.scalar(select(Task.id))
        transition_many(s, Entity.TASK, [task_id], TaskState.DONE,
                        expected=TaskState.RUNNING, actor="test")
        apply_request_outcome(s, source="test", dedup_key="t", outcome="done",
                              request_id=req_id, now=datetime.now(UTC))
        job = Job(task_id=task_id, job_index=1, state=JobState.ACTIVATED)
        s.add(job)
        s.flush()
        s.add(JobFile(job_id=job.id, type="in", scope=scope, lfn="x", dataset=out,
                      request_id=req_id))
    assert housekeeping.run_once(db, rucio_ddm) == 1  # closed the output; the rule stays
    assert rucio_client.get_did(scope, out_name)["open"] is False
    assert (rucio_client.get_replication_rule(rule_id)["expires_at"].replace(tzinfo=UTC)
            - datetime.now(UTC)).total_seconds() > 86400
    with db.session() as s:
        transition_many(s, Entity.JOB, [job.id], JobState.CLOSED,
                        expected=JobState.ACTIVATED, actor="test")
    assert housekeeping.run_once(db, rucio_ddm) == 1  # now no job needs it
    assert rucio_client.get_did(scope, out_name)["open"] is False
    expires = rucio_client.get_replication_rule(rule_id)["expires_at"]
    assert (expires.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() <= 3600  # deleted
    assert housekeeping.run_once(db, rucio_ddm) == 0  # once only
    with db.session() as s:
        assert s.scalar(select(DDMEvent.kind).where(
            DDMEvent.dedup_key == f"rucio:rule:{rule_id}:deleted")) == "rule_deleted"
