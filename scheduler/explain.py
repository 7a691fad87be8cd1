"""Why isn't it running? One answer across every layer the catalog holds.

The question users of every system in this field ask most. dawms keeps task, job,
queue, data request, staging request and pilot in one catalog, so it can walk the
chain: a job's state names the layer that holds it (broker, data, carousel,
dispatch, pilot), and that layer is asked, now, what blocks it, since when, and
what would unblock it. The broker's verdicts are re-evaluated against the queues
as they stand (not a stale log line); data requests say how many files are still
missing, how long since one arrived and each file's last failure; staging requests
say their place in the carousel queue of their tape and whether its quota is full.

Read-only: every function here only selects. ``explain_job`` answers for one
job; ``explain_task`` groups its open jobs by what holds them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from dawms.carousel.config import TapeLimits
from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    File,
    Job,
    JobFile,
    Queue,
    StagingFile,
    StagingRequest,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import (
    JOB_FINAL,
    JOB_WITH_PILOT,
    STAGING_OPEN,
    TASK_FINAL,
    JobState,
    QueueStatus,
    RequestState,
    StagingFileState,
)

from .broker import _candidate, _loads, dynamic_reason, static_reason
from .config import SchedulerConfig
from .dispatch import available_disk_replicas
from .stuck import last_failures

MAX_TASK_JOBS = 500  # open jobs of a task explained one by one; the rest are counted


@dataclass
class Explanation:
    """What holds a job now: the layer, since when, why, and what would unblock it."""

    job_id: int
    task_id: int
    attempt: int
    state: str
    since: datetime
    layer: str  # broker | data | carousel | dispatch | pilot | done
    reason: str  # one line a user can read
    unblock: str  # what would let it move on
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = self.since.isoformat()
        return out


def ago(seconds: float) -> str:
    """``95`` -> ``1 min``; ``20000`` -> ``5 h``: the unit a person would say."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def explain_job(s: Session, job_id: int, now: datetime,
                cfg: SchedulerConfig | None = None) -> Explanation:
    """Why job ``job_id`` is where it is; LookupError if there is no such job."""
    cfg = cfg or SchedulerConfig()
    job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    e = Explanation(job.id, job.task_id, job.attempt, job.state, job.state_changed_at,
                    "", "", "")
    handler = _HANDLERS.get(JobState(job.state), _final)
    handler(s, job, e, now, cfg)
    return e


# ------------------------------------------------------------------ broker
def queue_verdicts(s: Session, job: Job, cfg: SchedulerConfig, now: datetime) -> dict[str, str]:
    """Every queue's verdict on ``job`` as the broker gives it now ("" = it fits): the
    broker's own ``static_reason`` and ``dynamic_reason`` on the queues' current loads."""
    endpoints = {e.name: e for e in s.scalars(select(StorageEndpoint))}
    queues = list(s.scalars(select(Queue).order_by(Queue.name)))
    loads = _loads(s, [q.id for q in queues])
    task = s.get(Task, job.task_id)
    tags = tuple(sorted(set((task.resources or {}).get("software") or ()))) if task else ()
    hint = job.broker_hint or {}
    out: dict[str, str] = {}
    for q in queues:
        c = _candidate(q, endpoints, loads[q.id])
        out[q.name] = static_reason(c, job, tags, cfg, now) or dynamic_reason(c, hint)
    return out


def _unblock_for(verdicts: dict[str, str]) -> str:
    hints = []
    for why in verdicts.values():
        if why.startswith("queue is"):
            hints.append("an operator sets a queue online in the sites file")
        elif why.startswith("needs "):
            hints.append("a queue with more resources, or a task asking for less")
        elif why.startswith("lacks software"):
            hints.append("a queue that advertises the software")
        elif "blacklisted" in why:
            hints.append("an operator lifts the endpoint's blacklisting")
        elif "no pilot asked" in why:
            hints.append("a pilot of the queue asks for work")
        elif "max_queued" in why or "running" in why:
            hints.append("a queue's backlog drains")
        elif "reassigned" in why or "excluded" in why:
            hints.append("`dawms job reassign` to another queue")
    return "; or ".join(dict.fromkeys(hints)) or "a queue that can take it"


def _defined(s: Session, job: Job, e: Explanation, now: datetime,
             cfg: SchedulerConfig) -> None:
    ahead = s.scalar(select(func.count()).select_from(Job).where(
        Job.state.in_([JobState.DEFINED, JobState.WAITING]),
        or_(Job.priority > job.priority, and_(Job.priority == job.priority, Job.id < job.id))))
    e.layer = "broker"
    e.reason = (f"defined: not brokered yet, {ahead:,} jobs ahead of it in the broker's "
                f"queue (it takes {cfg.broker_bunch} per cycle)")
    e.unblock = "the broker's next cycles"
    e.details = {"ahead": ahead}


def _waiting(s: Session, job: Job, e: Explanation, now: datetime,
             cfg: SchedulerConfig) -> None:
    verdicts = queue_verdicts(s, job, cfg, now)
    fitting = [q for q, why in verdicts.items() if not why]
    last = s.scalar(select(StateHistory.reason).where(
        StateHistory.entity == "job", StateHistory.entity_id == job.id,
        StateHistory.to_state == JobState.WAITING).order_by(StateHistory.id.desc()).limit(1))
    deadline = job.state_changed_at + timedelta(seconds=cfg.waiting_timeout_s)
    e.layer = "broker"
    if fitting:
        e.reason = (f"waiting: {', '.join(fitting)} can take it now; the broker places it "
                    "at its next cycle")
        e.unblock = "the broker's next cycle"
    else:
        e.reason = "waiting: no queue passes (" + "; ".join(
            f"{q}: {why}" for q, why in verdicts.items()) + ")" if verdicts else \
            "waiting: no queues are defined"
        e.unblock = _unblock_for(verdicts)
    e.details = {"queues": verdicts, "broker_said": last or "",
                 "broker_reasons": job.broker_reasons, "fails_at": deadline.isoformat()}


# ------------------------------------------------------------------ data
def _endpoint_names(s: Session, ids: set[int]) -> dict[int, str]:
    return dict(s.execute(select(StorageEndpoint.id, StorageEndpoint.name)
                          .where(StorageEndpoint.id.in_(ids))).all()) if ids else {}


def _local_endpoints(s: Session, queue: Queue | None) -> list[int]:
    if queue is None:
        return []
    eps = {e.name: e for e in s.scalars(select(StorageEndpoint).where(
        StorageEndpoint.name.in_(queue.read_endpoints)))}
    return [eps[n].id for n in queue.read_endpoints if n in eps and eps[n].kind == "disk"]


def _assigned(s: Session, job: Job, e: Explanation, now: datetime,
              cfg: SchedulerConfig) -> None:
    queue = s.get(Queue, job.queue_id) if job.queue_id else None
    local = _local_endpoints(s, queue)
    inputs = s.execute(select(JobFile.file_id, JobFile.request_id, JobFile.scope, JobFile.lfn)
                       .where(JobFile.job_id == job.id, JobFile.type == "in")).all()
    held = available_disk_replicas(s, {f for f, *_ in inputs})
    missing = [(f, r, f"{sc}:{n}") for f, r, sc, n in inputs
               if not set(held.get(f, ())) & set(local)]
    e.layer = "data"
    dest = _endpoint_names(s, set(local[:1])).get(local[0], "?") if local else "?"
    if not missing:
        e.reason = (f"assigned: every input is on disk at {dest}; the activator "
                    "activates it at its next run")
        e.unblock = "the activator's next run"
        return
    reqs = {r.id: r for r in s.scalars(select(DataRequest).where(
        DataRequest.id.in_({r for _, r, _ in missing if r})))}
    parts, details = [], []
    for rid, req in sorted(reqs.items()):
        n = sum(1 for _, r, _ in missing if r == rid)
        since = req.progress_at or req.created_at
        idle = (now - since).total_seconds() if req.files_done <= req.progress_files else 0
        rule = f" (rule {req.external_id[:8]}…)" if req.external_id and req.ddm == "rucio" \
            else ""
        text = f"request {rid}{rule} {req.state}"
        if req.state == RequestState.REQUESTED:
            text += (f", {req.files_done} of {req.files_total} files done, "
                     f"{ago(idle)} without progress")
            if req.stuck_count:
                text += f", stuck {req.stuck_count} of {cfg.stuck_max}"
        elif req.error:
            text += f": {req.error[:300]}"
        fails = last_failures(s, rid, 3)
        if fails:
            text += f", last failure on file {fails[0][0]}: {fails[0][1][:300]}"
        parts.append(text)
        details.append({"request_id": rid, "external_id": req.external_id, "state": req.state,
                        "missing_here": n, "files_done": req.files_done,
                        "files_total": req.files_total, "idle_s": int(idle),
                        "stuck_count": req.stuck_count,
                        "last_failures": [{"file": f, "error": err} for f, err in fails]})
    orphans = [lfn for _, r, lfn in missing if r not in reqs]
    if orphans:
        parts.append(f"{len(orphans)} with no request yet (the activator asks again)")
    e.reason = (f"assigned: {len(missing)} of {len(inputs)} input files still copying to "
                f"{dest}: " + "; ".join(parts))
    e.unblock = (f"the files arrive (a DDM callback activates it at once); a request with "
                 f"no progress for {ago(cfg.stuck_after_s)} counts as stuck and after "
                 f"{cfg.stuck_max} such periods its jobs are rebrokered")
    e.details = {"destination": dest, "missing": [lfn for _, _, lfn in missing][:50],
                 "requests": details}


# ------------------------------------------------------------------ carousel
def staging_position(s: Session, req: StagingRequest) -> dict[str, Any]:
    """The request's place in its tape's carousel queue and the tape's quota use."""
    ahead = s.scalar(select(func.count()).select_from(StagingRequest).where(
        StagingRequest.source_id == req.source_id,
        StagingRequest.state.in_(list(STAGING_OPEN)), StagingRequest.id != req.id,
        or_(StagingRequest.priority > req.priority,
            and_(StagingRequest.priority == req.priority,
                 StagingRequest.created_at < req.created_at),
            and_(StagingRequest.priority == req.priority,
                 StagingRequest.created_at == req.created_at, StagingRequest.id < req.id))))
    tape = s.get(StorageEndpoint, req.source_id)
    limits = TapeLimits.of(tape)
    staging = s.scalar(select(func.count()).select_from(StagingFile)
                       .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
                       .where(StagingRequest.source_id == req.source_id,
                              StagingFile.state == StagingFileState.STAGING)) or 0
    oldest = s.scalar(select(StagingRequest.id).join(
        StagingFile, StagingFile.request_id == StagingRequest.id).where(
        StagingRequest.source_id == req.source_id,
        StagingFile.state == StagingFileState.STAGING).order_by(StagingRequest.created_at,
                                                               StagingRequest.id).limit(1))
    return {"tape": tape.name, "position": ahead + 1, "staging_files": staging,
            "max_staging_files": limits.staging_files,
            "quota_full": staging >= limits.staging_files, "oldest_staging_request": oldest}


def _throttled(s: Session, job: Job, e: Explanation, now: datetime,
               cfg: SchedulerConfig) -> None:
    rows = s.execute(select(StagingFile.state, StagingRequest)
                     .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
                     .join(JobFile, JobFile.file_id == StagingFile.file_id)
                     .where(JobFile.job_id == job.id, JobFile.type == "in",
                            StagingRequest.task_id == job.task_id)).all()
    if not rows:
        e.layer = "broker"
        e.reason = "throttled: held back by a share or priority cap"
        e.unblock = "the share's running jobs drop below its cap"
        return
    e.layer = "carousel"
    waiting = Counter(st for st, _ in rows if st != StagingFileState.STAGED)
    reqs = {r.id: r for _, r in rows}
    parts, details = [], []
    for rid, req in sorted(reqs.items()):
        pos = staging_position(s, req)
        if req.state == "queued":
            text = f"request {rid} queued: position {pos['position']} in the carousel queue " \
                   f"for {pos['tape']}"
        else:
            text = (f"request {rid} {req.state}: {req.files_staged} of {req.files_total} "
                    f"files on disk, position {pos['position']} for {pos['tape']}")
        if pos["quota_full"] and req.state in STAGING_OPEN:
            text += (f"; tape quota full ({pos['staging_files']} of "
                     f"{pos['max_staging_files']} files staging) until request "
                     f"{pos['oldest_staging_request']} frees room")
        if req.files_lost:
            text += f"; {req.files_lost} files lost on tape"
        parts.append(text)
        details.append({"request_id": rid, "state": req.state, **pos})
    n = sum(waiting.values())
    e.reason = (f"staging: {n} of {len(rows)} input files still on tape "
                f"({', '.join(f'{k} {v}' for k, v in sorted(waiting.items()))}): "
                + "; ".join(parts)) if n else \
        "staging: every input is on the disk buffer; the carousel releases the job next run"
    e.since = min((r.created_at for r in reqs.values()), default=e.since)
    e.unblock = "its own files reach the disk buffer (the rest of the dataset need not)"
    e.details = {"staging_requests": details}


# ------------------------------------------------------------------ dispatch, pilot
def last_pilot_seen(s: Session, queue_id: int) -> datetime | None:
    """The last word from any pilot of the queue (a heartbeat or a claim)."""
    return s.scalar(select(func.max(func.coalesce(Job.heartbeat_at, Job.started_at)))
                    .where(Job.queue_id == queue_id))


def _activated(s: Session, job: Job, e: Explanation, now: datetime,
               cfg: SchedulerConfig) -> None:
    queue = s.get(Queue, job.queue_id)
    ahead = s.scalar(select(func.count()).select_from(Job).where(
        Job.queue_id == job.queue_id, Job.state == JobState.ACTIVATED,
        or_(Job.priority > job.priority, and_(Job.priority == job.priority, Job.id < job.id))))
    seen = last_pilot_seen(s, job.queue_id)
    seen_text = f"last pilot seen {ago((now - seen).total_seconds())} ago" if seen \
        else "no pilot seen yet"
    e.layer = "dispatch"
    e.reason = (f"activated: {ahead:,} jobs of higher priority ahead on {queue.name}, "
                f"{seen_text}")
    if queue.status == QueueStatus.OFFLINE:
        e.reason += f"; {queue.name} is offline: its pilots get no jobs"
        e.unblock = "the queue comes back online, or `dawms job reassign`"
    else:
        e.unblock = f"a pilot of {queue.name} asks for work"
    e.details = {"queue": queue.name, "queue_status": queue.status, "ahead": ahead,
                 "last_pilot_seen": seen.isoformat() if seen else None}


def _with_pilot(s: Session, job: Job, e: Explanation, now: datetime,
                cfg: SchedulerConfig) -> None:
    queue = s.get(Queue, job.queue_id)
    beat = job.heartbeat_at or job.state_changed_at
    timeout = cfg.sent_timeout_s if job.state == JobState.SENT else cfg.heartbeat_timeout_s
    e.layer = "pilot"
    e.reason = (f"{job.state} on {queue.name} with pilot {job.pilot_id}, last heartbeat "
                f"{ago((now - beat).total_seconds())} ago")
    if job.command:
        e.reason += f"; command {job.command!r} waits for the pilot"
    e.unblock = (f"the pilot reports; with no word for {ago(timeout)} the job is failed "
                 "(lost_heartbeat) and retried")
    e.details = {"queue": queue.name, "pilot_id": job.pilot_id,
                 "last_heartbeat": beat.isoformat(), "command": job.command}


def _final(s: Session, job: Job, e: Explanation, now: datetime, cfg: SchedulerConfig) -> None:
    e.layer = "done"
    nxt = s.execute(select(Job.id, Job.attempt, Job.state).where(
        Job.task_id == job.task_id, Job.job_index == job.job_index, Job.id > job.id)
        .order_by(Job.id.desc()).limit(1)).first()
    why = s.scalar(select(StateHistory.reason).where(
        StateHistory.entity == "job", StateHistory.entity_id == job.id,
        StateHistory.to_state == job.state).order_by(StateHistory.id.desc()).limit(1)) or ""
    if job.state == JobState.FINISHED:
        e.reason = "finished"
    elif job.state == JobState.FAILED:
        e.reason = f"failed ({job.error_category or 'unclassified'}): " \
                   f"{(job.error_diag or why)[:500]}"
    else:
        e.reason = f"{job.state}: {why[:500]}"
    e.unblock = "nothing: this attempt has ended"
    if nxt:
        e.reason += f"; its piece continues as job {nxt.id} (attempt {nxt.attempt}, " \
                    f"{nxt.state})"
        e.details = {"successor": nxt.id}
    elif job.state != JobState.FINISHED:
        e.unblock = "`dawms task retry` reruns what failed, if the task allows"


_HANDLERS = {JobState.DEFINED: _defined, JobState.WAITING: _waiting,
             JobState.ASSIGNED: _assigned, JobState.THROTTLED: _throttled,
             JobState.ACTIVATED: _activated,
             **{st: _with_pilot for st in JOB_WITH_PILOT}}


# ------------------------------------------------------------------ task
def explain_task(s: Session, task_id: int, now: datetime,
                 cfg: SchedulerConfig | None = None) -> dict[str, Any]:
    """What holds task ``task_id``: its open jobs grouped by layer and reason."""
    from .predict import task_prediction

    cfg = cfg or SchedulerConfig()
    task = s.get(Task, task_id)
    if task is None:
        raise LookupError(f"no task {task_id}")
    counts = dict(s.execute(select(Job.state, func.count()).where(Job.task_id == task_id)
                            .group_by(Job.state)).all())
    open_ids = list(s.scalars(select(Job.id).where(
        Job.task_id == task_id, Job.state.not_in(list(JOB_FINAL)))
        .order_by(Job.priority.desc(), Job.id).limit(MAX_TASK_JOBS)))
    groups: dict[tuple[str, str], list[Explanation]] = defaultdict(list)
    for jid in open_ids:
        ex = explain_job(s, jid, now, cfg)
        groups[(ex.layer, _shape(ex))].append(ex)
    blockers = []
    for (layer, _), exs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = exs[0]
        blockers.append({"layer": layer, "jobs": len(exs), "job_ids": [x.job_id for x in exs][:20],
                         "example": first.reason, "since": min(x.since for x in exs).isoformat(),
                         "unblock": first.unblock})
    staging = [{"request_id": r.id, "dataset": r.dataset, "state": r.state,
                "files": f"{r.files_staged}/{r.files_total}", **staging_position(s, r)}
               for r in s.scalars(select(StagingRequest).where(
                   StagingRequest.task_id == task_id,
                   StagingRequest.state.in_(list(STAGING_OPEN))).order_by(StagingRequest.id))]
    since = s.scalar(select(StateHistory.at).where(
        StateHistory.entity == "task", StateHistory.entity_id == task_id)
        .order_by(StateHistory.id.desc()).limit(1)) or task.updated_at
    if task.state in TASK_FINAL:
        summary = f"{task.state}" + (f": {task.error}" if task.error else "")
    elif not blockers:
        summary = f"{task.state}: no open job (the finisher ends the task at its next run)"
        if task.state == "registered":
            summary = "registered: the refiner splits it into jobs at its next run"
    else:
        top = blockers[0]
        summary = f"{task.state}: {top['jobs']} jobs held in {top['layer']}: {top['example']}"
    return {"task_id": task_id, "state": task.state, "since": since.isoformat(),
            "summary": summary, "jobs": counts, "open_jobs_explained": len(open_ids),
            "blockers": blockers, "staging": staging,
            "prediction": task_prediction(s, task_id, now)}


def _shape(e: Explanation) -> str:
    """An explanation's reason with its numbers taken out, to group alike jobs."""
    out, digit = [], False
    for ch in e.reason:
        if ch.isdigit() or (digit and ch in ",."):
            if not digit:
                out.append("#")
            digit = True
        else:
            digit = False
            out.append(ch)
    return "".join(out)


def request_file_errors(s: Session, request_id: int) -> list[dict[str, Any]]:
    """Every file of a data request that has not arrived, with its last failure."""
    rows = s.execute(select(File.scope, File.name, DataRequestFile.error,
                            DataRequestFile.failures, DataRequestFile.failed_at)
                     .join(File, File.id == DataRequestFile.file_id)
                     .where(DataRequestFile.request_id == request_id,
                            DataRequestFile.done == 0).order_by(File.name))
    return [{"file": f"{sc}:{n}", "error": err, "failures": k,
             "failed_at": at.isoformat() if at else None} for sc, n, err, k, at in rows]
