"""Invariants of a catalog, for an operator checking a restored backup (``dawms db check``).

The database is the only state dawms keeps; these are the properties every code
path preserves, checked with one query each so a damaged or half-restored copy
is caught before a server runs on it:

- ``one_live_attempt``: no piece of a task (task, job index) has two attempts
  that are not final (a retry is made only once its predecessor ended);
- ``running_has_lease``: every job a pilot holds (sent .. transferring) has a
  lease token and a pilot;
- ``output_has_replica``: every registered output or log (a job file of type
  out/log pointing at a file) has a replica of that file somewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .models import Job, JobFile, Replica
from .states import JOB_FINAL, JOB_WITH_PILOT

EXAMPLES = 20  # offending ids named per invariant


@dataclass(frozen=True)
class Finding:
    invariant: str
    count: int
    examples: list[str]

    @property
    def ok(self) -> bool:
        return self.count == 0


def check(session: Session) -> list[Finding]:
    """Every invariant with how many rows break it (0: holds) and a few of them."""
    live = (select(Job.task_id, Job.job_index, func.count().label("n"))
            .where(Job.state.not_in(list(JOB_FINAL)))
            .group_by(Job.task_id, Job.job_index).having(func.count() > 1))
    twice = [f"task {t} job index {i}: {n} live attempts" for t, i, n in session.execute(live)]
    unleased = [f"job {i} ({s})" for i, s in session.execute(
        select(Job.id, Job.state).where(
            Job.state.in_(list(JOB_WITH_PILOT)),
            or_(Job.lease_token.is_(None), Job.lease_token == "", Job.pilot_id.is_(None)))
        .order_by(Job.id))]
    orphans = [f"job {j} output {lfn}" for j, lfn in session.execute(
        select(JobFile.job_id, JobFile.lfn).where(
            JobFile.type.in_(["out", "log"]), JobFile.file_id.is_not(None),
            ~select(Replica.id).where(Replica.file_id == JobFile.file_id).exists())
        .order_by(JobFile.job_id))]
    return [Finding(name, len(rows), rows[:EXAMPLES]) for name, rows in (
        ("one_live_attempt", twice), ("running_has_lease", unleased),
        ("output_has_replica", orphans))]
