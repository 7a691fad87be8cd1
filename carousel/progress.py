"""Progress: files arriving on the buffer, failed recalls, jobs and tasks that may go on.

A file is ``staged`` once an available copy is on its request's disk buffer
(whoever brought it). A released file whose DDM request ended without it is
retried after a backoff that doubles each time, and after ``max_attempts``
recalls it is ``lost``: its task is told (``task.error``) and the jobs that
need it are closed. A request ends when all its files did: ``done``, or
``failed`` if any was lost. The jobs the refiner held (``throttled``) for
staging go on (``defined``, so the broker sends them to the data: the buffer's
site, or elsewhere with a replication) as soon as all their own inputs are on
disk, while the rest wait; a task leaves ``staging`` when its requests ended.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import (
    DataRequest,
    File,
    Job,
    JobFile,
    Replica,
    StagingFile,
    StagingRequest,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import (
    STAGING_OPEN,
    TASK_FINAL,
    Entity,
    JobState,
    ReplicaState,
    RequestState,
    StagingFileState,
    StagingState,
    TaskState,
)
from dawms.catalog.transition import transition_many

from .config import CarouselConfig

ACTOR = "carousel"
F = StagingFileState
OPEN = [s.value for s in STAGING_OPEN]


def files_arrived(session: Session, now: datetime) -> int:
    """Queued or staging files with an available copy on their buffer become staged."""
    rows = session.execute(
        select(StagingFile.id, StagingFile.state)
        .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
        .join(Replica, (Replica.file_id == StagingFile.file_id)
              & (Replica.endpoint_id == StagingRequest.destination_id))
        .where(StagingRequest.state.in_(OPEN),
               StagingFile.state.in_([F.QUEUED, F.STAGING]),
               Replica.state == ReplicaState.AVAILABLE)).all()
    by_state: dict[str, list[int]] = defaultdict(list)
    for fid, state in rows:
        by_state[state].append(fid)
    n = 0
    for state, ids in by_state.items():
        n += len(transition_many(session, Entity.STAGING_FILE, ids, F.STAGED, expected=state,
                                 actor=ACTOR, reason="on the disk buffer", now=now))
    return n


def recalls_failed(session: Session, now: datetime, cfg: CarouselConfig) -> tuple[int, int]:
    """Released files whose DDM request ended without them: retry later, or lost."""
    rows = session.execute(
        select(StagingFile.id, StagingFile.attempts, StagingRequest.task_id, File.scope,
               File.name, DataRequest.state, DataRequest.error)
        .join(DataRequest, DataRequest.id == StagingFile.data_request_id)
        .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
        .join(File, File.id == StagingFile.file_id)
        .where(StagingFile.state == F.STAGING,
               DataRequest.state != RequestState.REQUESTED)).all()
    retries: dict[int, list[int]] = defaultdict(list)
    lost: dict[int, list[int]] = defaultdict(list)
    lost_names: dict[int, list[str]] = defaultdict(list)
    why: dict[int, str] = {}
    for sf_id, attempts, task_id, scope, name, dr_state, dr_error in rows:
        why[sf_id] = f"recall {attempts + 1} ended {dr_state}: {dr_error or 'file not staged'}"
        if attempts + 1 >= cfg.max_attempts:
            lost[attempts + 1].append(sf_id)
            lost_names[task_id].append(f"{scope}:{name}")
        else:
            retries[attempts + 1].append(sf_id)
    n_retry = n_lost = 0
    for attempts, ids in retries.items():
        delay = timedelta(seconds=cfg.backoff_s * 2 ** (attempts - 1))
        n_retry += len(transition_many(
            session, Entity.STAGING_FILE, ids, F.QUEUED, expected=F.STAGING, actor=ACTOR,
            reason=f"recall failed; retry {attempts} after {delay}", now=now,
            values={"attempts": attempts, "next_try_at": now + delay,
                    "error": why[ids[0]][:2000]}))
    for attempts, ids in lost.items():
        n_lost += len(transition_many(
            session, Entity.STAGING_FILE, ids, F.LOST, expected=F.STAGING, actor=ACTOR,
            reason=f"lost after {attempts} recalls", now=now,
            values={"attempts": attempts, "error": why[ids[0]][:2000]}))
    for task_id, names in lost_names.items():  # the task is told
        task = session.get(Task, task_id)
        note = f"lost on tape after {cfg.max_attempts} recalls: " + ", ".join(names[:20]) + (
            f" and {len(names) - 20} more" if len(names) > 20 else "")
        task.error = (f"{task.error}; {note}" if task.error else note)[:4000]
    return n_retry, n_lost


def requests_progress(session: Session, now: datetime, cfg: CarouselConfig) -> int:
    """Refresh each open request's counters; end the ones whose files all ended."""
    counts: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for rid, state, n, nbytes in session.execute(
            select(StagingFile.request_id, StagingFile.state, func.count(),
                   func.coalesce(func.sum(StagingFile.size), 0))
            .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
            .where(StagingRequest.state.in_(OPEN))
            .group_by(StagingFile.request_id, StagingFile.state)):
        counts[rid][state] = (int(n), int(nbytes))
    ended = 0
    for rid, c in counts.items():
        staged, nbytes = c.get(F.STAGED, (0, 0))
        lost = c.get(F.LOST, (0, 0))[0]
        session.execute(update(StagingRequest).where(StagingRequest.id == rid).values(
            files_staged=staged, bytes_staged=nbytes, files_lost=lost))
        if c.get(F.QUEUED) or c.get(F.STAGING):
            continue
        state = session.scalar(select(StagingRequest.state).where(StagingRequest.id == rid))
        if lost or c.get(F.CANCELLED):
            ended += len(transition_many(
                session, Entity.STAGING, [rid], StagingState.FAILED, expected=state,
                actor=ACTOR, reason=f"{lost} files lost on tape", now=now,
                values={"error": f"{lost} files lost on tape",
                        "pinned_until": now + timedelta(seconds=cfg.pin_done_s)}))
        else:
            ended += len(transition_many(
                session, Entity.STAGING, [rid], StagingState.DONE, expected=state,
                actor=ACTOR, reason=f"{staged} files on the disk buffer", now=now,
                values={"pinned_until": now + timedelta(seconds=cfg.pin_done_s)}))
    return ended


def _on_disk(session: Session, file_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for start in range(0, len(file_ids), 500):
        out.update(session.scalars(
            select(Replica.file_id).join(StorageEndpoint,
                                         StorageEndpoint.id == Replica.endpoint_id)
            .where(Replica.file_id.in_(file_ids[start:start + 500]),
                   Replica.state == ReplicaState.AVAILABLE, StorageEndpoint.kind == "disk")))
    return out


def jobs_go_on(session: Session, now: datetime) -> tuple[int, int]:
    """Held jobs with every input on disk go on (defined); those needing a lost or
    withdrawn file are closed. Returns (released, closed)."""
    staging_tasks = select(StagingRequest.task_id).distinct()
    held = dict(session.execute(
        select(Job.id, Job.task_id).join(Task, Task.id == Job.task_id)
        .where(Job.state == JobState.THROTTLED, Job.task_id.in_(staging_tasks),
               Task.state.not_in(list(TASK_FINAL)))).all())
    if not held:
        return 0, 0
    inputs: dict[int, list[int]] = defaultdict(list)
    ids = list(held)
    for start in range(0, len(ids), 500):
        for job_id, file_id in session.execute(
                select(JobFile.job_id, JobFile.file_id)
                .where(JobFile.job_id.in_(ids[start:start + 500]), JobFile.type == "in")):
            inputs[job_id].append(file_id)
    all_files = sorted({f for fs in inputs.values() for f in fs})
    on_disk = _on_disk(session, all_files)
    dead: dict[tuple[int, int], str] = {}
    for task_id, file_id, state, scope, name in session.execute(
            select(StagingRequest.task_id, StagingFile.file_id, StagingFile.state, File.scope,
                   File.name)
            .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
            .join(File, File.id == StagingFile.file_id)
            .where(StagingRequest.task_id.in_(set(held.values())),
                   StagingFile.state.in_([F.LOST, F.CANCELLED]))):
        if file_id not in on_disk:
            dead[(task_id, file_id)] = f"input {scope}:{name} {state} on tape"
    ready, closed = [], defaultdict(list)
    for job_id, files in inputs.items():
        reasons = [dead[(held[job_id], f)] for f in files if (held[job_id], f) in dead]
        if reasons:
            closed[reasons[0]].append(job_id)
        elif all(f in on_disk for f in files):
            ready.append(job_id)
    n_ready = len(transition_many(session, Entity.JOB, ready, JobState.DEFINED,
                                  expected=JobState.THROTTLED, actor=ACTOR,
                                  reason="its inputs are on disk (staged from tape)", now=now))
    n_closed = 0
    for reason, group in closed.items():
        n_closed += len(transition_many(
            session, Entity.JOB, group, JobState.CLOSED, expected=JobState.THROTTLED,
            actor=ACTOR, reason=reason, now=now,
            values={"error_category": "staging", "error_diag": reason[:4000]}))
    return n_ready, n_closed


def tasks_go_on(session: Session, now: datetime) -> int:
    """A task in staging whose requests all ended is ready (its jobs went on or closed)."""
    open_tasks = select(StagingRequest.task_id).where(StagingRequest.state.in_(OPEN))
    ids = list(session.scalars(select(Task.id).where(Task.state == TaskState.STAGING,
                                                     Task.id.not_in(open_tasks))))
    return len(transition_many(session, Entity.TASK, ids, TaskState.READY,
                               expected=TaskState.STAGING, actor=ACTOR,
                               reason="its staging requests ended", now=now))
