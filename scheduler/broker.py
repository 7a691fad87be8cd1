"""Broker: choose a queue for each defined job, then set it up (PanDA's brokerage + setupper).

Filters: the queue is ``online``; its cores, memory, walltime and disk fit the job;
its queued jobs are under ``max_queued``. Weight, PanDA's production formula::

    load  = (running + 1) / ((activated + assigned + starting + defined + 10)
                             * max(1, min(2, assigned / activated)))
    data  = (available_bytes + total_bytes) / (total_bytes * (n_missing / 100 + 1))
    weight = load * data

so a queue that holds the inputs is preferred twice over, until its backlog makes
an empty queue elsewhere worth a replication. Queues whose activated + starting
exceed twice their running (plus a floor) are skipped, as in PanDA. Set-up: a
job with every input on disk at its queue is ``activated`` at once with its
dispatch data; otherwise one replication request per (task, endpoint) bunch
carries the missing files (PanDA's ``_dis`` block) and the job is ``assigned``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select, update

from dawms.catalog.db import Database
from dawms.catalog.models import (
    File,
    Job,
    JobFile,
    Queue,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import TASK_FINAL, Entity, JobState, QueueStatus, TaskState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import DDM, Ran

from .config import SchedulerConfig
from .dispatch import available_disk_replicas, build_specs
from .setupper import link_requests, request_missing

log = logging.getLogger(__name__)
ACTOR = "scheduler:broker"
BACKLOG_FLOOR = 20  # activated+starting may exceed 2*running by this much before a cut


@dataclass
class QueueLoad:
    running: int = 0
    activated: int = 0
    assigned: int = 0
    starting: int = 0
    defined: int = 0

    @property
    def queued(self) -> int:
        return self.activated + self.assigned + self.defined

    def weight(self) -> float:
        ratio = self.assigned / self.activated if self.activated else float(self.assigned > 0)
        return (self.running + 1) / ((self.queued + self.starting + 10)
                                     * max(1.0, min(2.0, ratio)))


@dataclass
class Candidate:
    queue: Queue
    local_endpoints: list[int]
    load: QueueLoad = field(default_factory=QueueLoad)


def data_weight(sizes: dict[int, int], held: dict[int, list[int]],
                endpoints: list[int]) -> tuple[float, list[int]]:
    """PanDA's input-availability weight and the file ids missing at ``endpoints``."""
    total = sum(sizes.values())
    missing = [fid for fid in sizes if not set(held.get(fid, ())) & set(endpoints)]
    available = total - sum(sizes[f] for f in missing)
    if total == 0:
        return 1.0 / (len(missing) / 100 + 1), missing
    return (available + total) / (total * (len(missing) / 100 + 1)), missing


def fits(queue: Queue, job: Job) -> str:
    """Why ``job`` cannot run on ``queue`` ("" if it can)."""
    if queue.status != QueueStatus.ONLINE:
        return f"queue is {queue.status}"
    for need, have, what in ((job.cores, queue.cores, "cores"),
                             (job.memory_mb, queue.memory_mb, "memory_mb"),
                             (job.walltime_s, queue.max_walltime_s, "walltime_s"),
                             (job.disk_mb, queue.max_disk_mb, "disk_mb")):
        if need > have:
            return f"needs {what}={need}, queue has {have}"
    return ""


def _loads(session, queue_ids: list[int]) -> dict[int, QueueLoad]:
    loads = {q: QueueLoad() for q in queue_ids}
    rows = session.execute(select(Job.queue_id, Job.state, func.count())
                           .where(Job.queue_id.in_(queue_ids),
                                  Job.state.in_(["running", "activated", "assigned", "starting",
                                                 "sent", "defined", "waiting"]))
                           .group_by(Job.queue_id, Job.state))
    for qid, state, n in rows:
        load = loads[qid]
        attr = {"sent": "starting", "waiting": "defined"}.get(state, state)
        setattr(load, attr, getattr(load, attr) + n)
    return loads


def run_once(db: Database, ddm: DDM, cfg: SchedulerConfig,
             now: datetime | None = None) -> Ran:
    """Broker one bunch of defined (and waiting) jobs; returns how many got a queue.

    Full when it took ``cfg.broker_bunch`` jobs and moved at least one of them on (a
    queue, ``waiting``, or ``closed``): waiting jobs that still fit nowhere are taken
    again every run, so a bunch of only those must not count as full.
    """
    now = now or datetime.now(UTC)
    with db.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.state.in_([JobState.DEFINED,
                                                                JobState.WAITING]))
                              .order_by(Job.priority.desc(), Job.id).limit(cfg.broker_bunch)))
        if not jobs:
            return Ran(0, full=False)
        taken = len(jobs)
        jobs = _drop_jobs_of_ended_tasks(s, jobs, now)
        moved_on = taken - len(jobs)
        endpoints = {e.name: e for e in s.scalars(select(StorageEndpoint))}
        queues = [q for q in s.scalars(select(Queue).order_by(Queue.name))
                  if q.status == QueueStatus.ONLINE]
        loads = _loads(s, [q.id for q in queues])
        cands = [Candidate(q, [endpoints[n].id for n in q.read_endpoints
                               if n in endpoints and endpoints[n].kind == "disk"], loads[q.id])
                 for q in queues]
        inputs: dict[int, dict[int, int]] = defaultdict(dict)
        for job_id, file_id, size in s.execute(
                select(JobFile.job_id, JobFile.file_id, File.size)
                .join(File, File.id == JobFile.file_id)
                .where(JobFile.job_id.in_([j.id for j in jobs]), JobFile.type == "in")):
            inputs[job_id][file_id] = size
        held = available_disk_replicas(s, {f for files in inputs.values() for f in files})

        choice: dict[int, tuple[Candidate, list[int]]] = {}
        unplaced: dict[int, str] = {}
        for job in jobs:
            best: tuple[float, Candidate, list[int]] | None = None
            reasons = []
            hint = job.broker_hint or {}
            for c in cands:
                why = fits(c.queue, job)
                if not why and hint.get("queue") and c.queue.name != hint["queue"]:
                    why = f"the job was reassigned to {hint['queue']}"
                if not why and c.queue.name in hint.get("exclude", ()):
                    why = "excluded by rebrokerage"
                if not why and not c.local_endpoints:
                    why = "reads from no disk endpoint"
                if not why and c.load.queued >= c.queue.max_queued:
                    why = f"{c.load.queued} queued >= max_queued {c.queue.max_queued}"
                if not why and (c.load.activated + c.load.starting
                                > 2 * c.load.running + BACKLOG_FLOOR):
                    why = "too many activated and starting for its running"
                if why:
                    reasons.append(f"{c.queue.name}: {why}")
                    continue
                dweight, missing = data_weight(inputs[job.id], held, c.local_endpoints)
                w = c.load.weight() * dweight
                if best is None or w > best[0]:
                    best = (w, c, missing)
            if best is None:
                unplaced[job.id] = "no queue passes: " + "; ".join(reasons or ["no queues"])
                continue
            _, c, missing = best
            choice[job.id] = (c, missing)
            if missing:
                c.load.assigned += 1
            else:
                c.load.activated += 1
        _setup(s, ddm, cfg, jobs, choice, endpoints, now)
        by_reason = defaultdict(list)
        for job in jobs:
            if job.id in unplaced and job.state == JobState.DEFINED:
                by_reason[unplaced[job.id]].append(job.id)
        for reason, ids in by_reason.items():
            log.warning("%d jobs wait: %s", len(ids), reason)
            moved_on += len(transition_many(s, Entity.JOB, ids, JobState.WAITING,
                                            expected=JobState.DEFINED, actor=ACTOR,
                                            reason=reason, now=now))
        _tasks_ready(s, {j.task_id for j in jobs}, now)
        moved_on += len(choice)
        return Ran(len(choice), full=taken >= cfg.broker_bunch and moved_on > 0)


def _drop_jobs_of_ended_tasks(s, jobs: list[Job], now: datetime) -> list[Job]:
    """Jobs whose task ended (e.g. aborted while they were being created) are closed."""
    ended = set(s.scalars(select(Task.id).where(Task.id.in_({j.task_id for j in jobs}),
                                                Task.state.in_(list(TASK_FINAL)))))
    if not ended:
        return jobs
    by_state: dict[str, list[int]] = defaultdict(list)
    for j in jobs:
        if j.task_id in ended:
            by_state[j.state].append(j.id)
    for state, ids in by_state.items():
        transition_many(s, Entity.JOB, ids, JobState.CLOSED, expected=state, actor=ACTOR,
                        reason="its task has ended", now=now)
    return [j for j in jobs if j.task_id not in ended]


def _setup(s, ddm: DDM, cfg: SchedulerConfig, jobs: list[Job],
           choice: dict[int, tuple[Candidate, list[int]]],
           endpoints: dict[str, StorageEndpoint], now: datetime) -> None:
    """Activate the jobs with all inputs local; request the rest and assign the jobs."""
    by_id = {j.id: j for j in jobs}
    groups: dict[tuple[str, int, JobState], list[int]] = defaultdict(list)
    bunches: dict[tuple[int, int], set[int]] = defaultdict(set)
    for job_id, (c, missing) in choice.items():
        job = by_id[job_id]
        target = JobState.ASSIGNED if missing else JobState.ACTIVATED
        groups[(job.state, c.queue.id, target)].append(job_id)
        if missing:
            bunches[(job.task_id, c.local_endpoints[0])].update(missing)
    file_request = request_missing(s, ddm, bunches)
    for (state, queue_id, target), ids in groups.items():
        moved = transition_many(s, Entity.JOB, ids, target, expected=state, actor=ACTOR,
                                reason="inputs at queue" if target == JobState.ACTIVATED
                                else "inputs requested", values={"queue_id": queue_id},
                                now=now)
        if target == JobState.ACTIVATED:
            specs = build_specs(s, {i: queue_id for i in moved}, ddm, cfg.heartbeat_s)
            if specs:
                s.execute(update(Job), [{"id": i, "spec": sp} for i, sp in specs.items()])
        else:
            link_requests(s, [(job_id, fid, file_request[(fid, choice[job_id][0]
                                                           .local_endpoints[0])])
                              for job_id in moved for fid in choice[job_id][1]])


def _tasks_ready(s, task_ids: set[int], now: datetime) -> None:
    """A defined task whose jobs all have a queue is ready."""
    for task_id in task_ids:
        left = s.scalar(select(func.count()).select_from(Job).where(
            Job.task_id == task_id, Job.state.in_([JobState.DEFINED, JobState.WAITING])))
        if not left:
            transition_many(s, Entity.TASK, [task_id], TaskState.READY,
                            expected=TaskState.DEFINED, actor=ACTOR, reason="all jobs brokered",
                            now=now)

