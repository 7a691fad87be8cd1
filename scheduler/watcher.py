"""Watcher: jobs whose pilot went silent, or that waited too long, fail and are retried.

``sent`` with no word within ``sent_timeout_s``, or a later pilot-held state with
no heartbeat within ``heartbeat_timeout_s``, becomes ``failed`` (category
``lost_heartbeat``); the retry policy makes the next attempt. The pilot that went
silent is fenced out: its later reports are refused as stale. PanDA's queue
timeouts bound everything else: ``waiting`` 4 h, ``assigned`` 12 h (the inputs did
not arrive), ``activated`` 2 d (no pilot came), so no job waits for ever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job
from dawms.catalog.states import Entity, JobState
from dawms.catalog.transition import transition_many

from .config import SchedulerConfig
from .kill import KILL
from .retry import retry_failed

ACTOR = "scheduler:watcher"


def run_once(db: Database, cfg: SchedulerConfig, now: datetime | None = None) -> int:
    """Fail the jobs whose pilot went silent or that waited too long; returns how many."""
    now = now or datetime.now(UTC)
    silent = {JobState.SENT: cfg.sent_timeout_s, JobState.STARTING: cfg.heartbeat_timeout_s,
              JobState.RUNNING: cfg.heartbeat_timeout_s, JobState.HOLDING: cfg.heartbeat_timeout_s,
              JobState.TRANSFERRING: cfg.heartbeat_timeout_s}
    stuck = {JobState.WAITING: (cfg.waiting_timeout_s, "timeout", "no queue could take it"),
             JobState.ASSIGNED: (cfg.assigned_timeout_s, "ddm", "its inputs did not arrive"),
             JobState.ACTIVATED: (cfg.activated_timeout_s, "timeout", "no pilot took it")}
    failed: list[int] = []
    with db.session() as s:
        for state, timeout in silent.items():
            cutoff = now - timedelta(seconds=timeout)
            # the guard re-checks at update time: a heartbeat that just came in wins
            guard = [Job.heartbeat_at < cutoff]
            rows = s.execute(select(Job.id, Job.command).where(
                Job.state == state, Job.heartbeat_at < cutoff)).all()
            # a job whose pilot went silent after a kill command was killed: cancelled
            transition_many(
                s, Entity.JOB, [i for i, c in rows if c == KILL], JobState.CANCELLED,
                expected=state, actor=ACTOR, reason="killed; the pilot went silent", now=now,
                values={"error_category": "killed"}, guard=guard)
            failed += transition_many(
                s, Entity.JOB, [i for i, c in rows if c != KILL], JobState.FAILED,
                expected=state, actor=ACTOR, reason=f"no heartbeat for {timeout} s", now=now,
                guard=guard,
                values={"error_category": "lost_heartbeat",
                        "error_diag": f"no word from the pilot for {timeout} s while {state}"})
        for state, (timeout, category, why) in stuck.items():
            cutoff = now - timedelta(seconds=timeout)
            ids = list(s.scalars(select(Job.id).where(Job.state == state,
                                                      Job.state_changed_at < cutoff)))
            diag = f"{why} within {timeout} s"
            failed += transition_many(
                s, Entity.JOB, ids, JobState.FAILED, expected=state, actor=ACTOR, reason=diag,
                now=now, guard=[Job.state_changed_at < cutoff],
                values={"error_category": category, "error_diag": diag})
        retry_failed(s, failed, now)
    return len(failed)
