"""Killing jobs and tasks: queued jobs cancelled at once, running ones through their pilot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Task
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from factories import make_dataset

SPEC = {"name": "kill", "transformation": "true {inputs}", "input_datasets": ["k:raw"],
        "output_dataset": "k:out.{task_id}", "split": {"files_per_job": 1}}


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    make_dataset(db, ddm, "k:raw", "SITE_A_DISK", 3, tmp_path)
    with TestClient(create_app(db, ddm, SchedulerConfig())) as client:
        client.headers.update(bearer("admin", "analyst"))  # may call pilot routes too
        task_id = client.post("/api/v1/task/submit", json=SPEC).json()["data"]["task_id"]
        Scheduler(db, ddm).run_all_once()
        client.task_id = task_id  # type: ignore[attr-defined]
        yield client


def _acquire(api: TestClient) -> dict:
    return api.post("/api/v1/pilot/acquire_jobs",
                    json={"queue": "SITE_A_PROD", "pilot_id": "p"}).json()["data"]["jobs"][0]


def test_a_queued_job_is_cancelled_at_once(db: Database, api: TestClient) -> None:
    with db.session() as s:
        job_id = s.scalar(select(Job.id).order_by(Job.id))
    reply = api.post("/api/v1/job/kill", json={"job_ids": [job_id, 424242], "reason": "oops"})
    assert reply.json()["data"] == {str(job_id): "cancelled", "424242": "unknown"}
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.error_category) == ("cancelled", "killed")
        assert s.scalar(select(func.count()).select_from(Job).where(Job.retry_of == job_id)) == 0
    again = api.post("/api/v1/job/kill", json={"job_ids": [job_id]}).json()["data"]
    assert again == {str(job_id): "cancelled"}


def test_a_running_job_is_killed_through_its_pilot_and_not_retried(
        db: Database, api: TestClient) -> None:
    job = _acquire(api)
    fence = {"job_id": job["job_id"], "attempt": 1, "lease_token": job["lease_token"]}
    beat = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running"})
    assert beat.json()["data"] == {"command": None}
    kill = api.post("/api/v1/job/kill", json={"job_ids": [job["job_id"]]}).json()["data"]
    assert kill == {str(job["job_id"]): "tobekilled"}
    beat = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running"})
    assert beat.json()["data"] == {"command": "tobekilled"}
    report = api.post("/api/v1/pilot/update_job", json={
        **fence, "state": "failed", "error_category": "killed", "exit_code": -9,
        "error_diag": "killed on the server's command"})
    assert report.status_code == 200
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "cancelled"
        assert s.scalar(select(func.count()).select_from(Job)
                        .where(Job.retry_of == job["job_id"])) == 0


def test_killing_a_task_aborts_it_and_all_its_jobs(db: Database, api: TestClient) -> None:
    running = _acquire(api)
    reply = api.post("/api/v1/task/kill", json={"task_id": api.task_id}).json()  # type: ignore[attr-defined]
    jobs = reply["data"]["jobs"]
    assert sorted(jobs.values()) == ["cancelled", "cancelled", "tobekilled"]
    assert jobs[str(running["job_id"])] == "tobekilled"
    with db.session() as s:
        assert s.get(Task, api.task_id).state == "aborted"  # type: ignore[attr-defined]
    again = api.post("/api/v1/task/kill", json={"task_id": api.task_id})  # type: ignore[attr-defined]
    assert again.status_code == 400 and "already aborted" in again.json()["message"]
    assert api.post("/api/v1/task/kill", json={"task_id": 999}).status_code == 404


def test_a_killed_job_whose_pilot_vanished_is_cancelled_by_the_watcher(
        db: Database, api: TestClient) -> None:
    from datetime import UTC, datetime, timedelta

    from dawms.scheduler import watcher

    job = _acquire(api)
    api.post("/api/v1/job/kill", json={"job_ids": [job["job_id"]]})
    later = datetime.now(UTC) + timedelta(hours=3)
    assert watcher.run_once(db, SchedulerConfig(), later) == 0  # nothing failed...
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "cancelled"  # ...it was cancelled
        assert s.scalar(select(func.count()).select_from(Job)
                        .where(Job.retry_of == job["job_id"])) == 0
