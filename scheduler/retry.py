"""Retry: a failed attempt gets a successor while its task's policy allows.

The failed row stays failed for ever; the next attempt is a new job row
(attempt + 1, ``retry_of`` pointing back) in ``defined``, so the broker places
it again, maybe elsewhere. Output names carry the attempt number, so a late
pilot of the old attempt can never overwrite the new one's files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Task
from dawms.catalog.states import TASK_FINAL, JobState

from .generate import Piece, create_jobs

ACTOR = "scheduler:retry"
# Failures that another attempt cannot mend.
NO_RETRY = frozenset({"cancelled", "bad_data"})  # bad_data: every copy of an input is bad


def retry_failed(session: Session, job_ids: Iterable[int], now: datetime) -> list[int]:
    """Create the next attempt of each failed job that may still be retried."""
    ids = list(job_ids)
    if not ids:
        return []
    jobs = list(session.scalars(select(Job).where(Job.id.in_(ids),
                                                  Job.state == JobState.FAILED)))
    # FOR SHARE: a concurrent kill of the task (FOR UPDATE) is seen, never raced
    tasks = {t.id: t for t in session.scalars(
        select(Task).where(Task.id.in_({j.task_id for j in jobs}))
        .with_for_update(read=True))}
    successors = set(session.scalars(select(Job.retry_of).where(Job.retry_of.in_(ids))))
    inputs: dict[int, list[tuple[File, str]]] = defaultdict(list)
    for f, did, job_id in session.execute(
            select(File, JobFile.dataset, JobFile.job_id).join(JobFile, JobFile.file_id == File.id)
            .where(JobFile.job_id.in_([j.id for j in jobs]), JobFile.type == "in")
            .order_by(JobFile.id)):
        inputs[job_id].append((f, did))
    new_ids: list[int] = []
    for task_id, task in tasks.items():
        if task.state in TASK_FINAL:
            continue
        pieces = []
        for job in (j for j in jobs if j.task_id == task_id):
            if (job.id in successors or job.error_category in NO_RETRY
                    or job.attempt >= task.retry.get("max_attempts", 3)):
                continue
            # a retry goes wherever the broker finds best: a rebrokerage hint is not kept
            pieces.append(Piece(job.job_index, job.attempt + 1, inputs[job.id], job.id))
        if pieces:
            new_ids += create_jobs(session, task, pieces, now=now, actor=ACTOR,
                                   reason="retry of a failed attempt")
    return new_ids
