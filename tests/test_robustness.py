"""Nothing waits for ever and one bad thing stops nothing else.

Each test is a failure a review found: a request nobody can serve, a task that
cannot be split, a request that ended "done" without its file, jobs parked past
PanDA's timeouts, a ``transferring`` report, a half-registered job, a task killed
while its jobs fail, a retry that kept a rebrokerage pin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, File, Job, JobFile, Queue, StorageEndpoint, Task
from dawms.catalog.site_config import sync, validate
from dawms.catalog.states import Entity
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.events import apply_request_outcome
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner, watcher
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.generate import Piece, create_jobs
from dawms.scheduler.kill import kill_task
from dawms.scheduler.rebroker import reassign_jobs
from dawms.scheduler.retry import retry_failed
from dawms.scheduler.task import submit
from factories import claim, make_dataset, report, site_config, write_outputs

CFG = SchedulerConfig()


def _spec(name: str, did: str, **extra: object) -> dict:
    return {"name": name, "transformation": "true {inputs}", "input_datasets": [did],
            "output_dataset": f"t:{name}.{{task_id}}", "split": {"files_per_job": 1}, **extra}


def _states(db: Database) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())


def test_a_request_nobody_can_serve_fails_alone(db: Database, ddm: LocalDDM,
                                                tmp_path: Path) -> None:
    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"])
    cfg["endpoint"][1]["url"] = "davs://webdav.example.org/b"  # no fsspec backend here
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    with db.session() as s:
        files = list(s.scalars(select(File)))
        eps = {e.name: e for e in s.scalars(select(StorageEndpoint))}
        bad = ddm.request_replication(s, files[:1], eps["SITE_B_DISK"], name="bad_dis").id
        good = ddm.request_replication(s, files[1:], eps["SITE_C_DISK"], name="good_dis").id
    assert transfer.run_once(db) == 1
    with db.session() as s:
        assert s.get(DataRequest, good).state == "done"
        failed = s.get(DataRequest, bad)
        assert failed.state == "failed" and "cannot open the destination" in failed.error


def test_a_task_that_cannot_be_split_is_broken_and_the_next_one_runs(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    with db.session() as s:
        bad = submit(s, _spec("bad", "t:raw"), ddm)
        bad.split = {"gb_per_job": 1e-12}  # as if stored by an older, laxer validation
        bad.priority = 1000  # refined first
        good = submit(s, _spec("good", "t:raw"), ddm).id
        bad_id = bad.id
    assert refiner.run_once(db, ddm) == 2
    with db.session() as s:
        assert s.get(Task, bad_id).state == "broken"
        assert "must be positive" in s.get(Task, bad_id).error
        assert s.get(Task, good).state == "defined"


def test_a_done_request_without_its_file_is_asked_again(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    with db.session() as s:
        submit(s, _spec("again", "t:raw"), ddm)
        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "offline"
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    with db.session() as s:
        (first,) = s.scalars(select(DataRequest.id))
        # the DDM says done, but no byte was copied
        apply_request_outcome(s, source="http", dedup_key="lying", outcome="done",
                              request_id=first, now=datetime.now(UTC))
    assert activator.run_once(db, ddm, CFG) == 0
    with db.session() as s:
        second = s.scalar(select(DataRequest.id).where(DataRequest.id != first))
        assert s.scalar(select(JobFile.request_id).where(JobFile.type == "in")) == second
    transfer.run_once(db)
    assert activator.run_once(db, ddm, CFG, request_ids=[second]) == 1


def test_parked_jobs_time_out_like_in_panda(db: Database, ddm: LocalDDM, sites: list[str],
                                            tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 3, tmp_path)
    with db.session() as s:
        submit(s, _spec("park", "t:raw", retry={"max_attempts": 1}), ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    assert _states(db) == {"activated": 3}
    now = datetime.now(UTC)
    assert watcher.run_once(db, CFG, now + timedelta(days=1)) == 0  # activated: 2 days
    assert watcher.run_once(db, CFG, now + timedelta(days=2, seconds=1)) == 3
    with db.session() as s:
        assert {(j.state, j.error_category) for j in s.scalars(select(Job))} == \
            {("failed", "timeout")}
        assert "no pilot took it" in s.scalar(select(Job.error_diag))


def test_a_job_reported_transferring_can_still_finish_or_time_out(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    with db.session() as s:
        submit(s, _spec("xfer", "t:raw"), ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    now = datetime.now(UTC)
    (one, (f1, spec1)), (two, (f2, _)) = sorted(claim(db, now).items())
    for fence in (f1, f2):
        report(db, ddm, fence, "running", now)
        report(db, ddm, fence, "transferring", now)
    report(db, ddm, f1, "finished", now, exit_code=0, outputs=write_outputs(spec1))
    watcher.run_once(db, CFG, now + timedelta(seconds=CFG.heartbeat_timeout_s + 1))
    with db.session() as s:
        assert s.get(Job, one).state == "finished"
        assert (s.get(Job, two).state, s.get(Job, two).error_category) == \
            ("failed", "lost_heartbeat")


def test_a_job_whose_log_cannot_be_registered_registers_nothing(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    with db.session() as s:
        submit(s, _spec("half", "t:raw"), ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    now = datetime.now(UTC)
    ((job_id, (fence, spec)),) = claim(db, now).items()
    outputs = write_outputs(spec)
    Path(spec["log"]["url"].removeprefix("file://")).unlink()  # the log never arrived
    report(db, ddm, fence, "finished", now, exit_code=0, outputs=outputs)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.error_category) == ("failed", "stageout")
        assert s.scalar(select(func.count()).select_from(File)
                        .where(File.name == spec["outputs"][0]["lfn"])) == 0


def test_killing_a_task_reaches_the_attempt_its_failure_just_made(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    with db.session() as s:
        task_id = submit(s, _spec("race", "t:raw"), ddm).id
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    now = datetime.now(UTC)
    ((_, (fence, _)),) = claim(db, now).items()
    report(db, ddm, fence, "failed", now, error_category="payload")  # makes attempt 2
    with db.session() as s:
        result = kill_task(s, task_id, actor="test")
    assert sorted(result.values()) == ["cancelled"]
    # and a job of the aborted task that slipped through is closed by the broker
    with db.session() as s:
        task = s.get(Task, task_id)
        inputs = [(f, "t:raw") for f in s.scalars(select(File))]
        (straggler,) = create_jobs(s, task, [Piece(1, 3, inputs)], now=now, actor="test",
                                   reason="test")
    assert broker.run_once(db, ddm, CFG) == 0
    with db.session() as s:
        assert s.get(Job, straggler).state == "closed"
        assert s.get(Task, task_id).state == "aborted"


def test_a_retry_does_not_keep_a_rebrokerage_pin(db: Database, ddm: LocalDDM,
                                                 sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    with db.session() as s:
        submit(s, _spec("pin", "t:raw"), ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, CFG)
    with db.session() as s:
        (old,) = s.scalars(select(Job.id))
        (moved,) = reassign_jobs(s, [old], actor="test", queue="SITE_C_PROD").values()
        new_id = int(moved.removeprefix("-> "))
        assert s.get(Job, new_id).broker_hint == {"queue": "SITE_C_PROD"}
        transition_many(s, Entity.JOB, [new_id], "failed", expected="defined", actor="test")
        (retry,) = retry_failed(s, [new_id], datetime.now(UTC))
        assert s.get(Job, retry).broker_hint is None
