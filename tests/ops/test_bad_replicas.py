"""Bad replicas: a real pilot reports a damaged copy, the server marks it bad and mends it.

A corrupt copy (same size, other bytes) at the site a job runs at is caught by the
pilot's adler32 check; the pilot reads the next copy, finishes, and its report
names the bad one. The server marks it ``bad`` through ``transition()``, the local
DDM copies the file again from the intact copy (the bytes on disk are right
again), and no dispatch lists the bad copy meanwhile. A file whose only copy is
corrupt fails its job at once as ``bad_data``, with no retry burning attempts on
the same bytes. A report can only name replicas its job's spec offered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ops_helpers import (
    corrupt,
    endpoint,
    replica_path,
    replica_state,
    run_pilot_once,
    task_spec,
)
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import File, Job, Replica, StateHistory
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.transfer import run_once as transfer_once
from dawms.pilot.job import Outcome
from dawms.scheduler.runner import Scheduler
from dawms.storage.checksum import url_checksum
from factories import make_dataset

pytestmark = pytest.mark.ops


def _submit(api: TestClient, did: str) -> int:
    reply = api.post("/api/v1/task/submit", json=task_spec(did))
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["task_id"]


def _jobs(db: Database, task_id: int) -> list[Job]:
    with db.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.task_id == task_id).order_by(Job.id)))
        s.expunge_all()
        return jobs


def test_a_corrupt_copy_is_reported_marked_bad_and_repaired(
        db: Database, ddm: LocalDDM, api: TestClient, world: Path, tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "ops:raw.A", "SITE_A_DISK", 1, tmp_path, seed=3)
    with db.session() as s:  # an intact second copy at SITE_B
        ddm.upload(s, "ops:raw.A", paths, endpoint(db, "SITE_B_DISK"))
    name = paths[0].name
    corrupt(replica_path(db, "ops", name, "SITE_A_DISK"))
    task_id = _submit(api, "ops:raw.A")
    Scheduler(db, ddm).run_all_once()

    result = run_pilot_once(api, tmp_path / "work")
    assert result is not None and result.outcome == Outcome.FINISHED, result
    # the payload read the intact bytes (the output is the input's bytes)
    (job,) = _jobs(db, task_id)
    assert job.state == "finished"
    # the copy at SITE_A is bad (through transition(): a history row says who), and a
    # repair from SITE_B is under way: bad -> copying
    with db.session() as s:
        rid = s.scalar(select(Replica.id).join(File, File.id == Replica.file_id)
                       .where(File.name == name, Replica.endpoint_id ==
                              endpoint(db, "SITE_A_DISK").id))
        hist = [(h.from_state, h.to_state, h.actor) for h in s.scalars(
            select(StateHistory).where(StateHistory.entity == "replica",
                                       StateHistory.entity_id == rid).order_by(StateHistory.id))]
    assert ("available", "bad", "pilot:ops-pilot") in hist, hist
    assert hist[-1][:2] == ("bad", "copying"), hist
    transfer_once(db)
    assert replica_state(db, name, "SITE_A_DISK") == "available"
    with db.session() as s:
        f = s.scalar(select(File).where(File.name == name))
        want = (f.size, f.adler32)
    assert url_checksum(replica_path(db, "ops", name, "SITE_A_DISK").as_uri()) == want


def test_a_file_whose_only_copy_is_corrupt_fails_at_once_without_retry(
        db: Database, ddm: LocalDDM, api: TestClient, world: Path, tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "ops:raw.B", "SITE_A_DISK", 2, tmp_path, seed=4)
    corrupt(replica_path(db, "ops", paths[0].name, "SITE_A_DISK"))
    task_id = _submit(api, "ops:raw.B")
    Scheduler(db, ddm).run_all_once()
    outcomes = [run_pilot_once(api, tmp_path / "work") for _ in range(2)]
    assert sorted(o.outcome for o in outcomes if o) == [Outcome.FAILED, Outcome.FINISHED]
    Scheduler(db, ddm).run_all_once()
    jobs = _jobs(db, task_id)
    failed = [j for j in jobs if j.state == "failed"]
    assert len(jobs) == 2, "a job whose only copy is bad must not be retried"
    assert [(j.error_category, j.attempt) for j in failed] == [("bad_data", 1)]
    assert f"no good replica left of {paths[0].name}" in failed[0].error_diag
    assert replica_state(db, paths[0].name, "SITE_A_DISK") == "bad"
    assert replica_state(db, paths[1].name, "SITE_A_DISK") == "available"
    assert run_pilot_once(api, tmp_path / "work") is None  # nothing left to dispatch


def test_an_activated_job_is_respecced_off_a_bad_copy_or_failed_when_none_is_left(
        db: Database, ddm: LocalDDM, api: TestClient, world: Path, tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "ops:raw.C", "SITE_A_DISK", 2, tmp_path, seed=5)
    with db.session() as s:  # file 0 also at SITE_B; file 1 only at SITE_A
        ddm.upload(s, "ops:raw.C", paths[:1], endpoint(db, "SITE_B_DISK"))
    task_id = _submit(api, "ops:raw.C")
    Scheduler(db, ddm).run_all_once()
    before = {j.spec["inputs"][0]["lfn"]: j for j in _jobs(db, task_id)}
    assert all(j.state == "activated" for j in before.values())
    assert len(before[paths[0].name].spec["inputs"][0]["urls"]) == 2
    for p in paths:  # the operator declares both SITE_A copies bad
        reply = api.post("/api/v1/replica/declare_bad", json={
            "replicas": [{"did": f"ops:{p.name}", "endpoint": "SITE_A_DISK"}],
            "reason": "tape incident 42"})
        assert reply.status_code == 200, reply.text
    after = {j.spec["inputs"][0]["lfn"]: j for j in _jobs(db, task_id) if j.attempt == 1}
    urls = after[paths[0].name].spec["inputs"][0]["urls"]
    assert after[paths[0].name].state == "activated"
    assert len(urls) == 1 and "SITE_B" in urls[0], urls
    assert (after[paths[1].name].state, after[paths[1].name].error_category) == \
        ("failed", "bad_data")
    # what a pilot is handed never lists a bad copy
    acquired = api.post("/api/v1/pilot/acquire_jobs",
                        json={"queue": "SITE_A_PROD", "pilot_id": "p", "n_jobs": 10})
    handed = acquired.json()["data"]["jobs"]
    assert [j["inputs"][0]["urls"] for j in handed] == [urls]


def test_a_report_names_only_replicas_its_spec_offered(
        db: Database, ddm: LocalDDM, api: TestClient, world: Path, tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "ops:raw.D", "SITE_A_DISK", 2, tmp_path, seed=6)
    _submit(api, "ops:raw.D")
    Scheduler(db, ddm).run_all_once()
    jobs = api.post("/api/v1/pilot/acquire_jobs",
                    json={"queue": "SITE_A_PROD", "pilot_id": "p", "n_jobs": 1}
                    ).json()["data"]["jobs"]
    job = jobs[0]
    mine = job["inputs"][0]
    other = next(p for p in paths if p.name != mine["lfn"])
    other_url = mine["urls"][0].replace(mine["lfn"], other.name)
    fence = {k: job[k] for k in ("job_id", "attempt", "lease_token")}
    src = next(p for p in paths if p.name == mine["lfn"])
    with db.session() as s:  # a copy made after the spec was built: not offered to the job
        ddm.upload(s, "ops:raw.D", [src], endpoint(db, "SITE_B_DISK"))
    late_url = replica_path(db, "ops", mine["lfn"], "SITE_B_DISK").as_uri()
    bad = [  # another job's file, URLs not offered, and an outage: none may be marked
        {"lfn": other.name, "url": other_url, "reason": "checksum"},
        {"lfn": mine["lfn"], "url": mine["urls"][0] + ".x", "reason": "size"},
        {"lfn": mine["lfn"], "url": late_url, "reason": "checksum"},
        {"lfn": mine["lfn"], "url": mine["urls"][0], "reason": "unreadable",
         "detail": "connection refused"},
    ]
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running",
                                                        "bad_replicas": bad})
    assert reply.status_code == 200, reply.text
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StateHistory).where(
            StateHistory.entity == "replica", StateHistory.to_state == "bad")) == 0
    assert replica_state(db, mine["lfn"], "SITE_A_DISK") == "available"
    # the same copy reported as damaged is marked; a malformed entry is refused whole
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running",
                                                        "bad_replicas": [{**bad[3],
                                                                          "reason": "evil"}]})
    assert reply.status_code == 422
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running",
                                                        "bad_replicas": [{**bad[3],
                                                                          "reason": "size"}]})
    assert reply.status_code == 200, reply.text
    # marked bad, and at once being repaired from the copy SITE_B now holds
    assert replica_state(db, mine["lfn"], "SITE_A_DISK") == "copying"
    assert replica_state(db, mine["lfn"], "SITE_B_DISK") == "available"


def test_the_pilot_classifies_what_it_gives_up(tmp_path: Path) -> None:
    from dawms.pilot.stagein import StageInError, stage_in_file
    from dawms.storage.checksum import bytes_adler32
    from dawms.wire import InputFile

    store = tmp_path / "store"
    store.mkdir()
    data = b"x" * 1000
    (store / "good").write_bytes(data)
    (store / "flipped").write_bytes(b"y" * 1000)
    (store / "short").write_bytes(b"x" * 10)
    shutil.copy(store / "good", store / "good2")
    urls = [(store / n).as_uri() for n in ("missing", "flipped", "short", "good")]
    item = InputFile(scope="s", lfn="in.1", size=len(data), adler32=bytes_adler32(data),
                     urls=urls)
    staged = stage_in_file(item, tmp_path / "w1", ["file"], allowed=[store.as_uri()])
    assert [(b.url, b.reason) for b in staged.skipped] == [
        (urls[0], "missing"), (urls[1], "checksum"), (urls[2], "size")]
    with pytest.raises(StageInError) as err:
        stage_in_file(InputFile(scope="s", lfn="in.1", size=len(data),
                                adler32=bytes_adler32(data), urls=urls[:2]),
                      tmp_path / "w2", ["file"], allowed=[store.as_uri()])
    assert [b.reason for b in err.value.bad] == ["missing", "checksum"]
