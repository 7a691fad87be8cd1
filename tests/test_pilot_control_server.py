"""The server's side of pilot control: the get_command poll (fenced, cheap) and final
reports that are idempotent when a pilot re-sends them, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Replica, StateHistory
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from dawms.storage.checksum import bytes_adler32
from factories import make_dataset

pytestmark = pytest.mark.pilot
SPEC = {"name": "pc", "transformation": "true {inputs} {output}", "input_datasets": ["pc:raw"],
        "output_dataset": "pc:out.{task_id}", "split": {"files_per_job": 1},
        "retry": {"max_attempts": 3}}
POLL = "/api/v1/pilot/get_command"
UPDATE = "/api/v1/pilot/update_job"


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    make_dataset(db, ddm, "pc:raw", "SITE_A_DISK", 2, tmp_path)
    cfg = SchedulerConfig(command_poll_s=7.5)
    with TestClient(create_app(db, ddm, cfg)) as client:
        client.headers.update(bearer("admin", "pc"))
        client.post("/api/v1/task/submit", json=SPEC).raise_for_status()
        Scheduler(db, ddm).run_all_once()
        yield client


def _acquire(api: TestClient) -> tuple[dict, dict]:
    data = api.post("/api/v1/pilot/acquire_jobs",
                    json={"queue": "SITE_A_PROD", "pilot_id": "p"}).json()["data"]
    job = data["jobs"][0]
    assert data["command_poll_s"] == 7.5  # the server sets the pilot's poll interval
    return job, {"job_id": job["job_id"], "attempt": job["attempt"],
                 "lease_token": job["lease_token"]}


def test_get_command_carries_a_kill_and_is_fenced(api: TestClient) -> None:
    job, fence = _acquire(api)
    assert api.post(POLL, json=fence).json()["data"] == {"command": None}
    api.post("/api/v1/job/kill", json={"job_ids": [job["job_id"]]}).raise_for_status()
    assert api.post(POLL, json=fence).json()["data"] == {"command": "tobekilled"}
    stale = api.post(POLL, json={**fence, "lease_token": "0" * 32})
    assert stale.status_code == 409
    assert api.post(POLL, json={**fence, "attempt": 2}).status_code == 409
    assert api.post(POLL, json={**fence, "job_id": 424242}).status_code == 409
    assert api.post(POLL, json={**fence, "extra": 1}).status_code == 422
    api.post(UPDATE, json={**fence, "state": "failed", "error_category": "killed"})
    assert api.post(POLL, json=fence).status_code == 409  # ended: the pilot must stop


def test_get_command_refuses_a_job_of_another_queue(
        api: TestClient, bearer: Callable[..., dict[str, str]]) -> None:
    _, fence = _acquire(api)
    reply = api.post(POLL, json=fence, headers=bearer("pilot", "p", ["SITE_B_PROD"]))
    assert reply.status_code == 403


def _finished(fence: dict, job: dict, tmp_path: Path) -> dict:
    """A finished report whose output and log really are in storage (where the spec says)."""
    entries = []
    for kind, out in (("out", job["outputs"][0]), ("log", job["log"])):
        path = Path(out["url"].removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"bytes of " + out["lfn"].encode()
        path.write_bytes(data)
        entries.append({"lfn": out["lfn"], "type": kind, "size": len(data),
                        "adler32": bytes_adler32(data)})
    return {**fence, "state": "finished", "exit_code": 0, "metrics": {"cpu_s": 1.5},
            "outputs": entries}


def _snapshot(db: Database, job_id: int) -> tuple:
    with db.session() as s:
        job = s.get(Job, job_id)
        return (job.state, job.metrics, job.heartbeat_at, job.exit_code,
                s.scalar(select(func.count()).select_from(StateHistory)),
                s.scalar(select(func.count()).select_from(Replica)),
                s.scalar(select(func.count()).select_from(Job)))


def test_a_resent_finished_report_answers_ok_and_changes_nothing(
        db: Database, api: TestClient, tmp_path: Path) -> None:
    job, fence = _acquire(api)
    api.post(UPDATE, json={**fence, "state": "running"}).raise_for_status()
    report = _finished(fence, job, tmp_path)
    assert api.post(UPDATE, json=report).status_code == 200
    before = _snapshot(db, job["job_id"])
    assert before[0] == "finished"
    again = api.post(UPDATE, json={**report, "metrics": {"cpu_s": 99.0}})
    assert (again.status_code, again.json()["data"]) == (200, {"command": None})
    assert _snapshot(db, job["job_id"]) == before
    # a heartbeat after the end is still stale: only final reports are idempotent
    assert api.post(UPDATE, json={**fence, "state": "running"}).status_code == 409


def test_a_resent_failed_report_does_not_retry_twice(db: Database, api: TestClient) -> None:
    job, fence = _acquire(api)
    failed = {**fence, "state": "failed", "exit_code": 3, "error_category": "payload",
              "error_diag": "exit code 3"}
    assert api.post(UPDATE, json=failed).status_code == 200
    before = _snapshot(db, job["job_id"])
    assert before[0] == "failed"
    assert api.post(UPDATE, json=failed).status_code == 200
    assert _snapshot(db, job["job_id"]) == before  # no second retry job, no history


def test_a_final_report_after_someone_else_ended_the_job_is_stale(
        db: Database, api: TestClient, tmp_path: Path) -> None:
    job, fence = _acquire(api)
    api.post("/api/v1/job/kill", json={"job_ids": [job["job_id"]]}).raise_for_status()
    with db.session() as s:  # the watcher gave up on the pilot: the job ended without it
        from dawms.catalog.states import Entity, JobState
        from dawms.catalog.transition import transition
        transition(s, Entity.JOB, job["job_id"], JobState.CANCELLED, expected="sent",
                   actor="scheduler:watcher", reason="lost heartbeat after a kill")
    reply = api.post(UPDATE, json=_finished(fence, job, tmp_path))
    assert reply.status_code == 409
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "cancelled"


def test_a_pilot_near_the_end_of_its_lifetime_gets_only_jobs_that_fit(
        db: Database, api: TestClient) -> None:
    with db.session() as s:
        walltimes = set(s.scalars(select(Job.walltime_s).where(Job.state == "activated")))
    assert walltimes == {3600}

    def acquire(max_walltime_s: float) -> list[dict]:
        return api.post("/api/v1/pilot/acquire_jobs", json={
            "queue": "SITE_A_PROD", "pilot_id": "p",
            "max_walltime_s": max_walltime_s}).json()["data"]["jobs"]

    assert acquire(3599.5) == []  # 3600 s of walltime does not fit in what is left
    assert [j["walltime_s"] for j in acquire(3600)] == [3600]
    assert len(acquire(0)) == 1  # no lifetime: any job
    bad = api.post("/api/v1/pilot/acquire_jobs", json={
        "queue": "SITE_A_PROD", "pilot_id": "p", "max_walltime_s": -1})
    assert bad.status_code == 422


def test_direct_access_of_the_site_file_reaches_the_job_spec(
        db: Database, ddm: LocalDDM, tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> None:
    from dawms.catalog.site_config import sync, validate
    from factories import site_config

    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B"],
                      movers={"read": ["root", "file"], "write": ["file"], "log": ["file"]})
    cfg["queue"][0]["direct_access"] = True
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="direct")
    make_dataset(db, ddm, "pc:raw", "SITE_A_DISK", 1, tmp_path)
    with TestClient(create_app(db, ddm, SchedulerConfig())) as client:
        client.headers.update(bearer("admin", "pc"))
        client.post("/api/v1/task/submit", json=SPEC).raise_for_status()
        Scheduler(db, ddm).run_all_once()
        (job,) = client.post("/api/v1/pilot/acquire_jobs", json={
            "queue": "SITE_A_PROD", "pilot_id": "p"}).json()["data"]["jobs"]
    assert job["direct_access"] is True
    assert job["movers"] == {"read": ["root", "file"], "write": ["file"], "log": ["file"]}
