"""Rebrokerage: queued jobs move to another queue; their data follows them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Job, Queue, StateHistory
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.finisher import task_outcome
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from factories import make_dataset

SPEC = {"name": "rb", "transformation": "true {inputs}", "input_datasets": ["rb:raw"],
        "output_dataset": "rb:out.{task_id}", "split": {"files_per_job": 2}}


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    make_dataset(db, ddm, "rb:raw", "SITE_A_DISK", 6, tmp_path)
    with TestClient(create_app(db, ddm, SchedulerConfig())) as client:
        client.headers.update(bearer("admin", "analyst"))  # may call pilot routes too
        client.post("/api/v1/task/submit", json=SPEC).raise_for_status()
        client.scheduler = Scheduler(db, ddm)  # type: ignore[attr-defined]  # one lease holder
        client.scheduler.run_all_once()  # type: ignore[attr-defined]
        yield client


def _jobs(db: Database) -> list[tuple[int, int, str, str | None, int | None]]:
    with db.session() as s:
        return [(j.id, j.attempt, j.state, q, j.retry_of) for j, q in s.execute(
            select(Job, Queue.name).outerjoin(Queue, Queue.id == Job.queue_id).order_by(Job.id))]


def test_reassigned_jobs_leave_their_queue_and_their_data_follows(
        db: Database, ddm: LocalDDM, api: TestClient) -> None:
    before = _jobs(db)
    assert {(st, q) for _, _, st, q, _ in before} == {("activated", "SITE_A_PROD")}
    moved = api.post("/api/v1/job/reassign", json={"job_ids": [before[0][0]]}).json()["data"]
    (new_id,) = [int(v.removeprefix("-> ")) for v in moved.values()]
    api.scheduler.run_all_once()  # type: ignore[attr-defined]  # broker, transfer, activate
    rows = {r[0]: r for r in _jobs(db)}
    assert rows[before[0][0]][2] == "closed"
    _, attempt, state, queue, retry_of = rows[new_id]
    assert (attempt, retry_of, state) == (1, before[0][0], "activated")  # a move costs no retry
    assert queue in ("SITE_B_PROD", "SITE_C_PROD")
    with db.session() as s:
        assert s.scalar(select(DataRequest.state)) == "done"  # its inputs were copied there
        reason = s.scalar(select(StateHistory.reason).where(
            StateHistory.entity_id == before[0][0], StateHistory.to_state == "closed"))
        assert reason == "rebrokered"
    assert task_outcome({1: ["closed", "finished"]}) == "done"


def test_reassign_to_a_named_queue_and_only_queued_jobs(db: Database, ddm: LocalDDM,
                                                        api: TestClient) -> None:
    taken = api.post("/api/v1/pilot/acquire_jobs",
                     json={"queue": "SITE_A_PROD", "pilot_id": "p"}).json()["data"]["jobs"][0]
    task_id = api.get("/api/v1/task/list").json()["data"][0]["id"]
    result = api.post("/api/v1/task/reassign",
                      json={"task_id": task_id, "queue": "SITE_C_PROD"}).json()["data"]
    assert str(taken["job_id"]) not in result  # sent: a pilot holds it, it stays
    assert len(result) == 2 and all(v.startswith("-> ") for v in result.values())
    api.scheduler.run_all_once()  # type: ignore[attr-defined]
    placed = {(st, q) for _, _, st, q, _ in _jobs(db)}
    assert placed == {("closed", "SITE_A_PROD"), ("sent", "SITE_A_PROD"),
                      ("activated", "SITE_C_PROD")}
    again = api.post("/api/v1/job/reassign", json={"job_ids": [taken["job_id"], 9999]})
    assert again.json()["data"] == {str(taken["job_id"]): "not queued (sent)", "9999": "unknown"}


def test_unknown_queue_or_task_is_a_404(api: TestClient) -> None:
    reply = api.post("/api/v1/job/reassign", json={"job_ids": [1], "queue": "NOPE"})
    assert reply.status_code == 404 and "no queue named 'NOPE'" in reply.json()["message"]
    assert api.post("/api/v1/task/reassign", json={"task_id": 777}).status_code == 404


def test_a_job_sent_nowhere_else_waits(db: Database, ddm: LocalDDM, api: TestClient) -> None:
    with db.session() as s:
        for q in s.scalars(select(Queue).where(Queue.name != "SITE_A_PROD")):
            q.status = "offline"
    first = _jobs(db)[0][0]
    api.post("/api/v1/job/reassign", json={"job_ids": [first]}).raise_for_status()
    api.scheduler.run_all_once()  # type: ignore[attr-defined]
    new = [r for r in _jobs(db) if r[4] == first][0]
    assert new[2] == "waiting"  # excluded from SITE_A, every other queue offline
    with db.session() as s:
        reason = s.scalar(select(StateHistory.reason).where(
            StateHistory.entity_id == new[0], StateHistory.to_state == "waiting"))
    assert "SITE_A_PROD: excluded by rebrokerage" in reason
