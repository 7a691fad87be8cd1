"""Watcher: jobs whose pilot went silent fail, and are retried (PanDA's lost heartbeat).

``sent`` with no word within ``sent_timeout_s``, or a later pilot-held state with
no heartbeat within ``heartbeat_timeout_s``, becomes ``failed`` (category
``lost_heartbeat``); the retry policy makes the next attempt. The pilot that went
silent is fenced out: its later reports are refused as stale.
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
    """Fail the jobs with a lost heartbeat; returns how many."""
    now = now or datetime.now(UTC)
    limits = {JobState.SENT: cfg.sent_timeout_s, JobState.STARTING: cfg.heartbeat_timeout_s,
              JobState.RUNNING: cfg.heartbeat_timeout_s, JobState.HOLDING: cfg.heartbeat_timeout_s}
    failed: list[int] = []
    with db.session() as s:
        for state, timeout in limits.items():
            cutoff = now - timedelta(seconds=timeout)
            rows = s.execute(select(Job.id, Job.command).where(
                Job.state == state, Job.heartbeat_at < cutoff)).all()
            # a job whose pilot went silent after a kill command was killed: cancelled
            transition_many(
                s, Entity.JOB, [i for i, c in rows if c == KILL], JobState.CANCELLED,
                expected=state, actor=ACTOR, reason="killed; the pilot went silent", now=now,
                values={"error_category": "killed"})
            ids = [i for i, c in rows if c != KILL]
            failed += transition_many(
                s, Entity.JOB, ids, JobState.FAILED, expected=state, actor=ACTOR,
                reason=f"no heartbeat for {timeout} s", now=now,
                values={"error_category": "lost_heartbeat",
                        "error_diag": f"no word from the pilot for {timeout} s while {state}"})
        retry_failed(s, failed, now)
    return len(failed)
