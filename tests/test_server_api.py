"""The HTTP API's contract: envelopes, clear errors, fencing, idempotent callbacks.

Runs the FastAPI app in-process (no scheduler threads: each test drives the
daemons itself) over a real catalog on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Job, StateHistory, Task
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from factories import make_dataset

SPEC = {"name": "api", "transformation": "true {inputs} {output}",
        "input_datasets": ["api:raw"], "output_dataset": "api:out.{task_id}",
        "split": {"files_per_job": 1}}


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    """The API as an admin (the role matrix in tests/auth covers every other role)."""
    make_dataset(db, ddm, "api:raw", "SITE_A_DISK", 3, tmp_path)
    with TestClient(create_app(db, ddm, SchedulerConfig()), headers=bearer("admin")) as client:
        yield client


def _activate(db: Database, ddm: LocalDDM, api: TestClient) -> int:
    task_id = api.post("/api/v1/task/submit", json=SPEC).json()["data"]["task_id"]
    Scheduler(db, ddm).run_all_once()
    return task_id


def _acquire(api: TestClient, queue: str = "SITE_A_PROD") -> dict:
    reply = api.post("/api/v1/pilot/acquire_jobs", json={"queue": queue, "pilot_id": "t"})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def test_acquire_hands_out_prepared_jobs_with_a_lease(db: Database, ddm: LocalDDM,
                                                       api: TestClient) -> None:
    _activate(db, ddm, api)
    data = _acquire(api)
    (job,) = data["jobs"]
    assert job["attempt"] == 1 and len(job["lease_token"]) == 32
    assert job["inputs"][0]["urls"][0].startswith("file://")
    assert job["inputs"][0]["adler32"] and job["inputs"][0]["size"] == 2048
    assert job["outputs"][0]["url"].endswith(job["outputs"][0]["lfn"])
    assert job["log"]["lfn"].endswith(".log.tgz")
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "sent"


def test_unknown_queue_is_a_clear_404(api: TestClient) -> None:
    reply = api.post("/api/v1/pilot/acquire_jobs", json={"queue": "NOPE", "pilot_id": "t"})
    assert reply.status_code == 404
    assert reply.json() == {"success": False, "code": "not_found",
                            "message": "no queue named 'NOPE'", "data": None}


def test_empty_queue_says_nothing_pending(api: TestClient) -> None:
    assert _acquire(api, "SITE_C_PROD") == {"jobs": [], "pending": 0,
                                            "command_poll_s": SchedulerConfig().command_poll_s}


@pytest.mark.parametrize("change", [{"attempt": 2}, {"lease_token": "0" * 32},
                                    {"job_id": 999999}])
def test_stale_reports_get_409_and_change_nothing(db: Database, ddm: LocalDDM, api: TestClient,
                                                  change: dict) -> None:
    _activate(db, ddm, api)
    job = _acquire(api)["jobs"][0]
    fence = {"job_id": job["job_id"], "attempt": 1, "lease_token": job["lease_token"]}
    with db.session() as s:
        before = s.scalar(select(func.count()).select_from(StateHistory))
    reply = api.post("/api/v1/pilot/update_job", json={**fence, **change, "state": "running"})
    assert reply.status_code == 409
    assert reply.json()["success"] is False and "not current" in reply.json()["message"] \
        or "does not exist" in reply.json()["message"]
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "sent"
        assert s.scalar(select(func.count()).select_from(StateHistory)) == before
    ok = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running"})
    assert ok.status_code == 200 and ok.json()["data"] == {"command": None}


def test_pilot_may_not_report_server_states(db: Database, ddm: LocalDDM, api: TestClient) -> None:
    _activate(db, ddm, api)
    job = _acquire(api)["jobs"][0]
    reply = api.post("/api/v1/pilot/update_job", json={
        "job_id": job["job_id"], "attempt": 1, "lease_token": job["lease_token"],
        "state": "activated"})
    assert reply.status_code == 422, reply.text  # refused by the body's schema (wire.JobReport)
    assert "body.state" in reply.json()["message"] and "running" in reply.json()["message"]


def test_finished_without_outputs_fails_as_stageout(db: Database, ddm: LocalDDM,
                                                    api: TestClient) -> None:
    _activate(db, ddm, api)
    job = _acquire(api)["jobs"][0]
    fence = {"job_id": job["job_id"], "attempt": 1, "lease_token": job["lease_token"]}
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "finished",
                                                       "exit_code": 0, "outputs": []})
    assert reply.status_code == 200
    with db.session() as s:
        old = s.get(Job, job["job_id"])
        assert (old.state, old.error_category) == ("failed", "stageout")
        assert "did not report output" in old.error_diag
        retry = s.scalar(select(Job).where(Job.retry_of == old.id))
        assert (retry.attempt, retry.state) == (2, "defined")


def test_bulk_updates_apply_each_on_its_own(db: Database, ddm: LocalDDM, api: TestClient) -> None:
    _activate(db, ddm, api)
    jobs = api.post("/api/v1/pilot/acquire_jobs",
                    json={"queue": "SITE_A_PROD", "pilot_id": "t", "n_jobs": 3}).json()["data"]
    assert len(jobs["jobs"]) == 3
    updates = [{"job_id": j["job_id"], "attempt": 1, "lease_token": j["lease_token"],
                "state": "running"} for j in jobs["jobs"]]
    updates[1]["lease_token"] = "f" * 32
    data = api.post("/api/v1/pilot/update_jobs_bulk", json={"updates": updates}).json()["data"]
    assert [d["success"] for d in data] == [True, False, True]
    assert data[1]["stale"] is True


@pytest.mark.parametrize("spec, message", [
    ({**SPEC, "input_datasets": ["api:missing"]}, "api:missing is not known"),
    ({**SPEC, "split": {"files_per_job": 0}}, "split.files_per_job must be a positive"),
    ({**SPEC, "transformation": "run {nonsense}"}, "unknown placeholders ['nonsense']"),
    ({"name": "x"}, "transformation is required"),
    ({**SPEC, "resources": {"cores": "many"}}, "resources.cores must be a positive integer"),
])
def test_invalid_task_specs_are_refused_with_every_reason(db: Database, api: TestClient,
                                                           spec: dict, message: str) -> None:
    reply = api.post("/api/v1/task/submit", json=spec)
    assert reply.status_code == 400
    assert message in reply.json()["message"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 0


def test_malformed_bodies_get_the_envelope(api: TestClient) -> None:
    reply = api.post("/api/v1/pilot/update_job", json={"job_id": "x"})
    assert reply.status_code == 422
    body = reply.json()
    assert body["success"] is False and "invalid request" in body["message"]


def test_ddm_callbacks_are_idempotent(db: Database, ddm: LocalDDM, api: TestClient,
                                      tmp_path: Path) -> None:
    make_dataset(db, ddm, "api:far", "SITE_B_DISK", 1, tmp_path, seed=9)
    with db.session() as s:
        from dawms.catalog.models import File, StorageEndpoint

        f = s.scalar(select(File).where(File.scope == "api", File.name.like("far%")))
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_C_DISK"))
        ext = ddm.request_replication(s, [f], ep, name="cb_dis1").external_id
    event = {"source": "http", "dedup_key": "rule-ok-1", "outcome": "done", "external_id": ext}
    results = [api.post("/api/v1/ddm/event", json=event).json()["data"]["result"]
               for _ in range(2)]
    assert results == ["applied", "duplicate"]
    late = api.post("/api/v1/ddm/event", json={**event, "dedup_key": "late", "outcome": "failed"})
    assert late.json()["data"]["result"] == "stale"
    with db.session() as s:
        assert s.scalar(select(DataRequest.state).where(DataRequest.external_id == ext)) == "done"
    unknown = api.post("/api/v1/ddm/event", json={**event, "external_id": "nope"})
    assert unknown.status_code == 404


def test_openapi_document_lists_the_protocol(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/pilot/acquire_jobs", "/api/v1/pilot/update_job",
              "/api/v1/pilot/update_jobs_bulk", "/api/v1/task/submit", "/api/v1/job/{job_id}",
              "/api/v1/ddm/event"):
        assert p in paths
