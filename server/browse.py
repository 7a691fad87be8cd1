"""Read-only views a user browses: datasets with their replicas and open requests,
sites and queues with their status, config version, load and last pilot seen, data
requests with their progress, and a task's progress with an ETA.

Every route is a read (rule ``ANY``) built from a few grouped queries, never a query
per row; every list is bounded by ``limit``; a filter value that is not one of its
states is refused (422) naming the allowed ones.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dawms.catalog.models import (
    ConfigChange,
    DataRequest,
    DataRequestFile,
    Dataset,
    DatasetFile,
    File,
    Job,
    JobFile,
    Queue,
    Replica,
    Site,
    StagingRequest,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import (
    JOB_QUEUED,
    JOB_WITH_PILOT,
    TASK_FINAL,
    JobState,
    QueueStatus,
    RequestState,
)

from .auth import ANY
from .envelope import NotFound, ok
from .schemas import Envelope

router = APIRouter(prefix="/api/v1", tags=["browse"], dependencies=[Depends(ANY)])
NAME = Query(..., min_length=1, max_length=255)
QUEUE_STATES = "|".join(s.value for s in QueueStatus)
REQUEST_STATES = "|".join(s.value for s in RequestState)
CONFIG_SCAN = 2000  # config changes read to find each queue's version


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


# ------------------------------------------------------------------ datasets
def _dataset_rows(s: Session, datasets: list[Dataset]) -> list[dict[str, Any]]:
    ids = [d.id for d in datasets]
    sizes = {i: (n, b) for i, n, b in s.execute(
        select(DatasetFile.dataset_id, func.count(), func.coalesce(func.sum(File.size), 0))
        .join(File, File.id == DatasetFile.file_id).where(DatasetFile.dataset_id.in_(ids))
        .group_by(DatasetFile.dataset_id))}
    reps: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for i, ep, state, n in s.execute(
            select(DatasetFile.dataset_id, StorageEndpoint.name, Replica.state, func.count())
            .join(Replica, Replica.file_id == DatasetFile.file_id)
            .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
            .where(DatasetFile.dataset_id.in_(ids))
            .group_by(DatasetFile.dataset_id, StorageEndpoint.name, Replica.state)):
        reps[i][ep][state] = n
    return [{"did": d.did, "scope": d.scope, "name": d.name, "open": bool(d.is_open),
             "files": sizes.get(d.id, (0, 0))[0], "bytes": int(sizes.get(d.id, (0, 0))[1]),
             "replicas": {ep: dict(st) for ep, st in sorted(reps[d.id].items())},
             "created_at": _iso(d.created_at)} for d in datasets]


@router.get("/dataset/list", response_model=Envelope, tags=["dataset"])
def dataset_list(request: Request, scope: str | None = Query(None, max_length=64),
                 limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """Datasets, newest first: files, bytes, replicas per endpoint and state."""
    with request.app.state.db.session() as s:
        q = select(Dataset).order_by(Dataset.id.desc()).limit(limit)
        if scope:
            q = q.where(Dataset.scope == scope)
        return ok(_dataset_rows(s, list(s.scalars(q))))


@router.get("/dataset/{scope}/{name}", response_model=Envelope, tags=["dataset"])
def dataset_show(scope: str, name: str, request: Request,
                 files: int = Query(100, ge=0, le=10000)) -> dict[str, Any]:
    """One dataset: its first ``files`` files with their replicas, replicas per endpoint,
    and its open data and staging requests with their progress."""
    with request.app.state.db.session() as s:
        ds = s.scalar(select(Dataset).where(Dataset.scope == scope, Dataset.name == name))
        if ds is None:
            raise NotFound(f"no dataset {scope[:64]}:{name[:255]}")
        out = _dataset_rows(s, [ds])[0]
        rows = s.execute(select(File).join(DatasetFile, DatasetFile.file_id == File.id)
                         .where(DatasetFile.dataset_id == ds.id)
                         .order_by(DatasetFile.position, File.id).limit(files)).scalars().all()
        where: dict[int, list[str]] = defaultdict(list)
        for fid, ep, state in s.execute(
                select(Replica.file_id, StorageEndpoint.name, Replica.state)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(Replica.file_id.in_([f.id for f in rows])).order_by(Replica.id)):
            where[fid].append(f"{ep}:{state}")
        out["file_list"] = [{"name": f.name, "size": f.size, "adler32": f.adler32,
                             "events": f.events, "replicas": where[f.id]} for f in rows]
        in_ds = select(DatasetFile.file_id).where(DatasetFile.dataset_id == ds.id)
        req_ids = select(DataRequestFile.request_id).where(DataRequestFile.file_id.in_(in_ds))
        reqs = s.execute(select(DataRequest, StorageEndpoint.name)
                         .join(StorageEndpoint, StorageEndpoint.id == DataRequest.endpoint_id)
                         .where(DataRequest.id.in_(req_ids),
                                DataRequest.state == RequestState.REQUESTED)
                         .order_by(DataRequest.id)).all()
        out["requests"] = [_request_row(r, ep) for r, ep in reqs]
        out["staging"] = [
            {"id": r.id, "task_id": r.task_id, "state": r.state, "files_total": r.files_total,
             "files_staged": r.files_staged, "files_lost": r.files_lost,
             "progress": _ratio(r.files_staged, r.files_total)}
            for r in s.scalars(select(StagingRequest).where(StagingRequest.dataset == ds.did)
                               .order_by(StagingRequest.id.desc()).limit(100))]
        return ok(out)


# ------------------------------------------------------------------ requests
def _ratio(done: int, total: int) -> float:
    return round(done / total, 4) if total else 1.0


def _request_row(r: DataRequest, endpoint: str) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "name": r.name, "endpoint": endpoint, "ddm": r.ddm,
            "external_id": r.external_id, "activity": r.activity, "state": r.state,
            "files_done": r.files_done, "files_total": r.files_total,
            "bytes_done": r.bytes_done, "progress": _ratio(r.files_done, r.files_total),
            "attempts": r.attempts, "error": r.error, "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at)}


@router.get("/request/list", response_model=Envelope, tags=["dataset"])
def request_list(request: Request,
                 state: str | None = Query(None, pattern=f"^({REQUEST_STATES})$"),
                 kind: str | None = Query(None, pattern="^(replicate|stage)$"),
                 limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """Data requests made of the DDM, newest first, with files and bytes done."""
    with request.app.state.db.session() as s:
        q = (select(DataRequest, StorageEndpoint.name)
             .join(StorageEndpoint, StorageEndpoint.id == DataRequest.endpoint_id)
             .order_by(DataRequest.id.desc()).limit(limit))
        if state:
            q = q.where(DataRequest.state == state)
        if kind:
            q = q.where(DataRequest.kind == kind)
        return ok([_request_row(r, ep) for r, ep in s.execute(q)])


# ------------------------------------------------------------------ sites and queues
def _queue_rows(s: Session, queues: list[tuple[Queue, str]]) -> list[dict[str, Any]]:
    ids = [q.id for q, _ in queues]
    load: dict[int, dict[str, int]] = defaultdict(lambda: {"running": 0, "queued": 0})
    seen: dict[int, datetime | None] = {}
    running, queued = {s_.value for s_ in JOB_WITH_PILOT}, {s_.value for s_ in JOB_QUEUED}
    for qid, state, n in s.execute(select(Job.queue_id, Job.state, func.count())
                                   .where(Job.queue_id.in_(ids),
                                          Job.state.in_(running | queued))
                                   .group_by(Job.queue_id, Job.state)):
        load[qid]["running" if state in running else "queued"] += n
    for qid, hb, started in s.execute(select(Job.queue_id, func.max(Job.heartbeat_at),
                                             func.max(Job.started_at))
                                      .where(Job.queue_id.in_(ids)).group_by(Job.queue_id)):
        seen[qid] = max((t for t in (hb, started) if t is not None), default=None)
    versions = _config_versions(s, {q.name for q, _ in queues})
    return [{"name": q.name, "site": site, "status": q.status,
             "config_version": versions.get(q.name, {}).get("id"),
             "config_changed_at": versions.get(q.name, {}).get("at"),
             "running": load[q.id]["running"], "queued": load[q.id]["queued"],
             "max_running": q.max_running, "max_queued": q.max_queued,
             "last_pilot_at": _iso(seen.get(q.id))} for q, site in queues]


def _config_versions(s: Session, names: set[str]) -> dict[str, dict[str, Any]]:
    """Each queue's config version: the id of the newest site-file change that added
    or changed it (``dawms sites sync`` records one per applied diff)."""
    found: dict[str, dict[str, Any]] = {}
    for change in s.scalars(select(ConfigChange).order_by(ConfigChange.id.desc())
                            .limit(CONFIG_SCAN)):
        for line in change.diff or ():
            parts = str(line).split(" ", 3)
            if len(parts) >= 3 and parts[1] == "queue" and parts[2] in names \
                    and parts[2] not in found:
                found[parts[2]] = {"id": change.id, "at": _iso(change.at),
                                   "actor": change.actor, "source": change.source}
        if len(found) == len(names):
            break
    return found


@router.get("/queue/list", response_model=Envelope, tags=["site"])
def queue_list(request: Request, site: str | None = Query(None, max_length=128),
               status: str | None = Query(None, pattern=f"^({QUEUE_STATES})$"),
               limit: int = Query(1000, ge=1, le=10000)) -> dict[str, Any]:
    """Queues: status, config version, running and queued jobs, last pilot seen."""
    with request.app.state.db.session() as s:
        q = (select(Queue, Site.name).join(Site, Site.id == Queue.site_id)
             .order_by(Queue.name).limit(limit))
        if site:
            q = q.where(Site.name == site)
        if status:
            q = q.where(Queue.status == status)
        return ok(_queue_rows(s, [(qu, sn) for qu, sn in s.execute(q)]))


QUEUE_CONFIG = ("cores", "memory_mb", "max_walltime_s", "max_disk_mb", "pilot_backend",
                "read_endpoints", "write_endpoint", "movers", "direct_access")


@router.get("/queue/{name}", response_model=Envelope, tags=["site"])
def queue_show(name: str, request: Request) -> dict[str, Any]:
    """One queue: its configuration, load, last pilot seen, jobs by state and the
    site-file changes that touched it (newest first)."""
    with request.app.state.db.session() as s:
        row = s.execute(select(Queue, Site.name).join(Site, Site.id == Queue.site_id)
                        .where(Queue.name == name)).first()
        if row is None:
            raise NotFound(f"no queue {name[:128]!r}")
        queue, site = row
        out = _queue_rows(s, [(queue, site)])[0]
        out.update({k: getattr(queue, k) for k in QUEUE_CONFIG})
        out["jobs"] = dict(s.execute(select(Job.state, func.count())
                                     .where(Job.queue_id == queue.id).group_by(Job.state)).all())
        out["changes"] = [{"id": c.id, "at": _iso(c.at), "actor": c.actor, "source": c.source,
                           "diff": [d for d in c.diff if str(d).split(" ", 3)[2:3] == [name]]}
                          for c in s.scalars(select(ConfigChange)
                                             .order_by(ConfigChange.id.desc())
                                             .limit(CONFIG_SCAN))
                          if any(str(d).split(" ", 3)[1:3] == ["queue", name] for d in c.diff)
                          ][:20]
        return ok(out)


@router.get("/site/list", response_model=Envelope, tags=["site"])
def site_list(request: Request) -> dict[str, Any]:
    """Sites with their queues (and status), endpoints, running and queued jobs."""
    with request.app.state.db.session() as s:
        sites = list(s.scalars(select(Site).order_by(Site.name).limit(10000)))
        queues = _queue_rows(s, [(q, sn) for q, sn in s.execute(
            select(Queue, Site.name).join(Site, Site.id == Queue.site_id).order_by(Queue.name))])
        eps: dict[int, list[str]] = defaultdict(list)
        for sid, ep, kind in s.execute(select(StorageEndpoint.site_id, StorageEndpoint.name,
                                              StorageEndpoint.kind)
                                       .order_by(StorageEndpoint.name)):
            eps[sid].append(f"{ep} ({kind})")
        by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for q in queues:
            by_site[q["site"]].append(q)
        return ok([{"name": site.name, "description": site.description,
                    "queues": {q["name"]: q["status"] for q in by_site[site.name]},
                    "endpoints": eps[site.id],
                    "running": sum(q["running"] for q in by_site[site.name]),
                    "queued": sum(q["queued"] for q in by_site[site.name]),
                    "last_pilot_at": max((q["last_pilot_at"] for q in by_site[site.name]
                                          if q["last_pilot_at"]), default=None)}
                   for site in sites])


@router.get("/site/{name}", response_model=Envelope, tags=["site"])
def site_show(name: str, request: Request) -> dict[str, Any]:
    """One site: its queues (as in the queue list) and endpoints with what they hold."""
    with request.app.state.db.session() as s:
        site = s.scalar(select(Site).where(Site.name == name))
        if site is None:
            raise NotFound(f"no site {name[:128]!r}")
        queues = _queue_rows(s, [(q, site.name) for q in s.scalars(
            select(Queue).where(Queue.site_id == site.id).order_by(Queue.name))])
        endpoints = list(s.scalars(select(StorageEndpoint)
                                   .where(StorageEndpoint.site_id == site.id)
                                   .order_by(StorageEndpoint.name)))
        held = {eid: (n, b) for eid, n, b in s.execute(
            select(Replica.endpoint_id, func.count(), func.coalesce(func.sum(File.size), 0))
            .join(File, File.id == Replica.file_id)
            .where(Replica.endpoint_id.in_([e.id for e in endpoints]),
                   Replica.state == "available").group_by(Replica.endpoint_id))}
        return ok({"name": site.name, "description": site.description, "queues": queues,
                   "endpoints": [{"name": e.name, "kind": e.kind, "url_prefix": e.url_prefix,
                                  "quota_bytes": e.quota_bytes,
                                  "files": held.get(e.id, (0, 0))[0],
                                  "bytes": int(held.get(e.id, (0, 0))[1])}
                                 for e in endpoints]})


# ------------------------------------------------------------------ task progress
def task_progress(s: Session, task: Task, now: datetime) -> dict[str, Any]:
    """Jobs and input files done (the newest attempt of each piece counts), and an ETA
    from the rate at which pieces finished since the first one started."""
    rows = s.execute(select(Job.id, Job.job_index, Job.attempt, Job.state, Job.started_at,
                            Job.ended_at).where(Job.task_id == task.id)).all()
    latest: dict[int, Any] = {}
    first_start: datetime | None = None
    for r in rows:
        if r.job_index not in latest or r.attempt > latest[r.job_index].attempt:
            latest[r.job_index] = r
        if r.started_at is not None and (first_start is None or r.started_at < first_start):
            first_start = r.started_at
    files = dict(s.execute(select(JobFile.job_id, func.count())
                           .where(JobFile.job_id.in_([r.id for r in latest.values()]),
                                  JobFile.type == "in").group_by(JobFile.job_id)).all())
    by_state: dict[str, int] = defaultdict(int)
    for r in latest.values():
        by_state[r.state] += 1
    done = [r for r in latest.values() if r.state == JobState.FINISHED]
    n, n_done = len(latest), len(done)
    files_total = sum(files.get(r.id, 0) for r in latest.values())
    files_done = sum(files.get(r.id, 0) for r in done)
    eta_s = rate = None
    final = task.state in TASK_FINAL
    if not final and n_done and n > n_done and first_start is not None:
        last_end = max((r.ended_at for r in done if r.ended_at), default=now)
        elapsed = (last_end - first_start).total_seconds()
        if elapsed > 0:
            rate = n_done / elapsed
            eta_s = max(0.0, (n - n_done) / rate - (now - last_end).total_seconds())
    return {"task_id": task.id, "state": task.state, "final": final, "jobs_total": n,
            "jobs_done": n_done, "jobs": dict(sorted(by_state.items())),
            "files_total": files_total, "files_done": files_done,
            "progress": _ratio(n_done, n) if n else 0.0,
            "files_progress": _ratio(files_done, files_total) if files_total else 0.0,
            "rate_jobs_per_s": round(rate, 6) if rate else None,
            "eta_s": round(eta_s, 1) if eta_s is not None else None,
            "started_at": _iso(first_start), "updated_at": _iso(task.updated_at)}


@router.get("/task/{task_id}/progress", response_model=Envelope, tags=["task"])
def task_progress_route(task_id: int, request: Request) -> dict[str, Any]:
    """A task's progress: pieces and input files done, jobs by state, an ETA (seconds,
    from the finished-job rate; null until one finished or once the task ended)."""
    with request.app.state.db.session() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return ok(task_progress(s, task, datetime.now(UTC)))
