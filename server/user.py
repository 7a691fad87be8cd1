"""User endpoints: submit tasks, list and show tasks and jobs, the summary.

Production managers submit and manage any task; analysts submit and manage their
own (the owner is the token's subject); every authenticated caller may read.
Replies are plain JSON built from column selections (no lazy loads per row).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from dawms.catalog.models import (
    DataRequest,
    File,
    Job,
    JobFile,
    Queue,
    Replica,
    Site,
    StateHistory,
    Task,
)
from dawms.scheduler.kill import kill_jobs, kill_task
from dawms.scheduler.rebroker import reassign_jobs, reassign_task
from dawms.scheduler.task import submit

from .auth import ANY, MANAGE, SUBMIT, check_own_jobs, check_own_tasks, owner_for_submit
from .envelope import NotFound, ok
from .schemas import Envelope, KillJobs, KillTask, ReassignJobs, ReassignTask
from .tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["user"])
MAX_TRANSFORMATION = 16384  # characters; it is copied into every job

TASK_COLS = ("id", "name", "owner", "state", "priority", "input_datasets", "output_dataset",
             "log_dataset", "split", "resources", "retry", "transformation", "error",
             "created_at", "updated_at")
JOB_COLS = ("id", "task_id", "job_index", "attempt", "retry_of", "state", "priority", "cores",
            "memory_mb", "walltime_s", "pilot_id", "heartbeat_at", "state_changed_at",
            "created_at", "started_at", "ended_at", "exit_code", "error_category",
            "error_diag", "metrics", "command", "broker_hint")


def _row(obj: Any, cols: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for c in cols:
        v = getattr(obj, c)
        out[c] = v.isoformat() if hasattr(v, "isoformat") else v
    return out


def _history(s: Any, entity: str, entity_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(select(StateHistory).where(StateHistory.entity == entity,
                                                StateHistory.entity_id == entity_id)
                     .order_by(StateHistory.id))
    return [{"from": h.from_state, "to": h.to_state, "attempt": h.attempt,
             "at": h.at.isoformat(), "actor": h.actor, "reason": h.reason} for h in rows]


@router.post("/task/submit", response_model=Envelope, tags=["task"])
def task_submit(request: Request, spec: dict[str, Any] = Body(...),
                who: Principal = Depends(SUBMIT)) -> dict[str, Any]:
    """Register a task; an invalid spec or unknown input dataset is a 400 listing why."""
    transformation = spec.get("transformation")
    if isinstance(transformation, str) and len(transformation) > MAX_TRANSFORMATION:
        raise RequestValidationError([{
            "loc": ("body", "transformation"), "type": "string_too_long", "input": None,
            "msg": f"is {len(transformation)} characters; at most {MAX_TRANSFORMATION}"}])
    owner = owner_for_submit(who, spec)
    with request.app.state.db.session() as s:
        task = submit(s, spec, request.app.state.ddm, owner=owner)
        return ok({"task_id": task.id, "state": task.state}, f"task {task.id} registered")


def _job_counts(s: Any, task_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for task_id, state, n in s.execute(select(Job.task_id, Job.state, func.count())
                                       .where(Job.task_id.in_(task_ids))
                                       .group_by(Job.task_id, Job.state)):
        counts[task_id][state] = n
    return counts


NEXT_HEADER = "X-Next-After"  # keyset paging: pass it back as ``after`` for the next page


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@router.get("/task/list", response_model=Envelope, tags=["task"], dependencies=[Depends(ANY)])
def task_list(request: Request, response: Response,
              state: list[str] | None = Query(None, max_length=32),
              owner: str | None = Query(None, max_length=128),
              name: str | None = Query(None, max_length=255, description="a name prefix"),
              after: int | None = Query(None, description="keyset paging: tasks with a "
                                        f"smaller id (the {NEXT_HEADER} header)"),
              limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """Tasks, newest first, filtered; a full page sets ``X-Next-After``."""
    with request.app.state.db.session() as s:
        q = select(Task).order_by(Task.id.desc()).limit(limit)
        if state:
            q = q.where(Task.state.in_(state))
        if owner:
            q = q.where(Task.owner == owner)
        if name:
            q = q.where(Task.name.like(_like_prefix(name), escape="\\"))
        if after is not None:
            q = q.where(Task.id < after)
        tasks = list(s.scalars(q))
        counts = _job_counts(s, [t.id for t in tasks])
        if len(tasks) == limit:
            response.headers[NEXT_HEADER] = str(tasks[-1].id)
        return ok([{**_row(t, TASK_COLS), "jobs": counts.get(t.id, {})} for t in tasks])


@router.get("/task/{task_id}", response_model=Envelope, tags=["task"],
            dependencies=[Depends(ANY)])
def task_show(task_id: int, request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return ok({**_row(task, TASK_COLS), "jobs": _job_counts(s, [task_id]).get(task_id, {}),
                   "history": _history(s, "task", task_id)})


@router.post("/task/kill", response_model=Envelope, tags=["task"])
def task_kill(body: KillTask, request: Request,
              who: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Abort a task: queued jobs are cancelled, running ones told to die."""
    with request.app.state.db.session() as s:
        check_own_tasks(s, who, [body.task_id])
        jobs = kill_task(s, body.task_id, actor=who.actor, reason=body.reason)
    return ok({"task_id": body.task_id, "state": "aborted", "jobs": jobs})


@router.post("/job/kill", response_model=Envelope, tags=["job"])
def job_kill(body: KillJobs, request: Request,
             who: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Kill jobs: per job "cancelled", "tobekilled" (its pilot is told), its final state,
    or "unknown"."""
    with request.app.state.db.session() as s:
        check_own_jobs(s, who, body.job_ids)
        return ok(kill_jobs(s, body.job_ids, actor=who.actor, reason=body.reason))


@router.post("/task/reassign", response_model=Envelope, tags=["task"])
def task_reassign(body: ReassignTask, request: Request,
                  who: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Rebroker every queued job of a task (to ``queue``, or away from where it is)."""
    with request.app.state.db.session() as s:
        check_own_tasks(s, who, [body.task_id])
        return ok(reassign_task(s, body.task_id, queue=body.queue, actor=who.actor))


@router.post("/job/reassign", response_model=Envelope, tags=["job"])
def job_reassign(body: ReassignJobs, request: Request,
                 who: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Rebroker queued jobs: per job "-> <new id>", "not queued (<state>)" or "unknown"."""
    with request.app.state.db.session() as s:
        check_own_jobs(s, who, body.job_ids)
        return ok(reassign_jobs(s, body.job_ids, queue=body.queue, actor=who.actor))


@router.get("/job/list", response_model=Envelope, tags=["job"], dependencies=[Depends(ANY)])
def job_list(request: Request, response: Response, task_id: int | None = None,
             state: list[str] | None = Query(None, max_length=32),
             queue: str | None = Query(None, max_length=128),
             site: str | None = Query(None, max_length=128),
             error_category: str | None = Query(None, max_length=32),
             after: int | None = Query(None, description="keyset paging: jobs with a larger "
                                       f"id (the {NEXT_HEADER} header)"),
             limit: int = Query(1000, ge=1, le=100000)) -> dict[str, Any]:
    """Jobs, oldest first, filtered; a full page sets ``X-Next-After``."""
    with request.app.state.db.session() as s:
        q = (select(Job, Queue.name).outerjoin(Queue, Queue.id == Job.queue_id)
             .order_by(Job.id).limit(limit))
        if task_id is not None:
            q = q.where(Job.task_id == task_id)
        if state:
            q = q.where(Job.state.in_(state))
        if queue:
            q = q.where(Queue.name == queue)
        if site:
            q = q.join(Site, Site.id == Queue.site_id).where(Site.name == site)
        if error_category:
            q = q.where(Job.error_category == error_category)
        if after is not None:
            q = q.where(Job.id > after)
        rows = [{**_row(j, JOB_COLS), "queue": qn} for j, qn in s.execute(q)]
        if len(rows) == limit:
            response.headers[NEXT_HEADER] = str(rows[-1]["id"])
        return ok(rows)


@router.get("/job/{job_id}", response_model=Envelope, tags=["job"], dependencies=[Depends(ANY)])
def job_show(job_id: int, request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        row = s.execute(select(Job, Queue.name).outerjoin(Queue, Queue.id == Job.queue_id)
                        .where(Job.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        job, queue = row
        files = [{"type": f.type, "scope": f.scope, "lfn": f.lfn, "dataset": f.dataset,
                  "size": f.size, "adler32": f.adler32, "registered": f.file_id is not None,
                  "request_id": f.request_id}
                 for f in s.scalars(select(JobFile).where(JobFile.job_id == job_id)
                                    .order_by(JobFile.id))]
        return ok({**_row(job, JOB_COLS), "queue": queue, "files": files,
                   "history": _history(s, "job", job_id)})


@router.get("/summary", response_model=Envelope, tags=["monitor"], dependencies=[Depends(ANY)])
def summary(request: Request, task_id: int | None = None) -> dict[str, Any]:
    """Jobs by state and site, tasks by state, replication done, outputs registered."""
    with request.app.state.db.session() as s:
        jq = (select(Job.state, Site.name, func.count())
              .outerjoin(Queue, Queue.id == Job.queue_id).outerjoin(Site, Site.id == Queue.site_id)
              .group_by(Job.state, Site.name))
        tq = select(Task.state, func.count()).group_by(Task.state)
        oq = (select(func.count()).select_from(JobFile)
              .join(File, File.id == JobFile.file_id)
              .join(Replica, (Replica.file_id == File.id) & (Replica.state == "available"))
              .where(JobFile.type == "out", JobFile.size.is_not(None),
                     JobFile.adler32.is_not(None)))
        if task_id is not None:
            jq = jq.where(Job.task_id == task_id)
            tq = tq.where(Task.id == task_id)
            oq = oq.join(Job, Job.id == JobFile.job_id).where(Job.task_id == task_id)
        by_site: dict[str, dict[str, int]] = defaultdict(dict)
        jobs: dict[str, int] = defaultdict(int)
        for state, site, n in s.execute(jq):
            by_site[site or "-"][state] = n
            jobs[state] += n
        files, nbytes = s.execute(select(func.coalesce(func.sum(DataRequest.files_done), 0),
                                         func.coalesce(func.sum(DataRequest.bytes_done), 0))
                                  ).one()
        return ok({"jobs": dict(jobs), "jobs_by_site": dict(by_site),
                   "tasks": {st: n for st, n in s.execute(tq)},
                   "files_replicated": int(files), "bytes_replicated": int(nbytes),
                   "outputs_registered": s.scalar(oq) or 0})
