"""Stuck data requests escalate instead of waiting for ever.

Rucio rules can sit at 99 % for days and flip between STUCK and REPLICATING
without giving up; a user sees nothing move and no reason. Here every open data
request is watched for progress (its ``files_done`` growing). A whole
``stuck_after_s`` without a file arriving adds one to its ``stuck_count`` and
restarts the clock; at ``stuck_max`` the request is cancelled (the Rucio
housekeeping then deletes its rule) and the jobs waiting on it are rebrokered,
away from the queue they were stuck at, as a manual reassignment would (fenced
the same way: the old rows close, successors are new rows). A job that was
already moved ``stuck_moves_max`` times for this fails instead, with the
classified error ``ddm_stuck`` and the last failure reason of its missing files,
and is not retried: another attempt would wait on the same data.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DataRequestFile, File, Job, JobFile
from dawms.catalog.states import Entity, JobState, RequestState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import Ran

from .config import SchedulerConfig
from .rebroker import reassign_jobs

log = logging.getLogger(__name__)
ACTOR = "scheduler:stuck"
CATEGORY = "ddm_stuck"
BUNCH = 1000


def run_once(db: Database, cfg: SchedulerConfig, now: datetime | None = None) -> Ran:
    """Look at up to ``BUNCH`` open requests; returns how many were escalated."""
    now = now or datetime.now(UTC)
    after = timedelta(seconds=cfg.stuck_after_s)
    escalated = 0
    with db.session() as s:
        reqs = list(s.scalars(select(DataRequest).where(
            DataRequest.state == RequestState.REQUESTED).order_by(DataRequest.id).limit(BUNCH)))
        for req in reqs:
            since = req.progress_at or req.created_at
            if req.files_done > req.progress_files:
                s.execute(update(DataRequest).where(DataRequest.id == req.id).values(
                    progress_files=req.files_done, progress_at=now))
            elif now - since >= after:
                count = req.stuck_count + 1
                s.execute(update(DataRequest).where(DataRequest.id == req.id).values(
                    stuck_count=count, progress_at=now))
                log.warning("request %s (%s): no file arrived for %d s (stuck %d of %d)",
                            req.id, req.name, int((now - since).total_seconds()), count,
                            cfg.stuck_max)
                if count >= cfg.stuck_max:
                    _escalate(s, req, cfg, now)
                    escalated += 1
    return Ran(escalated, full=len(reqs) >= BUNCH)


def last_failures(s: Session, request_id: int, limit: int = 5) -> list[tuple[str, str]]:
    """(scope:name, error) of the request's files that failed, newest first."""
    rows = s.execute(select(File.scope, File.name, DataRequestFile.error)
                     .join(File, File.id == DataRequestFile.file_id)
                     .where(DataRequestFile.request_id == request_id,
                            DataRequestFile.done == 0, DataRequestFile.error != "")
                     .order_by(DataRequestFile.failed_at.desc()).limit(limit))
    return [(f"{scope}:{name}", err) for scope, name, err in rows]


def _escalate(s: Session, req: DataRequest, cfg: SchedulerConfig, now: datetime) -> None:
    failures = last_failures(s, req.id, 1)
    last = f"; last failure on {failures[0][0]}: {failures[0][1]}" if failures else ""
    why = (f"stuck: no file arrived for {cfg.stuck_after_s} s, {cfg.stuck_max} times "
           f"({req.files_done} of {req.files_total} files done){last}")[:2000]
    jobs = list(s.scalars(select(Job).where(
        Job.state == JobState.ASSIGNED,
        Job.id.in_(select(JobFile.job_id).where(JobFile.request_id == req.id)))))
    move = [j for j in jobs if (j.broker_hint or {}).get("stuck_moves", 0) < cfg.stuck_moves_max]
    fail = [j.id for j in jobs if j not in move]
    moved = reassign_jobs(s, [j.id for j in move], actor=ACTOR, now=now)
    for job in move:
        new = moved.get(job.id, "")
        if new.startswith("-> "):
            new_id = int(new[3:])
            hint = dict(s.get(Job, new_id).broker_hint or {})
            hint["stuck_moves"] = (job.broker_hint or {}).get("stuck_moves", 0) + 1
            s.execute(update(Job).where(Job.id == new_id).values(broker_hint=hint))
    transition_many(s, Entity.JOB, fail, JobState.FAILED, expected=JobState.ASSIGNED,
                    actor=ACTOR, reason=why, now=now,
                    values={"error_category": CATEGORY, "error_diag": f"inputs {why}"})
    transition_many(s, Entity.REQUEST, [req.id], RequestState.CANCELLED,
                    expected=RequestState.REQUESTED, actor=ACTOR, reason=why,
                    values={"error": why}, now=now)
    log.warning("request %s (%s) given up: %s; %d jobs rebrokered, %d failed", req.id,
                req.name, why, len(move), len(fail))
