"""The carousel over a real catalog (SQLite and PostgreSQL) and the emulated tape.

Detection at refinement, release within the tape's limit, jobs going on as their
own files arrive while the rest wait, retries with backoff then lost, cancel,
priority, pins released when the task is done, and bad input refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tape_helpers import tape_site_config

from dawms import carousel
from dawms.carousel.config import CarouselConfig, TapeLimits
from dawms.carousel.daemon import in_flight
from dawms.carousel.manage import cancel_requests, list_requests, set_priority
from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    File,
    Job,
    Queue,
    Replica,
    StagingFile,
    StagingRequest,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.site_config import sync, validate
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.staging import run_tape
from dawms.ddm_bridge.local.tape import SimClock
from dawms.scheduler import broker, finisher, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.kill import kill_task
from dawms.scheduler.task import submit
from dawms.storage.paths import lfn2pfn
from factories import make_dataset, report, write_outputs

pytestmark = pytest.mark.carousel
T0 = datetime(2030, 1, 1, tzinfo=UTC)
SPEC = {"name": "reproc", "transformation": "true {inputs}", "input_datasets": ["t:raw.T"],
        "output_dataset": "t:out.{task_id}", "split": {"files_per_job": 2}}


def states(db: Database, model) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return dict(s.execute(select(model.state, func.count()).group_by(model.state)).all())


def cycle(db: Database, ddm: LocalDDM, clock: SimClock,
          cfg: CarouselConfig | None = None) -> carousel.daemon.RunReport:
    now = T0 + timedelta(seconds=clock.now())
    run_tape(db, ddm, now)
    rep = carousel.run_once(db, ddm, now, cfg)
    run_tape(db, ddm, now)
    return rep


def test_tape_only_inputs_become_staging_requests_and_hold_their_jobs(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 6, tmp_path)
    make_dataset(db, tape_ddm, "t:raw.D", "SITE_A_DISK", 4, tmp_path, seed=1)
    with db.session() as s:
        task_id = submit(s, {**SPEC, "input_datasets": ["t:raw.T", "t:raw.D"]}, tape_ddm).id
    assert refiner.run_once(db, tape_ddm) == 5
    with db.session() as s:
        task = s.get(Task, task_id)
        reqs = list(s.scalars(select(StagingRequest)))
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_TAPE"))
        buf = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_DISK"))
        hist = [(h.from_state, h.to_state) for h in s.scalars(
            select(StateHistory).where(StateHistory.entity == "task"))]
        assert s.scalar(select(func.count()).select_from(StagingFile)) == 6
    assert task.state == "staging" and hist[-2:] == [("registered", "defined"),
                                                     ("defined", "staging")]
    assert [(r.dataset, r.source_id, r.destination_id, r.state, r.files_total, r.bytes_total,
             r.share, r.priority) for r in reqs] == \
        [("t:raw.T", tape.id, buf.id, "queued", 6, 6 * 2048, "production", 500)]
    # the jobs of the tape files wait for the carousel, the disk ones go on
    assert states(db, Job) == {"throttled": 3, "defined": 2}
    assert broker.run_once(db, tape_ddm, SchedulerConfig()) == 2


def test_a_tape_with_no_buffer_breaks_the_task_and_writes_nothing(
        db: Database, tape_ddm: LocalDDM, tmp_path: Path) -> None:
    cfg = tape_site_config(tmp_path / "storage")
    del cfg["endpoint"][-1]["staging_buffer"]
    cfg["endpoint"] = [e for e in cfg["endpoint"] if e["name"] != "T1_DISK"]
    cfg["queue"] = [q for q in cfg["queue"] if q["site"] != "T1"]
    with db.session() as s:
        sync(s, validate(cfg), actor="t", source="t")
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 2, tmp_path)
    with db.session() as s:
        task_id = submit(s, SPEC, tape_ddm).id
    assert refiner.run_once(db, tape_ddm) == 0
    with db.session() as s:
        task = s.get(Task, task_id)
        assert task.state == "broken" and "no disk buffer" in task.error
        assert s.scalar(select(func.count()).select_from(StagingRequest)) == 0
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_staging_stays_within_the_limit_and_jobs_go_on_as_their_files_arrive(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 12, tmp_path)
    with db.session() as s:
        task_id = submit(s, SPEC, tape_ddm).id
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_TAPE"))
        limit, tape_id = TapeLimits.of(tape).staging_files, tape.id
    refiner.run_once(db, tape_ddm)
    assert limit == 4  # 8 files x 50 %
    seen_partial = False
    for _ in range(100):
        cycle(db, tape_ddm, clock)
        with db.session() as s:
            n, _b = in_flight(s, tape_id)
            assert n <= limit and tape_ddm.library.pending() <= limit
            task_state = s.get(Task, task_id).state
        jobs = states(db, Job)
        if jobs.get("throttled") and jobs.get("defined"):
            seen_partial = True  # some jobs went on while the others still waited
            # ... and exactly those whose two inputs are on the buffer
            with db.session() as s:
                for job in s.scalars(select(Job).where(Job.state == "defined")):
                    files = [f.file_id for f in job.files if f.type == "in"]
                    assert s.scalar(select(func.count()).select_from(Replica).where(
                        Replica.file_id.in_(files), Replica.state == "available",
                        Replica.endpoint_id != tape_id)) == 2
        broker.run_once(db, tape_ddm, SchedulerConfig())
        if task_state != "staging":
            break
        clock.set(max(clock.now() + 1, tape_ddm.library.next_event() or 0))
    assert seen_partial and task_state == "ready"
    assert states(db, StagingRequest) == {"done": 1}
    assert states(db, StagingFile) == {"staged": 12}
    assert states(db, Job) == {"activated": 6}
    with db.session() as s:
        assert {j.spec["queue"] for j in s.scalars(select(Job))} == {"T1_PROD"}  # to the data
        req = s.scalar(select(StagingRequest))
        assert (req.files_staged, req.bytes_staged, req.files_lost) == (12, 12 * 2048, 0)
        assert req.pinned_until > T0 + timedelta(days=29)
        assert s.scalar(select(func.count()).select_from(DataRequest).where(
            DataRequest.kind == "stage", DataRequest.activity == "Staging")) >= 3
    # 3 cartridges of 4 files: each mounted once
    assert tape_ddm.library.stats.mounts == 3


def test_a_failed_recall_is_retried_with_backoff_then_lost_and_the_task_told(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    flaky, bad = "raw.T._000001", "raw.T._000002"
    tries: dict[str, int] = {}

    def fail(key: tuple[int, int]) -> str | None:
        with db.session() as s:
            name = s.get(File, key[1]).name
        tries[name] = tries.get(name, 0) + 1
        if name == bad or (name == flaky and tries[name] == 1):
            return "medium error"
        return None

    tape_ddm.library.fail = fail
    cfg = CarouselConfig(max_attempts=3, backoff_s=100)
    with db.session() as s:
        task_id = submit(s, {**SPEC, "split": {"files_per_job": 1}}, tape_ddm).id
    refiner.run_once(db, tape_ddm)
    retry_at = []
    for _ in range(200):
        rep = cycle(db, tape_ddm, clock, cfg)
        if rep.retried:
            now = T0 + timedelta(seconds=clock.now())
            with db.session() as s:
                retry_at += [(a, (t - now).total_seconds()) for a, t in s.execute(
                    select(StagingFile.attempts, StagingFile.next_try_at).where(
                        StagingFile.state == "queued", StagingFile.attempts > 0,
                        StagingFile.next_try_at > now))]
        with db.session() as s:
            if s.get(Task, task_id).state != "staging":
                break
        clock.set(min(t for t in (tape_ddm.library.next_event(), clock.now() + 50)
                      if t is not None) + 1e-6)
    assert tries[bad] == 3 and tries[flaky] == 2 and tries["raw.T._000000"] == 1
    # the backoff doubles: 100 s after the first failed recall, 200 s after the second
    assert sorted(retry_at) == [(1, 100.0), (1, 100.0), (2, 200.0)]
    with db.session() as s:
        task = s.get(Task, task_id)
        assert task.state == "ready" and f"t:{bad}" in task.error and "lost on tape" in task.error
        req = s.scalar(select(StagingRequest))
        assert (req.state, req.files_staged, req.files_lost) == ("failed", 3, 1)
        lost = s.scalar(select(StagingFile).where(StagingFile.state == "lost"))
        assert lost.attempts == 3 and "medium error" in lost.error
        closed = list(s.scalars(select(Job).where(Job.state == "closed")))
        assert len(closed) == 1 and closed[0].error_category == "staging"
        assert bad in closed[0].error_diag
    assert states(db, Job) == {"closed": 1, "defined": 3}


def test_cancel_and_priority_answer_per_id_and_cancel_withdraws_the_recalls(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 8, tmp_path)
    with db.session() as s:
        task_id = submit(s, SPEC, tape_ddm).id
    refiner.run_once(db, tape_ddm)
    cycle(db, tape_ddm, clock)
    with db.session() as s:
        rid = s.scalar(select(StagingRequest.id))
        assert set_priority(s, [rid, 999], 900) == {rid: "500 -> 900", 999: "unknown"}
        with pytest.raises(ValueError, match="priority must be an integer"):
            set_priority(s, [rid], 2**40)
        with pytest.raises(ValueError, match="request ids"):
            cancel_requests(s, [], actor="t")
    (row,) = [r for r in _list(db) if r["id"] == rid]
    assert (row["priority"], row["state"], row["files_staging"], row["files_total"]) == \
        (900, "staging", 4, 8)
    with db.session() as s:
        assert cancel_requests(s, [rid, 998], actor="user:x", reason="not needed") == \
            {rid: "cancelled", 998: "unknown"}
        assert cancel_requests(s, [rid], actor="user:x") == {rid: "cancelled"}
        assert set_priority(s, [rid], 1) == {rid: "cancelled"}
    assert states(db, StagingFile) == {"cancelled": 8}
    with db.session() as s:
        assert set(s.scalars(select(DataRequest.state).where(DataRequest.kind == "stage"))) \
            == {"cancelled"}
    clock.advance(1000)
    cycle(db, tape_ddm, clock)
    assert tape_ddm.library.pending() == 0
    assert states(db, Job) == {"closed": 4}
    with db.session() as s:
        assert s.get(Task, task_id).state == "ready"  # and the finisher ends it
    finisher.run_once(db)
    with db.session() as s:
        assert s.get(Task, task_id).state == "failed"


def _list(db: Database, **kw: object) -> list[dict]:
    with db.session() as s:
        return list_requests(s, **kw)  # type: ignore[arg-type]


def test_staged_copies_are_kept_while_the_task_runs_and_released_when_done(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    with db.session() as s:
        task_id = submit(s, SPEC, tape_ddm).id
        buf = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_DISK"))
        buf_id, prefix = buf.id, buf.url_prefix
    refiner.run_once(db, tape_ddm)
    for _ in range(50):
        cycle(db, tape_ddm, clock)
        broker.run_once(db, tape_ddm, SchedulerConfig())
        if states(db, Job) == {"activated": 2}:
            break
        clock.set(max(clock.now() + 1, tape_ddm.library.next_event() or 0))
    paths = [Path(lfn2pfn(prefix, "t", f"raw.T._{i:06d}").removeprefix("file://"))
             for i in range(4)]
    assert all(p.exists() for p in paths)
    # a release that is rolled back removes no bytes (they go only after commit)
    with pytest.raises(RuntimeError), db.session() as s:
        drs = list(s.scalars(select(DataRequest).where(DataRequest.kind == "stage")))
        assert tape_ddm.release_staging(s, drs, set()) == 4
        raise RuntimeError("roll back")
    assert all(p.exists() for p in paths)
    now = T0 + timedelta(seconds=clock.now())
    # the jobs run on T1_PROD: the copies stay while they do
    with db.session() as s:
        qid = s.scalar(select(Queue.id).where(Queue.name == "T1_PROD"))
        claimed = claim_jobs(s, qid, 10, "pilot-1", now=now)
    assert len(claimed) == 2
    assert carousel.run_once(db, tape_ddm, now).copies_released == 0
    for job_id, attempt, token, spec in claimed:
        fence = {"job_id": job_id, "attempt": attempt, "lease_token": token}
        report(db, tape_ddm, fence, "running", now)
        report(db, tape_ddm, fence, "finished", now, exit_code=0, outputs=write_outputs(spec))
    finisher.run_once(db, now)
    finisher.run_once(db, now)
    with db.session() as s:
        assert s.get(Task, task_id).state == "done"
    assert carousel.run_once(db, tape_ddm, now).copies_released == 4
    assert not any(p.exists() for p in paths)
    with db.session() as s:
        inputs = select(StagingFile.file_id)
        assert set(s.scalars(select(Replica.state).where(Replica.endpoint_id == buf_id,
                                                         Replica.file_id.in_(inputs)))) \
            == {"unavailable"}
        assert s.scalar(select(StagingRequest.released_at)) is not None
    assert carousel.run_once(db, tape_ddm, now).copies_released == 0  # once


def test_requests_of_an_aborted_task_are_cancelled(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    with db.session() as s:
        task_id = submit(s, SPEC, tape_ddm).id
    refiner.run_once(db, tape_ddm)
    cycle(db, tape_ddm, clock)
    with db.session() as s:
        kill_task(s, task_id, actor="user:x")
    cycle(db, tape_ddm, clock)
    assert states(db, StagingRequest) == {"cancelled": 1}
    assert tape_ddm.library.pending() <= 1  # a read in progress finishes; the rest are dropped
    assert states(db, Job) == {"cancelled": 2}


def test_copies_another_task_still_reads_are_kept_when_the_first_task_ends(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    make_dataset(db, tape_ddm, "t:raw.T", "T1_TAPE", 4, tmp_path)
    with db.session() as s:
        first = submit(s, SPEC, tape_ddm).id
    refiner.run_once(db, tape_ddm)
    for _ in range(50):
        cycle(db, tape_ddm, clock)
        if states(db, StagingRequest) == {"done": 1}:
            break
        clock.set(max(clock.now() + 1, tape_ddm.library.next_event() or 0))
    # a second task over the same data: it is on the buffer now, nothing to stage
    with db.session() as s:
        second = submit(s, {**SPEC, "name": "again"}, tape_ddm).id
    refiner.run_once(db, tape_ddm)
    with db.session() as s:
        assert s.get(Task, second).state == "defined"
        assert s.scalar(select(func.count()).select_from(StagingRequest)) == 1
        kill_task(s, first, actor="user:x")  # the first task ends
    rep = carousel.run_once(db, tape_ddm, T0 + timedelta(seconds=clock.now()))
    assert rep.copies_released == 0  # the second task's jobs still need every file
    with db.session() as s:
        assert s.scalar(select(StagingRequest.released_at)) is None
    with db.session() as s:  # the second one too: now the copies may go
        kill_task(s, second, actor="user:x")
    rep = carousel.run_once(db, tape_ddm, T0 + timedelta(seconds=clock.now()))
    assert rep.copies_released == 4
