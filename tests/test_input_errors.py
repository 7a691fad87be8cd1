"""Bad input over HTTP is a clear 4xx envelope that stores nothing, never a 500.

On both backends: a task spec with wrong types or values no column can hold, pilot
and user bodies beyond the columns' sizes or 64 bits, integer path and query
parameters beyond 64 bits, a value the database itself refuses, and a DDM error
inside a bulk update (answered for that update only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import DataError

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, StateHistory, Task
from dawms.ddm_bridge.abc import DDMError
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from factories import make_dataset

SPEC = {"name": "bad", "transformation": "true {inputs} {output}",
        "input_datasets": ["bad:raw"], "output_dataset": "bad:out.{task_id}",
        "split": {"files_per_job": 1}}


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    make_dataset(db, ddm, "bad:raw", "SITE_A_DISK", 3, tmp_path)
    # a 500 must show up as a status here, not as an exception in the test
    with TestClient(create_app(db, ddm, SchedulerConfig()), headers=bearer("admin"),
                    raise_server_exceptions=False) as client:
        yield client


def _refused(reply, status: int, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["success"] is False and body["data"] is None, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def _counts(db: Database) -> tuple[int, int]:
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(Task)) or 0,
                s.scalar(select(func.count()).select_from(StateHistory)  # not the fixture's
                         .where(StateHistory.entity != "replica")) or 0)  # uploaded files


@pytest.mark.parametrize("change, fragment", [
    ({"resources": [1, 2]}, "resources must be a table"),
    ({"retry": [3]}, "retry must be a table"),
    ({"log_dataset": 5}, "log_dataset must be a string, not int"),
    ({"owner": ["me"]}, "owner must be a string, not list"),
    ({"share": 1}, "share must be a string, not int"),
    ({"name": "n" * 300}, "name is 300 characters; at most 255"),
    ({"share": "s" * 65}, "share is 65 characters; at most 64"),
    ({"owner": "o" * 129}, "owner is 129 characters; at most 128"),
    ({"output_dataset": "bad:" + "o" * 260}, "output_dataset is 264 characters"),
    ({"output_dataset": "bad:" + "o" * 244, "log_dataset": "bad:log"},
     "output_dataset: name is 244 characters; at most 238 so its file names fit in 250"),
    ({"log_dataset": "bad:" + "l" * 236}, "log_dataset: name is 236 characters; at most 230"),
    ({"output_dataset": "s" * 70 + ":out"}, "output_dataset: scope 'sss"),
    ({"output_dataset": "s" * 26 + ":out"}, "is longer than 25 characters"),
    ({"log_dataset": "bad:log.{task_id}." + "l" * 240}, "log_dataset is"),
    ({"priority": 2**40}, "priority must be an integer from -2147483648 to 2147483647"),
    ({"priority": True}, "priority must be an integer"),
    ({"split": {"gb_per_job": 1e-12}}, "split.gb_per_job = 1e-12 must give from 1 byte"),
    ({"split": {"gb_per_job": 1e300}}, "split.gb_per_job = 1e+300 must give"),
    ({"split": {"files_per_job": 10**7}}, "split.files_per_job must be at most 1000000"),
    ({"retry": {"max_attempts": 1000}}, "retry.max_attempts must be a positive integer of "
                                        "at most 100"),
    ({"resources": {"cores": 2**40}}, "resources.cores must be a positive integer of at most "
                                      "2147483647"),
])
def test_bad_task_spec_is_a_400_that_stores_nothing(db: Database, api: TestClient,
                                                   change: dict, fragment: str) -> None:
    before = _counts(db)
    reply = api.post("/api/v1/task/submit", json={**SPEC, **change})
    _refused(reply, 400, "invalid task spec: ", fragment)
    assert _counts(db) == before


def test_every_problem_of_a_spec_is_reported_at_once(db: Database, api: TestClient) -> None:
    reply = api.post("/api/v1/task/submit", json={
        **SPEC, "resources": [1], "retry": "3", "owner": 7, "name": "n" * 256,
        "priority": -(2**31) - 1, "split": {"gb_per_job": 1e-10, "files_per_job": 0}})
    _refused(reply, 400, "resources must be a table", "retry must be a table",
             "owner must be a string", "name is 256 characters", "priority must be",
             "split.gb_per_job", "split.files_per_job must be a positive number")
    assert _counts(db) == (0, 0)


def test_owner_longer_than_the_owner_column_is_a_400(db: Database, api: TestClient) -> None:
    reply = api.post("/api/v1/task/submit", json={**SPEC, "owner": "u" * 200})
    _refused(reply, 400, "owner is 200 characters; at most 128")
    assert _counts(db) == (0, 0)


def test_valid_spec_at_the_limits_is_accepted(db: Database, api: TestClient) -> None:
    """The bounds refuse only what cannot be stored or run (the test of the test)."""
    spec = {**SPEC, "name": "n" * 255, "priority": 2**31 - 1, "owner": "o" * 128,
            "share": "s" * 64, "output_dataset": "bad:" + "o" * 238,
            "log_dataset": "bad:" + "l" * 230,
            "split": {"gb_per_job": 1e-9}, "retry": {"max_attempts": 100},
            "resources": {"cores": 2**31 - 1}}
    reply = api.post("/api/v1/task/submit", json=spec)
    assert reply.status_code == 200, reply.text
    with db.session() as s:
        task = s.get(Task, reply.json()["data"]["task_id"])
        assert (len(task.name), task.priority, len(task.owner)) == (255, 2**31 - 1, 128)


def _activate(db: Database, ddm: LocalDDM, api: TestClient) -> None:
    assert api.post("/api/v1/task/submit", json=SPEC).status_code == 200
    Scheduler(db, ddm).run_all_once()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)
                        .where(Job.state == "activated")) == 3


def test_acquire_with_a_too_long_pilot_id_is_a_422_and_claims_nothing(
        db: Database, ddm: LocalDDM, api: TestClient) -> None:
    _activate(db, ddm, api)
    reply = api.post("/api/v1/pilot/acquire_jobs",
                     json={"queue": "SITE_A_PROD", "pilot_id": "p" * 300})
    _refused(reply, 422, "invalid request: body.pilot_id")
    with db.session() as s:
        assert set(s.scalars(select(Job.state))) == {"activated"}


def _acquired(api: TestClient, n: int = 1) -> list[dict]:
    reply = api.post("/api/v1/pilot/acquire_jobs",
                     json={"queue": "SITE_A_PROD", "pilot_id": "t", "n_jobs": n})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["jobs"]


@pytest.mark.parametrize("change, field", [
    ({"job_id": 2**63}, "body.job_id"),
    ({"attempt": 2**63}, "body.attempt"),
    ({"state": "failed", "exit_code": 2**40}, "body.exit_code"),
])
def test_update_job_beyond_the_columns_is_a_422_and_changes_nothing(
        db: Database, ddm: LocalDDM, api: TestClient, change: dict, field: str) -> None:
    _activate(db, ddm, api)
    (job,) = _acquired(api)
    _, history = _counts(db)
    reply = api.post("/api/v1/pilot/update_job", json={
        "job_id": job["job_id"], "attempt": 1, "lease_token": job["lease_token"],
        "state": "running", **change})
    _refused(reply, 422, f"invalid request: {field}")
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "sent"
    assert _counts(db)[1] == history


@pytest.mark.parametrize("method, url, body", [
    ("get", f"/api/v1/task/{2**70}", None),
    ("get", "/api/v1/job/99999999999999999999", None),
    ("get", f"/api/v1/job/{-(2**63) - 1}", None),
    ("get", f"/api/v1/job/list?task_id={2**64}", None),
    ("get", f"/api/v1/summary?task_id={2**70}", None),
    ("post", "/api/v1/job/kill", {"job_ids": [1, 2**63]}),
    ("post", "/api/v1/task/kill", {"task_id": 2**70}),
    ("post", "/api/v1/ddm/event", {"dedup_key": "k", "outcome": "done",
                                   "request_id": 2**63}),
])
def test_integers_beyond_64_bits_are_a_422_envelope(db: Database, api: TestClient, method: str,
                                                    url: str, body: dict | None) -> None:
    reply = api.request(method, url, json=body)
    _refused(reply, 422, "invalid request: ")
    assert "9223372036854775807" in reply.json()["message"]


def test_a_value_the_database_refuses_is_a_400_invalid_value(db: Database,
                                                             api: TestClient) -> None:
    """Too long for its column: PostgreSQL says so (DataError); SQLite stores anything,
    so there the same error is raised by hand to prove the mapping."""

    @api.app.post("/api/v1/test/too_long")
    def too_long() -> None:
        with db.session() as s:
            if db.url.startswith("sqlite"):
                raise DataError("UPDATE queue ...", {}, Exception(
                    "value too long for type character varying(16)\nCONTEXT: ..."))
            s.execute(update(Queue).values(status="x" * 40))

    reply = api.post("/api/v1/test/too_long")
    _refused(reply, 400)
    assert reply.json()["message"] == \
        "invalid value: value too long for type character varying(16)"
    with db.session() as s:
        assert set(s.scalars(select(Queue.status))) == {"online"}


class UnreachableDDM(LocalDDM):
    """A DDM that cannot be reached when outputs are registered (Rucio down)."""

    def register_outputs(self, session, did, files, endpoint):  # type: ignore[no-untyped-def]
        raise DDMError("the DDM at https://rucio.example is unreachable")


def test_a_ddm_error_in_a_bulk_update_is_answered_for_that_update_only(
        db: Database, ddm: LocalDDM, api: TestClient) -> None:
    _activate(db, ddm, api)
    with TestClient(create_app(db, UnreachableDDM(), SchedulerConfig()),
                    headers={"Authorization": api.headers["Authorization"]},
                    raise_server_exceptions=False) as pilot_api:
        bad, good = _acquired(pilot_api, 2)
        outputs = [{"lfn": f["lfn"], "type": t, "size": 1, "adler32": "00000001"}
                   for f, t in [*((o, "out") for o in bad["outputs"]), (bad["log"], "log")]]
        reply = pilot_api.post("/api/v1/pilot/update_jobs_bulk", json={"updates": [
            {"job_id": bad["job_id"], "attempt": 1, "lease_token": bad["lease_token"],
             "state": "finished", "exit_code": 0, "outputs": outputs},
            {"job_id": good["job_id"], "attempt": 1, "lease_token": good["lease_token"],
             "state": "running"}]})
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["data"]
    assert first == {"job_id": bad["job_id"], "success": False, "stale": False,
                     "command": None,
                     "message": "the DDM at https://rucio.example is unreachable"}
    assert second == {"job_id": good["job_id"], "success": True, "command": None,
                      "message": "", "stale": False}  # every result is a wire.BulkResult
    with db.session() as s:  # the refused report changed nothing; the other one applied
        assert s.get(Job, bad["job_id"]).state == "sent"
        assert s.get(Job, good["job_id"]).state == "running"
