"""The carousel through the real scheduler daemons, the HTTP API and the CLI.

The scheduler (APScheduler, event wake-ups, the local DDM's tape worker on a
sped-up real clock) takes a task over a tape-only dataset from ``staging``
through jobs activating as their own files arrive to ``done``; the API and the
``dawms staging`` commands list, reprioritize and cancel, and refuse bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tape_helpers import tape_site_config

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, StagingFile, StagingRequest, Task
from dawms.catalog.transition import claim_jobs
from dawms.cli import main
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.tape import ScaledClock, TapeConfig, TapeLibrary
from dawms.scheduler import refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.scheduler.task import submit
from dawms.server.app import create_app
from factories import make_dataset, report, site_config, write_outputs

pytestmark = pytest.mark.carousel
SPEC = {"name": "reproc", "transformation": "true {inputs}", "input_datasets": ["t:raw.T"],
        "output_dataset": "t:out.{task_id}", "split": {"files_per_job": 2}}


def test_a_tape_task_goes_staging_then_jobs_activate_as_files_arrive_then_done(
        db: Database, tape_sites: dict, tmp_path: Path) -> None:
    ddm = LocalDDM(transfer_interval_s=0.2)
    # 1 s mounts and 0.25 s per file (x10 sped up), 2 drives, 4 files per cartridge
    ddm.library = TapeLibrary(TapeConfig(drives=2, mount_s=10, per_file_s=2.5, seek_s=0,
                                         read_bytes_s=None, cartridge_bytes=4 * 2048),
                              clock=ScaledClock(10))
    make_dataset(db, ddm, "t:raw.T", "T1_TAPE", 12, tmp_path)
    sched = Scheduler(db, ddm, SchedulerConfig(interval_s=0.5, heartbeat_s=60))
    sched.start()
    try:
        with db.session() as s:
            task_id = submit(s, SPEC, ddm).id
            qid = s.scalar(select(Queue.id).where(Queue.name == "T1_PROD"))
        seen: list[str] = []
        staged_at_claim: list[int] = []
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"task stuck; seen {seen}"
            with db.session() as s:
                state = s.get(Task, task_id).state
                claimed = claim_jobs(s, qid, 10, "pilot-1")
                staged = s.scalar(select(func.count()).select_from(StagingFile)
                                  .where(StagingFile.state == "staged"))
                held = s.scalar(select(func.count()).select_from(Job)
                                .where(Job.state == "throttled"))
            if not seen or seen[-1] != state:
                seen.append(state)
            for job_id, attempt, token, spec in claimed:
                staged_at_claim.append(held)
                fence = {"job_id": job_id, "attempt": attempt, "lease_token": token}
                report(db, ddm, fence, "running", None)  # type: ignore[arg-type]
                report(db, ddm, fence, "finished", None,  # type: ignore[arg-type]
                       exit_code=0, outputs=write_outputs(spec))
            if state == "done":
                break
            time.sleep(0.1)  # a pilot polling for work
        assert staged == 12
        while True:  # the task ended: the carousel lets the staged copies go
            with db.session() as s:
                if s.scalar(select(StagingRequest.released_at)) is not None:
                    break
            assert time.monotonic() < deadline, "staged copies never released"
            time.sleep(0.1)
    finally:
        sched.stop()
    assert seen[0] in ("registered", "staging") and "staging" in seen and seen[-1] == "done"
    # jobs ran while others still waited for their files
    assert len(staged_at_claim) == 6 and max(staged_at_claim) > 0
    with db.session() as s:
        assert set(s.scalars(select(StagingRequest.state))) == {"done"}
    # every file came through the tape library (the disk transfer worker left them alone)
    assert (ddm.library.stats.mounts, ddm.library.stats.reads) == (3, 12)


@pytest.fixture
def api(db: Database, tape_ddm: LocalDDM, tape_sites: dict, tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    with db.session() as s:
        submit(s, SPEC, tape_ddm)
    refiner.run_once(db, tape_ddm)
    with TestClient(create_app(db, tape_ddm, SchedulerConfig())) as client:
        client.headers.update(bearer("production", "ann"))  # staging is an operator's job
        yield client


def test_api_lists_with_progress_reprioritizes_and_cancels(api: TestClient) -> None:
    body = api.get("/api/v1/staging/list").json()
    assert body["success"] is True and len(body["data"]) == 1
    req = body["data"][0]
    assert (req["state"], req["files_total"], req["files_staged"], req["progress"],
            req["source"], req["destination"]) == ("queued", 4, 0, 0.0, "T1_TAPE", "T1_DISK")
    rid = req["id"]
    r = api.post("/api/v1/staging/priority", json={"request_ids": [rid, 77], "priority": 42})
    assert r.json()["data"] == {str(rid): "500 -> 42", "77": "unknown"}
    r = api.post("/api/v1/staging/cancel", json={"request_ids": [rid], "reason": "no"})
    assert r.json()["data"] == {str(rid): "cancelled"}
    assert api.get("/api/v1/staging/list", params={"state": "cancelled"}).json()["data"][0][
        "error"] == "no"
    assert api.get("/api/v1/staging/list", params={"state": "queued"}).json()["data"] == []


@pytest.mark.parametrize("method,path,kw", [
    ("get", "/api/v1/staging/list", {"params": {"state": "nonsense"}}),
    ("get", "/api/v1/staging/list", {"params": {"limit": 0}}),
    ("get", "/api/v1/staging/list", {"params": {"task_id": 2**70}}),
    ("post", "/api/v1/staging/cancel", {"json": {"request_ids": []}}),
    ("post", "/api/v1/staging/cancel", {"json": {"request_ids": [0]}}),
    ("post", "/api/v1/staging/cancel", {"json": {"request_ids": [1], "reason": "x" * 2001}}),
    ("post", "/api/v1/staging/priority", {"json": {"request_ids": [1], "priority": 2**31}}),
    ("post", "/api/v1/staging/priority", {"json": {"request_ids": [1]}}),
])
def test_api_refuses_bad_input_and_changes_nothing(api: TestClient, db: Database, method: str,
                                                   path: str, kw: dict) -> None:
    r = getattr(api, method)(path, **kw)
    assert r.status_code == 422 and r.json()["success"] is False and r.json()["message"]
    with db.session() as s:
        req = s.scalar(select(StagingRequest))
        assert (req.state, req.priority) == ("queued", 500)


def test_cli_staging_commands(server: str, db: Database, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch,
                              make_token: Callable[..., str]) -> None:
    import json

    monkeypatch.setenv("DAWMS_TOKEN", make_token("production", "ann"))

    from dawms.catalog.site_config import sync, validate

    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"])  # the server's
    tape = tape_site_config(tmp_path / "storage")
    cfg["site"].append({"name": "T1"})
    cfg["endpoint"] += [e for e in tape["endpoint"] if e["site"] == "T1"]
    cfg["queue"] += [q for q in tape["queue"] if q["site"] == "T1"]
    with db.session() as s:
        sync(s, validate(cfg), actor="t", source="t")
    ddm = LocalDDM()
    make_dataset(db, ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    spec = tmp_path / "task.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["--server", server, "task", "submit", str(spec)]) == 0
    deadline = time.monotonic() + 60
    while True:  # the server's refiner makes the request
        capsys.readouterr()
        assert main(["--server", server, "staging", "list", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        if rows:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    rid = rows[0]["id"]
    monkeypatch.setenv("COLUMNS", "250")  # the table, unclipped
    assert main(["--server", server, "staging", "list"]) == 0
    out = capsys.readouterr().out
    assert "T1_TAPE" in out and "t:raw.T" in out and "0/4" in out
    assert main(["--server", server, "staging", "priority", "900", str(rid)]) == 0
    assert f"staging request {rid}: 500 -> 900" in capsys.readouterr().out
    assert main(["--server", server, "staging", "cancel", str(rid), "999"]) == 1  # 999 unknown
    out = capsys.readouterr().out
    assert f"staging request {rid}: cancelled" in out and "999: unknown" in out
    assert main(["--server", server, "staging", "priority", "1", "0"]) == 1
    assert "error" in capsys.readouterr().err
