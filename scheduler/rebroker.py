"""Rebrokerage: move queued jobs to another queue (PanDA's job/reassign, task/reassign).

Only jobs nobody runs yet may move (``defined``, ``waiting``, ``throttled``,
``assigned``, ``activated``). Each is ``closed`` (ended by the system before it
ran) and a successor row is created in ``defined`` with the same piece and
attempt number (a move is not a failure, so it costs no retry), carrying a hint
for the broker: go to the named queue, or anywhere but the queue it left. The
broker then places it as any new job, requesting its data where it lands.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Queue, Task
from dawms.catalog.states import JOB_QUEUED, Entity, JobState, QueueStatus
from dawms.catalog.transition import transition_many

from .generate import Piece, create_jobs


def reassign_jobs(session: Session, job_ids: Iterable[int], *, actor: str,
                  queue: str | None = None, now: datetime | None = None) -> dict[int, str]:
    """Rebroker each queued job; returns per job "-> <new job id>" or why it stayed."""
    now = now or datetime.now(UTC)
    if queue is not None:
        status = session.scalar(select(Queue.status).where(Queue.name == queue))
        if status is None:
            raise LookupError(f"no queue named {queue!r}")
        if status != QueueStatus.ONLINE:
            raise ValueError(f"queue {queue} is {status}; jobs can only be sent to an "
                             "online queue")
    ids = list(dict.fromkeys(job_ids))
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
    result = {i: "unknown" for i in ids if i not in jobs}
    queue_names = dict(session.execute(select(Queue.id, Queue.name)).all())
    by_state: dict[str, list[int]] = defaultdict(list)
    for job in jobs.values():
        if job.state in JOB_QUEUED:
            by_state[job.state].append(job.id)
        else:
            result[job.id] = f"not queued ({job.state})"
    closed: list[int] = []
    reason = f"rebrokered to {queue}" if queue else "rebrokered"
    for state, group in by_state.items():
        closed += transition_many(session, Entity.JOB, group, JobState.CLOSED, expected=state,
                                  actor=actor, reason=reason, now=now)
    inputs: dict[int, list[tuple[File, str]]] = defaultdict(list)
    for f, did, job_id in session.execute(
            select(File, JobFile.dataset, JobFile.job_id).join(JobFile, JobFile.file_id == File.id)
            .where(JobFile.job_id.in_(closed), JobFile.type == "in").order_by(JobFile.id)):
        inputs[job_id].append((f, did))
    per_task: dict[int, list[tuple[int, Piece]]] = defaultdict(list)
    for job_id in closed:
        job = jobs[job_id]
        if queue:
            hint = {"queue": queue}
        else:
            left = queue_names.get(job.queue_id) if job.queue_id else None
            hint = {"exclude": sorted({*(job.broker_hint or {}).get("exclude", []),
                                       *([left] if left else [])})}
        per_task[job.task_id].append(
            (job_id, Piece(job.job_index, job.attempt, inputs[job_id], job_id, hint,
                           {"cores": job.cores, "memory_mb": job.memory_mb,
                            "walltime_s": job.walltime_s, "disk_mb": job.disk_mb})))
    for task_id, items in per_task.items():
        task = session.get(Task, task_id)
        new_ids = create_jobs(session, task, [p for _, p in items], now=now, actor=actor,
                              reason=reason)
        for (old, _), new in zip(items, new_ids, strict=True):
            result[old] = f"-> {new}"
    return result


def reassign_task(session: Session, task_id: int, *, actor: str, queue: str | None = None,
                  now: datetime | None = None) -> dict[int, str]:
    """Rebroker every queued job of a task."""
    if session.get(Task, task_id) is None:
        raise LookupError(f"no task {task_id}")
    ids = session.scalars(select(Job.id).where(Job.task_id == task_id,
                                               Job.state.in_(list(JOB_QUEUED)))).all()
    return reassign_jobs(session, ids, actor=actor, queue=queue, now=now)
