"""The monitor's read queries: one module for the JSON API and the HTML pages alike.

Every list is keyset-paged on its primary key, newest first (``before``: the last
id of the previous page; the reply's ``next`` is the cursor of the following
page), so page 1000 costs what page 1 costs on a million jobs. Every filter is
bound (no string-built SQL); name patterns take ``*`` wildcards and escape the
rest. The monitor pages call exactly these functions, so the API has every
answer a page shows (``server/monitor_api.py``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, distinct, func, select
from sqlalchemy.orm import Session

from dawms.catalog.models import (
    ConfigChange,
    DataRequest,
    Dataset,
    DatasetFile,
    DDMEvent,
    File,
    Job,
    JobFile,
    Queue,
    Replica,
    Site,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import JOB_FINAL, JOB_QUEUED, JOB_WITH_PILOT

from .envelope import NotFound

PAGE = 50
MAX_PAGE = 500
ACTIVE = tuple(sorted(JOB_QUEUED | JOB_WITH_PILOT))
TASK_COLS = ("id", "name", "owner", "state", "priority", "share", "input_datasets",
             "output_dataset", "log_dataset", "error", "created_at", "updated_at")
JOB_LIST_COLS = ("id", "task_id", "job_index", "attempt", "state", "pilot_id", "created_at",
                 "state_changed_at", "started_at", "ended_at", "error_category")
JOB_COLS = (*JOB_LIST_COLS, "retry_of", "priority", "cores", "memory_mb", "walltime_s",
            "heartbeat_at", "exit_code", "error_diag", "metrics", "command")


@dataclass(frozen=True)
class Filters:
    """What a task or job list may be narrowed to (all optional, all bound parameters)."""

    state: str | None = None
    owner: str | None = None
    name: str | None = None  # a task-name pattern, ``*`` wildcards
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    task_id: int | None = None
    site: str | None = None
    queue: str | None = None
    error: str | None = None  # error category

    def query(self) -> dict[str, str]:
        """The filters as URL parameters (for the pages' next links)."""
        out = {}
        for key in ("state", "owner", "name", "task_id", "site", "queue", "error"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = str(value)
        for key in ("since", "until"):
            if (value := getattr(self, key)) is not None:
                out[key] = value.isoformat()
        return out


def like_pattern(pattern: str) -> str:
    """``*`` wildcards to a LIKE pattern; ``%``, ``_`` and ``\\`` match themselves."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _value(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _row(obj: Any, cols: tuple[str, ...]) -> dict[str, Any]:
    return {c: _value(getattr(obj, c)) for c in cols}


def _page(q: Select[Any], key: Any, before: int | None, limit: int) -> Select[Any]:
    if before is not None:
        q = q.where(key < before)
    return q.order_by(key.desc()).limit(min(max(limit, 1), MAX_PAGE) + 1)


def _paged(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The page and its cursor: ``next`` is the last id shown when there is more."""
    limit = min(max(limit, 1), MAX_PAGE)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next": items[-1]["id"] if more and items else None}


# ------------------------------------------------------------------ dashboard
def dashboard(s: Session, now: datetime | None = None) -> dict[str, Any]:
    """Jobs active now by site and state, the last 24 h's ends, tasks by state, open
    requests, pilots heard from in the last hour, and the last 24 h's errors by category."""
    now = now or datetime.now(UTC)
    day, hour = now - timedelta(hours=24), now - timedelta(hours=1)
    by_site: dict[str, dict[str, int]] = defaultdict(dict)
    for state, site, n in s.execute(
            select(Job.state, Site.name, func.count())
            .outerjoin(Queue, Queue.id == Job.queue_id).outerjoin(Site, Site.id == Queue.site_id)
            .where(Job.state.in_(ACTIVE)).group_by(Job.state, Site.name)):
        by_site[site or "-"][state] = n
    for state, site, n in s.execute(
            select(Job.state, Site.name, func.count())
            .outerjoin(Queue, Queue.id == Job.queue_id).outerjoin(Site, Site.id == Queue.site_id)
            .where(Job.ended_at >= day, Job.state.in_(sorted(JOB_FINAL)))
            .group_by(Job.state, Site.name)):
        by_site[site or "-"][state] = n
    errors = {cat or "-": n for cat, n in s.execute(
        select(Job.error_category, func.count())
        .where(Job.ended_at >= day, Job.state == "failed").group_by(Job.error_category)
        .order_by(func.count().desc()))}
    requests = {st: n for st, n in s.execute(
        select(DataRequest.state, func.count()).where(DataRequest.state == "requested")
        .group_by(DataRequest.state))}
    return {
        "at": now.isoformat(),
        "jobs_by_site": {k: by_site[k] for k in sorted(by_site)},
        "tasks": {st: n for st, n in s.execute(
            select(Task.state, func.count()).group_by(Task.state).order_by(Task.state))},
        "requests_open": requests.get("requested", 0),
        "pilots_last_hour": s.scalar(select(func.count(distinct(Job.pilot_id)))
                                     .where(Job.heartbeat_at >= hour)) or 0,
        "errors_24h": errors,
    }


# ------------------------------------------------------------------ tasks
def _task_filters(q: Select[Any], f: Filters) -> Select[Any]:
    if f.state:
        q = q.where(Task.state == f.state)
    if f.owner:
        q = q.where(Task.owner == f.owner)
    if f.name:
        q = q.where(Task.name.like(like_pattern(f.name), escape="\\"))
    if f.since:
        q = q.where(Task.created_at >= f.since)
    if f.until:
        q = q.where(Task.created_at < f.until)
    return q


def _job_counts(s: Session, task_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if task_ids:
        for task_id, state, n in s.execute(select(Job.task_id, Job.state, func.count())
                                           .where(Job.task_id.in_(task_ids))
                                           .group_by(Job.task_id, Job.state)):
            counts[task_id][state] = n
    return counts


def task_list(s: Session, f: Filters, before: int | None = None, limit: int = PAGE
              ) -> dict[str, Any]:
    tasks = list(s.scalars(_page(_task_filters(select(Task), f), Task.id, before, limit)))
    counts = _job_counts(s, [t.id for t in tasks[:limit]])
    return _paged([{**_row(t, TASK_COLS), "jobs": counts.get(t.id, {})} for t in tasks], limit)


def _history(s: Session, entity: str, entity_id: int, limit: int = 500) -> list[dict[str, Any]]:
    rows = s.scalars(select(StateHistory).where(StateHistory.entity == entity,
                                                StateHistory.entity_id == entity_id)
                     .order_by(StateHistory.id).limit(limit))
    return [{"from": h.from_state, "to": h.to_state, "attempt": h.attempt,
             "at": h.at.isoformat(), "actor": h.actor, "reason": h.reason} for h in rows]


def task_page(s: Session, task_id: int) -> dict[str, Any]:
    """A task: its jobs by state, the pieces (job indexes) done, its datasets and their
    files done, the data requests made for it, its errors grouped, its history."""
    task = s.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    jobs = _job_counts(s, [task_id]).get(task_id, {})
    pieces, done = s.execute(select(func.count(distinct(Job.job_index)),
                                    func.count(distinct(Job.job_index))
                                    .filter(Job.state == "finished"))
                             .where(Job.task_id == task_id)).one()
    lfns = (select(func.count(distinct(JobFile.lfn))).select_from(JobFile)
            .join(Job, Job.id == JobFile.job_id).where(Job.task_id == task_id,
                                                       JobFile.type == "in"))
    files_in = s.scalar(lfns) or 0
    files_done = s.scalar(lfns.where(Job.state == "finished")) or 0
    requests = [
        {"id": r.id, "name": r.name, "kind": r.kind, "state": r.state, "endpoint": ep,
         "files_done": r.files_done, "files_total": r.files_total, "bytes_done": r.bytes_done,
         "error": r.error, "created_at": _value(r.created_at)}
        for r, ep in s.execute(
            select(DataRequest, StorageEndpoint.name)
            .join(StorageEndpoint, StorageEndpoint.id == DataRequest.endpoint_id)
            .where(DataRequest.id.in_(select(JobFile.request_id).join(Job, Job.id == JobFile.job_id)
                                      .where(Job.task_id == task_id,
                                             JobFile.request_id.is_not(None))))
            .order_by(DataRequest.id).limit(200))]
    errors = [{"category": cat or "-", "diag": (diag or "")[:300], "count": n}
              for cat, diag, n in s.execute(
                  select(Job.error_category, Job.error_diag, func.count())
                  .where(Job.task_id == task_id, Job.state == "failed")
                  .group_by(Job.error_category, Job.error_diag)
                  .order_by(func.count().desc()).limit(50))]
    datasets = [*(task.input_datasets or []), task.output_dataset, task.log_dataset]
    ids = dict(s.execute(select((Dataset.scope + ":" + Dataset.name), Dataset.id)
                         .where((Dataset.scope + ":" + Dataset.name).in_(datasets)))
               .all())
    return {**_row(task, TASK_COLS), "transformation": task.transformation[:2000],
            "jobs": jobs, "pieces": pieces, "pieces_done": done,
            "files_in": files_in, "files_in_done": files_done,
            "datasets": [{"did": d, "id": ids.get(d)} for d in datasets if d],
            "requests": requests, "errors": errors, "history": _history(s, "task", task_id)}


# ------------------------------------------------------------------ jobs
def job_list(s: Session, f: Filters, before: int | None = None, limit: int = PAGE
             ) -> dict[str, Any]:
    q = select(Job, Queue.name).outerjoin(Queue, Queue.id == Job.queue_id)
    if f.state:
        q = q.where(Job.state == f.state)
    if f.task_id is not None:
        q = q.where(Job.task_id == f.task_id)
    if f.error:
        q = q.where(Job.error_category == f.error)
    if f.queue:
        q = q.where(Queue.name == f.queue)
    if f.site:
        q = q.where(Queue.site_id.in_(select(Site.id).where(Site.name == f.site)))
    if f.since:
        q = q.where(Job.created_at >= f.since)
    if f.until:
        q = q.where(Job.created_at < f.until)
    if f.owner or f.name:
        q = q.where(Job.task_id.in_(_task_filters(select(Task.id), Filters(owner=f.owner,
                                                                          name=f.name))))
    rows = s.execute(_page(q, Job.id, before, limit)).all()
    return _paged([{**_row(j, JOB_LIST_COLS), "queue": qn} for j, qn in rows], limit)


def job_page(s: Session, job_id: int) -> dict[str, Any]:
    """A job: this attempt and every other of its piece, its history, its files with the
    replicas they have, its metrics, its pilot and its error."""
    row = s.execute(select(Job, Queue.name, Site.name).outerjoin(Queue, Queue.id == Job.queue_id)
                    .outerjoin(Site, Site.id == Queue.site_id).where(Job.id == job_id)).first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    job, queue, site = row
    task_name = s.scalar(select(Task.name).where(Task.id == job.task_id))
    attempts = [{"id": i, "attempt": a, "state": st, "queue": qn, "error_category": ec}
                for i, a, st, qn, ec in s.execute(
                    select(Job.id, Job.attempt, Job.state, Queue.name, Job.error_category)
                    .outerjoin(Queue, Queue.id == Job.queue_id)
                    .where(Job.task_id == job.task_id, Job.job_index == job.job_index)
                    .order_by(Job.attempt).limit(100))]
    jfs = list(s.scalars(select(JobFile).where(JobFile.job_id == job_id).order_by(JobFile.id)
                         .limit(1000)))
    replicas: dict[int, list[dict[str, Any]]] = defaultdict(list)
    fids = [f.file_id for f in jfs if f.file_id is not None]
    by_name = {}  # inputs are named, not linked: find them by (scope, name)
    in_names = [(f.scope, f.lfn) for f in jfs if f.file_id is None]
    if in_names:
        for fid, scope, name in s.execute(select(File.id, File.scope, File.name).where(
                File.scope.in_({sc for sc, _ in in_names}),
                File.name.in_({n for _, n in in_names}))):
            by_name[(scope, name)] = fid
        fids += list(by_name.values())
    if fids:
        for fid, ep, state in s.execute(
                select(Replica.file_id, StorageEndpoint.name, Replica.state)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(Replica.file_id.in_(fids)).order_by(StorageEndpoint.name)):
            replicas[fid].append({"endpoint": ep, "state": state})
    files = []
    for f in jfs:
        fid = f.file_id if f.file_id is not None else by_name.get((f.scope, f.lfn))
        files.append({"type": f.type, "scope": f.scope, "lfn": f.lfn, "dataset": f.dataset,
                      "size": f.size, "adler32": f.adler32, "request_id": f.request_id,
                      "replicas": replicas.get(fid, []) if fid is not None else []})
    return {**_row(job, JOB_COLS), "queue": queue, "site": site, "task_name": task_name,
            "attempts": attempts, "files": files, "history": _history(s, "job", job_id),
            "has_log": any(f["type"] == "log" and f["replicas"] for f in files)}


# ------------------------------------------------------------------ sites and queues
def sites(s: Session, now: datetime | None = None) -> dict[str, Any]:
    """Every queue: its status, running and queued jobs, pilots heard from in the last
    hour, and its failure rate over the last 24 h; the config's version."""
    now = now or datetime.now(UTC)
    day, hour = now - timedelta(hours=24), now - timedelta(hours=1)
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for qid, state, n in s.execute(select(Job.queue_id, Job.state, func.count())
                                   .where(Job.state.in_(ACTIVE))
                                   .group_by(Job.queue_id, Job.state)):
        counts[qid][state] = n
    ended: dict[int, dict[str, int]] = defaultdict(dict)
    for qid, state, n in s.execute(select(Job.queue_id, Job.state, func.count())
                                   .where(Job.ended_at >= day,
                                          Job.state.in_(("finished", "failed")))
                                   .group_by(Job.queue_id, Job.state)):
        ended[qid][state] = n
    pilots = dict(s.execute(select(Job.queue_id, func.count(distinct(Job.pilot_id)))
                            .where(Job.heartbeat_at >= hour).group_by(Job.queue_id)).all())
    beats = dict(s.execute(select(Job.queue_id, func.max(Job.heartbeat_at))
                           .where(Job.heartbeat_at >= day).group_by(Job.queue_id)).all())
    queues = []
    for q, site in s.execute(select(Queue, Site.name).join(Site, Site.id == Queue.site_id)
                             .order_by(Site.name, Queue.name)):
        c, e = counts.get(q.id, {}), ended.get(q.id, {})
        n_end = e.get("finished", 0) + e.get("failed", 0)
        queues.append({
            "id": q.id, "name": q.name, "site": site, "status": q.status,
            "running": sum(c.get(st, 0) for st in JOB_WITH_PILOT),
            "queued": sum(c.get(st, 0) for st in JOB_QUEUED),
            "pilots_last_hour": pilots.get(q.id, 0),
            "last_heartbeat": _value(beats.get(q.id)),
            "finished_24h": e.get("finished", 0), "failed_24h": e.get("failed", 0),
            "failure_rate_24h": round(e.get("failed", 0) / n_end, 3) if n_end else None})
    version = s.scalar(select(func.max(ConfigChange.id))) or 0
    return {"config_version": version, "queues": queues}


def site_names(s: Session) -> list[str]:
    return list(s.scalars(select(Site.name).order_by(Site.name).limit(10000)))


def site_page(s: Session, name: str) -> dict[str, Any]:
    """A site: its queues (as in ``sites``), its endpoints, its errors of the last 24 h."""
    site = s.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"no site {name[:128]!r}")
    queues = [q for q in sites(s)["queues"] if q["site"] == site.name]
    endpoints = [{"name": e.name, "kind": e.kind, "url_prefix": e.url_prefix,
                  "quota_bytes": e.quota_bytes,
                  "replicas": s.scalar(select(func.count()).select_from(Replica)
                                       .where(Replica.endpoint_id == e.id,
                                              Replica.state == "available")) or 0}
                 for e in s.scalars(select(StorageEndpoint).where(StorageEndpoint.site_id ==
                                                                  site.id)
                                    .order_by(StorageEndpoint.name))]
    day = datetime.now(UTC) - timedelta(hours=24)
    qids = [q["id"] for q in queues]
    errors = [{"category": cat or "-", "count": n} for cat, n in s.execute(
        select(Job.error_category, func.count())
        .where(Job.queue_id.in_(qids), Job.ended_at >= day, Job.state == "failed")
        .group_by(Job.error_category).order_by(func.count().desc()))] if qids else []
    return {"name": site.name, "description": site.description, "queues": queues,
            "endpoints": endpoints, "errors_24h": errors}


def config_changes(s: Session, before: int | None = None, limit: int = PAGE
                   ) -> dict[str, Any]:
    """The site configuration's versions: who, when, from where, and the diff."""
    rows = s.scalars(_page(select(ConfigChange), ConfigChange.id, before, limit))
    return _paged([{"id": c.id, "at": _value(c.at), "actor": c.actor, "source": c.source,
                    "diff": c.diff} for c in rows], limit)


# ------------------------------------------------------------------ data
def datasets(s: Session, pattern: str | None = None, before: int | None = None,
             limit: int = PAGE) -> dict[str, Any]:
    q = select(Dataset)
    if pattern:
        q = q.where((Dataset.scope + ":" + Dataset.name)
                    .like(like_pattern(pattern), escape="\\"))
    rows = list(s.scalars(_page(q, Dataset.id, before, limit)))
    ids = [d.id for d in rows]
    nfiles = dict(s.execute(select(DatasetFile.dataset_id, func.count())
                            .where(DatasetFile.dataset_id.in_(ids))
                            .group_by(DatasetFile.dataset_id)).all()) if ids else {}
    return _paged([{"id": d.id, "did": d.did, "open": bool(d.is_open),
                    "created_at": _value(d.created_at), "files": nfiles.get(d.id, 0)}
                   for d in rows], limit)


def dataset_page(s: Session, dataset_id: int, before: int | None = None, limit: int = PAGE
                 ) -> dict[str, Any]:
    """A dataset's files (paged on file id) with the endpoints holding each, and its
    replica count per endpoint."""
    ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"no dataset {dataset_id}")
    q = select(File).join(DatasetFile, DatasetFile.file_id == File.id).where(
        DatasetFile.dataset_id == dataset_id)
    files = list(s.scalars(_page(q, File.id, before, limit)))
    reps: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if files:
        for fid, ep, state in s.execute(
                select(Replica.file_id, StorageEndpoint.name, Replica.state)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(Replica.file_id.in_([f.id for f in files]))):
            reps[fid].append({"endpoint": ep, "state": state})
    per_endpoint = {f"{ep} ({st})": n for ep, st, n in s.execute(
        select(StorageEndpoint.name, Replica.state, func.count())
        .join(Replica, Replica.endpoint_id == StorageEndpoint.id)
        .join(DatasetFile, DatasetFile.file_id == Replica.file_id)
        .where(DatasetFile.dataset_id == dataset_id)
        .group_by(StorageEndpoint.name, Replica.state).order_by(StorageEndpoint.name))}
    page = _paged([{"id": f.id, "scope": f.scope, "name": f.name, "size": f.size,
                    "adler32": f.adler32, "replicas": reps.get(f.id, [])} for f in files],
                  limit)
    return {"id": ds.id, "did": ds.did, "open": bool(ds.is_open),
            "replicas_per_endpoint": per_endpoint, "files": page}


def replicas_per_endpoint(s: Session) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for ep, kind, state, n, nbytes in s.execute(
            select(StorageEndpoint.name, StorageEndpoint.kind, Replica.state, func.count(),
                   func.coalesce(func.sum(File.size), 0))
            .join(Replica, Replica.endpoint_id == StorageEndpoint.id)
            .join(File, File.id == Replica.file_id)
            .group_by(StorageEndpoint.name, StorageEndpoint.kind, Replica.state)):
        entry = counts.setdefault(ep, {"endpoint": ep, "kind": kind, "states": {}, "bytes": 0})
        entry["states"][state] = n
        if state == "available":
            entry["bytes"] = int(nbytes)
    return [counts[k] for k in sorted(counts)]


def requests(s: Session, state: str | None = None, before: int | None = None,
             limit: int = PAGE) -> dict[str, Any]:
    q = select(DataRequest, StorageEndpoint.name).join(
        StorageEndpoint, StorageEndpoint.id == DataRequest.endpoint_id)
    if state:
        q = q.where(DataRequest.state == state)
    rows = s.execute(_page(q, DataRequest.id, before, limit)).all()
    return _paged([{"id": r.id, "name": r.name, "kind": r.kind, "ddm": r.ddm, "state": r.state,
                    "endpoint": ep, "activity": r.activity, "files_done": r.files_done,
                    "files_total": r.files_total, "bytes_done": r.bytes_done,
                    "attempts": r.attempts, "error": r.error,
                    "created_at": _value(r.created_at), "updated_at": _value(r.updated_at)}
                   for r, ep in rows], limit)


def ddm_events(s: Session, before: int | None = None, limit: int = PAGE) -> dict[str, Any]:
    """The DDM events received: dedup key, source, kind, when, and what they said."""
    rows = s.scalars(_page(select(DDMEvent), DDMEvent.id, before, limit))
    return _paged([{"id": e.id, "dedup_key": e.dedup_key, "source": e.source, "kind": e.kind,
                    "received_at": _value(e.received_at), "payload": e.payload}
                   for e in rows], limit)
