"""Activator: ``assigned -> activated`` the moment every input is on disk at the site.

Run at once by the event of a data request ending (``request_ids`` given) and
periodically over all assigned jobs as the safety net. Only an ``available``
replica on a *disk* endpoint the job's queue reads from counts (never tape).
A job whose request failed and whose inputs are still missing fails (category
``ddm``) and is retried by policy. A missing file that no open request is
bringing (none was made, or one ended "done" without it arriving) is requested
again, so no job waits on nothing; the watcher's ``assigned`` timeout bounds it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Job, JobFile, Queue, StorageEndpoint
from dawms.catalog.states import Entity, JobState, RequestState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import DDM, Ran

from .config import SchedulerConfig
from .dispatch import available_disk_replicas, store_specs
from .retry import retry_failed
from .setupper import link_requests, request_missing

ACTOR = "scheduler:activator"
DEAD = (RequestState.FAILED, RequestState.CANCELLED)


def run_once(db: Database, ddm: DDM, cfg: SchedulerConfig, now: datetime | None = None,
             request_ids: list[int] | None = None) -> Ran:
    """Activate the assigned jobs whose inputs arrived; returns how many.

    Full when it looked at ``cfg.activator_bunch`` jobs and activated or failed some:
    jobs still waiting for their inputs are looked at again every run.
    """
    now = now or datetime.now(UTC)
    with db.session() as s:
        query = select(Job.id, Job.queue_id, Job.task_id).where(Job.state == JobState.ASSIGNED)
        if request_ids:
            query = query.where(Job.id.in_(select(JobFile.job_id)
                                           .where(JobFile.request_id.in_(request_ids))))
        rows = s.execute(query.order_by(Job.id).limit(cfg.activator_bunch)).all()
        if not rows:
            return Ran(0, full=False)
        jobs = {job_id: queue_id for job_id, queue_id, _ in rows}
        task_of = {job_id: task_id for job_id, _, task_id in rows}
        endpoints = {e.name: e for e in s.scalars(select(StorageEndpoint))}
        local = {q.id: [endpoints[n].id for n in q.read_endpoints
                        if n in endpoints and endpoints[n].kind == "disk"]
                 for q in s.scalars(select(Queue).where(Queue.id.in_(set(jobs.values()))))}
        inputs: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        for job_id, file_id, req in s.execute(
                select(JobFile.job_id, JobFile.file_id, JobFile.request_id)
                .where(JobFile.job_id.in_(list(jobs)), JobFile.type == "in")):
            inputs[job_id].append((file_id, req))
        held = available_disk_replicas(s, {f for rows in inputs.values() for f, _ in rows})
        request_state = dict(s.execute(select(DataRequest.id, DataRequest.state).where(
            DataRequest.id.in_({r for rows in inputs.values() for _, r in rows if r}))).all())
        ready: dict[int, int] = {}
        doomed: list[int] = []
        # missing files no open request is bringing (none made, or one that ended
        # "done" without the file arriving): ask again
        orphans: dict[tuple[int, int], set[int]] = defaultdict(set)
        orphan_jobs: list[tuple[int, int, int]] = []
        for job_id, files in inputs.items():
            mine = local[jobs[job_id]]
            missing = [(f, r) for f, r in files if not set(held.get(f, ())) & set(mine)]
            if not missing:
                ready[job_id] = jobs[job_id]
            elif any(request_state.get(r) in DEAD for _, r in missing):
                doomed.append(job_id)
            else:
                for f, r in missing:
                    if request_state.get(r) != RequestState.REQUESTED and mine:
                        orphans[(task_of[job_id], mine[0])].add(f)
                        orphan_jobs.append((job_id, f, mine[0]))
        if orphans:
            file_request = request_missing(s, ddm, orphans)
            link_requests(s, [(j, f, file_request[(f, ep)]) for j, f, ep in orphan_jobs])
        moved = transition_many(s, Entity.JOB, list(ready), JobState.ACTIVATED,
                                expected=JobState.ASSIGNED, actor=ACTOR,
                                reason="all inputs on disk at the site", now=now)
        store_specs(s, {i: ready[i] for i in moved}, ddm, cfg.heartbeat_s)
        failed = transition_many(s, Entity.JOB, doomed, JobState.FAILED,
                                 expected=JobState.ASSIGNED, actor=ACTOR,
                                 reason="the data request for its inputs failed",
                                 values={"error_category": "ddm",
                                         "error_diag": "input replication failed"}, now=now)
        retry_failed(s, failed, now)
        return Ran(len(moved), full=len(rows) >= cfg.activator_bunch
                   and len(moved) + len(failed) > 0)
