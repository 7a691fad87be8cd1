"""Killing jobs and tasks (PanDA's job/kill and task/kill).

A job nobody runs yet (``defined`` ... ``activated``) is ``cancelled`` at once.
A job a pilot holds gets the command ``tobekilled``: the next heartbeat reply
carries it, the pilot kills the payload and reports ``failed``, and the server
records the job as ``cancelled`` (see ``report.pilot_update``); it is never retried.
Killing a task aborts it and kills every job of it that has not ended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import Job, Task
from dawms.catalog.states import JOB_QUEUED, JOB_WITH_PILOT, TASK_FINAL, Entity, JobState, TaskState
from dawms.catalog.transition import transition_many
from dawms.wire import Command

KILL = Command.KILL.value  # the command string lives in dawms.wire, once


def kill_jobs(session: Session, job_ids: Iterable[int], *, actor: str, reason: str = "",
              now: datetime | None = None) -> dict[int, str]:
    """Kill each job; returns what happened to each: cancelled | tobekilled | <final state>
    | unknown."""
    now = now or datetime.now(UTC)
    ids = list(dict.fromkeys(job_ids))
    rows = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(ids))).all())
    result = {i: rows.get(i, "unknown") for i in ids}
    queued: dict[str, list[int]] = defaultdict(list)
    held = []
    for job_id, state in rows.items():
        if state in JOB_QUEUED:
            queued[state].append(job_id)
        elif state in JOB_WITH_PILOT:
            held.append(job_id)
    why = reason or "killed"
    for state, group in queued.items():
        for job_id in transition_many(session, Entity.JOB, group, JobState.CANCELLED,
                                      expected=state, actor=actor, reason=why, now=now,
                                      values={"error_category": "killed", "error_diag": why}):
            result[job_id] = JobState.CANCELLED.value
    # jobs a pilot holds, including queued ones a pilot claimed a moment ago
    pending = held + [i for group in queued.values() for i in group
                      if result[i] != JobState.CANCELLED.value]
    if pending:
        told = set(session.scalars(
            update(Job).where(Job.id.in_(pending), Job.state.in_(list(JOB_WITH_PILOT)))
            .values(command=KILL, error_diag=why[:4000]).returning(Job.id)))
        states = dict(session.execute(select(Job.id, Job.state)
                                      .where(Job.id.in_(pending))).all())
        for job_id in pending:
            result[job_id] = KILL if job_id in told else states[job_id]
    return result


def kill_task(session: Session, task_id: int, *, actor: str, reason: str = "",
              now: datetime | None = None) -> dict[int, str]:
    """Abort the task and kill its jobs; LookupError for an unknown task."""
    now = now or datetime.now(UTC)
    task = session.get(Task, task_id, with_for_update=True)  # retries wait for us
    if task is None:
        raise LookupError(f"no task {task_id}")
    if task.state in TASK_FINAL:
        raise ValueError(f"task {task_id} is already {task.state}")
    transition_many(session, Entity.TASK, [task_id], TaskState.ABORTED, expected=task.state,
                    actor=actor, reason=reason or "killed", now=now)
    open_jobs = session.scalars(select(Job.id).where(
        Job.task_id == task_id, Job.state.in_(list(JOB_QUEUED | JOB_WITH_PILOT)))).all()
    return kill_jobs(session, open_jobs, actor=actor, reason=reason or f"task {task_id} killed",
                     now=now)
