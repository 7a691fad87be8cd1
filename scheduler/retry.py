"""Retry: a failed attempt gets a successor while its task's policy allows.

The failed row stays failed for ever; the next attempt is a new job row
(attempt + 1, ``retry_of`` pointing back) in ``defined``, so the broker places
it again, maybe elsewhere. What the next attempt gets depends on why this one
failed (``policy``): another queue, more walltime, more memory, or no retry.
Output names carry the attempt number, so a late
pilot of the old attempt can never overwrite the new one's files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Queue, Task
from dawms.catalog.states import TASK_FINAL, JobState

from .generate import Piece, create_jobs

ACTOR = "scheduler:retry"
# Failures that another attempt cannot mend.
NO_RETRY = frozenset({"cancelled", "killed", "bad_data"})  # bad_data: every copy is bad
# Failures of the place, not of the job: the next attempt goes to another queue.
ELSEWHERE = frozenset({"stagein", "stageout", "ddm", "pilot"})  # lost_heartbeat: anywhere
OOM_EXIT = 137  # killed by SIGKILL: the batch system's (or the kernel's) memory limit
GROWTH = 1.5  # more memory or walltime per retry
INT32_MAX = 2**31 - 1


def policy(job: Job, queue_name: str | None) -> tuple[dict[str, Any] | None,
                                                      dict[str, int] | None]:
    """The next attempt's broker hint and resources, by the failure's category:
    elsewhere (the queue it failed at excluded), more walltime (it ran past its
    limit), more memory (killed at the memory limit), or as it was (payload)."""
    category = job.error_category
    if category in ELSEWHERE and queue_name:
        return {"exclude": sorted({*(job.broker_hint or {}).get("exclude", []),
                                   queue_name})}, None
    if category == "timeout" and job.started_at is not None:  # it ran: walltime too short
        return None, {"walltime_s": min(INT32_MAX, int(job.walltime_s * GROWTH))}
    if category == "timeout":  # it waited too long where it was (watcher): go elsewhere
        return ({"exclude": [queue_name]} if queue_name else None), None
    if category == "payload" and job.exit_code == OOM_EXIT:
        return None, {"memory_mb": min(INT32_MAX, int(job.memory_mb * GROWTH))}
    return None, None


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
    queue_names = dict(session.execute(select(Queue.id, Queue.name).where(
        Queue.id.in_({j.queue_id for j in jobs if j.queue_id}))).all())
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
            hint, resources = policy(job, queue_names.get(job.queue_id))
            pieces.append(Piece(job.job_index, job.attempt + 1, inputs[job.id], job.id,
                                hint, resources))
        if pieces:
            new_ids += create_jobs(session, task, pieces, now=now, actor=ACTOR,
                                   reason="retry of a failed attempt")
    return new_ids
