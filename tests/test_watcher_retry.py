"""Lost heartbeats, retries, the task's final state, and fencing of old attempts.

Every daemon run gets a frozen ``now``. Jobs are claimed with ``claim_jobs`` and
driven by ``pilot_update`` reports exactly as a pilot would (finished jobs write
their outputs on the ``file://`` endpoint first), on both database backends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import File, Job, JobFile, StateHistory, Task
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, finisher, refiner, watcher
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.finisher import task_outcome
from dawms.scheduler.report import StaleReport, pilot_update
from dawms.scheduler.task import submit
from factories import claim, finish, make_dataset, report, write_outputs

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
CFG = SchedulerConfig(sent_timeout_s=300, heartbeat_timeout_s=600)


def s_(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def setup_task(db: Database, ddm: LocalDDM, tmp: Path, n_files: int, max_attempts: int) -> int:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", n_files, tmp)
    with db.session() as s:
        task_id = submit(s, {"name": "w", "transformation": "true {inputs}",
                             "input_datasets": ["t:raw"], "output_dataset": "t:o.{task_id}",
                             "split": {"files_per_job": 1},
                             "retry": {"max_attempts": max_attempts}}, ddm).id
    refiner.run_once(db, ddm, now=T0)
    broker.run_once(db, ddm, CFG, now=T0)
    return task_id


def lfns(s, job_id: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(s.execute(select(JobFile.type, JobFile.lfn)
                          .where(JobFile.job_id == job_id, JobFile.type != "in")).all())


def test_a_lost_heartbeat_fails_the_job_and_makes_the_next_attempt(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    setup_task(db, ddm, tmp_path, 1, max_attempts=3)
    ((old_id, (fence, _)),) = claim(db, s_(0)).items()
    report(db, ddm, fence, "running", s_(10))
    assert watcher.run_once(db, CFG, now=s_(10 + 600)) == 0  # exactly at the limit: alive
    assert watcher.run_once(db, CFG, now=s_(10 + 601)) == 1
    assert watcher.run_once(db, CFG, now=s_(10 + 700)) == 0  # already handled
    with db.session() as s:
        old = s.get(Job, old_id)
        assert (old.state, old.error_category, old.ended_at) == \
            ("failed", "lost_heartbeat", s_(611))
        assert "600 s" in old.error_diag
        (new,) = s.scalars(select(Job).where(Job.id != old_id))
        assert (new.state, new.attempt, new.retry_of, new.job_index) == \
            ("defined", 2, old_id, old.job_index)
        assert new.queue_id is None and new.lease_token is None
        old_names, new_names = lfns(s, old_id), lfns(s, new.id)
        assert old_names["out"].endswith(f"._{old.job_index:06d}.1")
        assert new_names["out"] == old_names["out"].removesuffix(".1") + ".2"
        assert new_names["log"].endswith(f"._{old.job_index:06d}.2.log.tgz")
        assert set(s.scalars(select(JobFile.file_id).where(JobFile.job_id == new.id,
                                                           JobFile.type == "in"))) == \
            set(s.scalars(select(JobFile.file_id).where(JobFile.job_id == old_id,
                                                        JobFile.type == "in")))
        hist = s.scalar(select(StateHistory).where(StateHistory.entity_id == new.id,
                                                   StateHistory.entity == "job"))
        assert (hist.from_state, hist.to_state, hist.attempt, hist.actor) == \
            ("", "defined", 2, "scheduler:retry")


def test_sent_with_no_word_times_out_but_running_jobs_with_heartbeats_stay(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    setup_task(db, ddm, tmp_path, 2, max_attempts=3)
    claims = claim(db, s_(0))
    (alive, (fence, _)), (silent, _) = sorted(claims.items())
    report(db, ddm, fence, "running", s_(100))
    assert watcher.run_once(db, CFG, now=s_(300)) == 0
    assert watcher.run_once(db, CFG, now=s_(301)) == 1
    with db.session() as s:
        assert s.get(Job, alive).state == "running"
        assert (s.get(Job, silent).state, s.get(Job, silent).error_category) == \
            ("failed", "lost_heartbeat")
        assert s.scalar(select(Job.attempt).where(Job.retry_of == silent)) == 2
    report(db, ddm, fence, "running", s_(650))  # a heartbeat keeps it alive
    assert watcher.run_once(db, CFG, now=s_(1200)) == 0


def test_max_attempts_is_respected(db: Database, ddm: LocalDDM, sites: list[str],
                                   tmp_path: Path) -> None:
    task_id = setup_task(db, ddm, tmp_path, 1, max_attempts=2)
    now = 0
    for attempt in (1, 2):
        broker.run_once(db, ddm, CFG, now=s_(now))
        ((_, (fence, _)),) = claim(db, s_(now)).items()
        assert fence["attempt"] == attempt
        report(db, ddm, fence, "running", s_(now + 1))
        now += 1000
        assert watcher.run_once(db, CFG, now=s_(now)) == 1
    with db.session() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.attempt)))
        assert [(j.attempt, j.state) for j in jobs] == [(1, "failed"), (2, "failed")]
        assert jobs[1].retry_of == jobs[0].id
    assert broker.run_once(db, ddm, CFG, now=s_(now)) == 0
    assert finisher.run_once(db, now=s_(now)) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 2
        assert s.get(Task, task_id).state == "failed"


@pytest.mark.parametrize(("pieces", "outcome"), [
    ({1: ["finished"], 2: ["finished"]}, "done"),
    ({1: ["finished"], 2: ["failed", "finished"]}, "done"),
    ({1: ["finished"], 2: ["failed", "failed"]}, "finished"),
    ({1: ["cancelled"], 2: ["finished"]}, "finished"),
    ({1: ["failed"], 2: ["closed", "failed"]}, "failed"),
    ({1: ["finished"], 2: ["failed", "defined"]}, None),
    ({1: ["running"], 2: ["finished"]}, None),
])
def test_task_outcome(pieces: dict, outcome: str | None) -> None:
    assert task_outcome(pieces) == outcome


def test_finisher_done_after_a_piece_was_retried(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    task_id = setup_task(db, ddm, tmp_path, 2, max_attempts=2)
    (a, (fa, sa)), (b, (fb, _)) = sorted(claim(db, s_(0)).items())
    assert finisher.run_once(db, now=s_(1)) == 1  # ready -> running
    finish(db, ddm, fa, sa, s_(10))
    report(db, ddm, fb, "failed", s_(11), exit_code=3, error_category="payload",
           error_diag="segfault")
    assert finisher.run_once(db, now=s_(12)) == 0  # piece b has a new attempt open
    broker.run_once(db, ddm, CFG, now=s_(13))
    ((b2, (fb2, sb2)),) = claim(db, s_(14)).items()
    assert fb2["attempt"] == 2 and sb2["outputs"][0]["lfn"].endswith(".2")
    finish(db, ddm, fb2, sb2, s_(20))
    assert finisher.run_once(db, now=s_(21)) == 1
    with db.session() as s:
        assert [s.get(Job, j).state for j in (a, b, b2)] == ["finished", "failed", "finished"]
        assert s.get(Job, b).error_category == "payload"
        assert [(h.from_state, h.to_state) for h in s.scalars(
            select(StateHistory).where(StateHistory.entity == "task",
                                       StateHistory.entity_id == task_id)
            .order_by(StateHistory.id))] == [("", "registered"), ("registered", "defined"),
                                            ("defined", "ready"), ("ready", "running"),
                                            ("running", "done")]
        outs = {f.name for f in ddm.list_files(s, s.get(Task, task_id).output_dataset)}
        assert outs == {sa["outputs"][0]["lfn"], sb2["outputs"][0]["lfn"]}


@pytest.mark.parametrize(("first", "second", "outcome"), [
    ("finished", "failed", "finished"),
    ("failed", "failed", "failed"),
])
def test_finisher_partial_or_failed(db: Database, ddm: LocalDDM, sites: list[str],
                                    tmp_path: Path, first: str, second: str,
                                    outcome: str) -> None:
    task_id = setup_task(db, ddm, tmp_path, 2, max_attempts=1)
    for (fence, spec), result in zip((v for _, v in sorted(claim(db, s_(0)).items())),
                                     (first, second), strict=True):
        if result == "finished":
            finish(db, ddm, fence, spec, s_(5))
        else:
            report(db, ddm, fence, "failed", s_(5), error_category="payload")
    assert finisher.run_once(db, now=s_(6)) == 1
    with db.session() as s:
        assert s.get(Task, task_id).state == outcome
        assert s.scalar(select(func.count()).select_from(Job)) == 2  # no retries
    assert finisher.run_once(db, now=s_(7)) == 0  # final: left alone


def _snapshot(db: Database) -> tuple:
    with db.session() as s:
        jobs = tuple(s.execute(select(Job.id, Job.state, Job.attempt, Job.heartbeat_at,
                                      Job.metrics, Job.lease_token).order_by(Job.id)).all())
        return (jobs, s.scalar(select(func.count()).select_from(StateHistory)),
                s.scalar(select(func.count()).select_from(File)))


def test_a_report_of_the_old_attempt_after_a_retry_is_stale(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    setup_task(db, ddm, tmp_path, 1, max_attempts=3)
    ((old_id, (old, spec)),) = claim(db, s_(0)).items()
    report(db, ddm, old, "running", s_(1))
    assert watcher.run_once(db, CFG, now=s_(1000)) == 1
    broker.run_once(db, ddm, CFG, now=s_(1001))
    ((new_id, (new, _)),) = claim(db, s_(1002), pilot="pilot-2").items()
    assert new_id != old_id and new["attempt"] == 2
    before = _snapshot(db)
    late = [("running", {}), ("failed", {"error_category": "payload"}),
            ("finished", {"exit_code": 0, "outputs": write_outputs(spec)})]
    for state, extra in late:
        # even a caller that swallows the error commits nothing
        with db.session() as s, pytest.raises(StaleReport, match="not current|already failed"):
            pilot_update(s, ddm, {**old, "state": state, "metrics": {"x": 1}, **extra},
                         now=s_(1100))
        # the old pilot's lease does not open the new attempt either
        with db.session() as s, pytest.raises(StaleReport, match="not current"):
            pilot_update(s, ddm, {**old, "job_id": new_id, "attempt": 2, "state": state,
                                  **extra}, now=s_(1100))
    assert _snapshot(db) == before
    report(db, ddm, new, "running", s_(1200))  # the current pilot is heard
    with db.session() as s:
        assert s.get(Job, new_id).heartbeat_at == s_(1200)
        assert s.get(Job, old_id).state == "failed"


def test_a_reordered_report_is_stale(db: Database, ddm: LocalDDM, sites: list[str],
                                     tmp_path: Path) -> None:
    setup_task(db, ddm, tmp_path, 1, max_attempts=3)
    ((job_id, (fence, _)),) = claim(db, s_(0)).items()
    report(db, ddm, fence, "running", s_(5))
    with pytest.raises(StaleReport, match="does not follow"):
        report(db, ddm, fence, "starting", s_(6))  # a late "starting" after "running"
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.heartbeat_at) == ("running", s_(5))
