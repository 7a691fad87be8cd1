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
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update

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
from .dispatch import available_disk_replicas, store_specs
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
    local_set: set[int] = field(default_factory=set)
    blacklisted: list[str] = field(default_factory=list)


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


def static_reason(c: Candidate, job: Job, software: tuple[str, ...], cfg: SchedulerConfig,
                  now: datetime) -> str:
    """Why ``job`` can never run on ``c`` as things stand, whatever the queue's load."""
    if why := fits(c.queue, job):
        return why
    if missing := [t for t in software if t not in (c.queue.software or ())]:
        return f"lacks software {', '.join(missing[:5])}"
    if c.blacklisted:
        return f"endpoint {', '.join(c.blacklisted)} is blacklisted"
    if not c.local_endpoints:
        return "reads from no disk endpoint"
    if cfg.pilot_seen_s > 0:
        seen = c.queue.last_pilot_at
        if seen is None or (now - seen).total_seconds() > cfg.pilot_seen_s:
            return f"no pilot asked for jobs within {cfg.pilot_seen_s} s"
    return ""


def dynamic_reason(c: Candidate, hint: dict[str, Any]) -> str:
    """Why ``c`` cannot take one more job now (its hint, its depth, its backlog)."""
    if hint.get("queue") and c.queue.name != hint["queue"]:
        return f"the job was reassigned to {hint['queue']}"
    if c.queue.name in hint.get("exclude", ()):
        return "excluded by rebrokerage"
    if c.load.queued >= c.queue.max_queued:
        return f"{c.load.queued} queued >= max_queued {c.queue.max_queued}"
    if c.load.activated + c.load.starting > 2 * c.load.running + BACKLOG_FLOOR:
        return "too many activated and starting for its running"
    return ""


def pick(scored: list[tuple[float, Candidate, list[int]]], cfg: SchedulerConfig,
         rng: random.Random) -> tuple[float, Candidate, list[int]]:
    """Among the best few (``broker_top_n`` within ``broker_spread`` of the best), one
    at random in proportion to its weight, so equal queues are not herded onto one."""
    scored.sort(key=lambda x: (-x[0], x[1].queue.name))
    best = scored[0][0]
    few = [x for x in scored[:cfg.broker_top_n] if x[0] >= best * (1 - cfg.broker_spread)]
    if len(few) == 1:
        return few[0]
    point = rng.random() * sum(x[0] for x in few)
    for x in few:
        point -= x[0]
        if point <= 0:
            return x
    return few[-1]


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
             now: datetime | None = None, rng: random.Random | None = None) -> Ran:
    """Broker one bunch of defined (and waiting) jobs; returns how many got a queue.

    Full when it took ``cfg.broker_bunch`` jobs and moved at least one of them on (a
    queue, ``waiting``, or ``closed``): waiting jobs that still fit nowhere are taken
    again every run, so a bunch of only those must not count as full. Each job it
    cannot place keeps the reason every queue gave in ``job.broker_reasons``.
    """
    now = now or datetime.now(UTC)
    rng = rng or _RNG
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
        queues = list(s.scalars(select(Queue).order_by(Queue.name)))
        loads = _loads(s, [q.id for q in queues if q.status == QueueStatus.ONLINE])
        cands = [_candidate(q, endpoints, loads.get(q.id, QueueLoad())) for q in queues]
        software = {t: tuple(sorted(set(r.get("software") or ())))
                    for t, r in s.execute(select(Task.id, Task.resources)
                                          .where(Task.id.in_({j.task_id for j in jobs})))}
        inputs: dict[int, dict[int, int]] = defaultdict(dict)
        for job_id, file_id, size in s.execute(
                select(JobFile.job_id, JobFile.file_id, File.size)
                .join(File, File.id == JobFile.file_id)
                .where(JobFile.job_id.in_([j.id for j in jobs]), JobFile.type == "in")):
            inputs[job_id][file_id] = size
        held = available_disk_replicas(s, {f for files in inputs.values() for f in files})

        choice: dict[int, tuple[Candidate, list[int]]] = {}
        unplaced: dict[int, dict[str, str]] = {}
        statics: dict[tuple, list[tuple[Candidate, str]]] = {}
        for job in jobs:
            tags = software.get(job.task_id, ())
            key = (job.cores, job.memory_mb, job.walltime_s, job.disk_mb, tags)
            if key not in statics:
                statics[key] = [(c, static_reason(c, job, tags, cfg, now)) for c in cands]
            hint = job.broker_hint or {}
            files = inputs[job.id]
            where = {e for f in files for e in held.get(f, ())}
            reasons: dict[str, str] = {}
            scored: list[tuple[float, Candidate, list[int]]] = []
            for c, why in statics[key]:
                why = why or dynamic_reason(c, hint)
                if why:
                    reasons[c.queue.name] = why
                    continue
                if where & c.local_set:
                    dweight, missing = data_weight(files, held, c.local_endpoints)
                else:  # nothing of it there: every file missing
                    dweight, missing = 1.0 / (len(files) / 100 + 1), list(files)
                scored.append((c.load.weight() * dweight, c, missing))
            if not scored:
                unplaced[job.id] = reasons or {"": "no queues"}
                continue
            _, c, missing = pick(scored, cfg, rng)
            choice[job.id] = (c, missing)
            if missing:
                c.load.assigned += 1
            else:
                c.load.activated += 1
        _setup(s, ddm, cfg, jobs, choice, endpoints, now)
        moved_on += _keep_reasons(s, jobs, unplaced, now)
        _tasks_ready(s, {j.task_id for j in jobs}, now)
        moved_on += len(choice)
        return Ran(len(choice), full=taken >= cfg.broker_bunch and moved_on > 0)


_RNG = random.Random()


def _candidate(q: Queue, endpoints: dict[str, StorageEndpoint], load: QueueLoad) -> Candidate:
    local = [endpoints[n].id for n in q.read_endpoints
             if n in endpoints and endpoints[n].kind == "disk" and not endpoints[n].blacklisted]
    bad = sorted(n for n in {*q.read_endpoints, q.write_endpoint}
                 if n in endpoints and endpoints[n].blacklisted)
    return Candidate(q, local, load, set(local), bad)


def summary(reasons: dict[str, str]) -> str:
    """One line for the log and the history (cut at 2000 characters there; the full
    per-queue reasons stay in ``job.broker_reasons``)."""
    return "no queue passes: " + "; ".join(f"{q}: {why}" if q else why
                                           for q, why in reasons.items())


def _keep_reasons(s, jobs: list[Job], unplaced: dict[int, dict[str, str]],
                  now: datetime) -> int:
    """Unplaced jobs: ``defined`` ones wait; every one keeps its per-queue reasons."""
    if not unplaced:
        return 0
    table = Job.__table__
    s.execute(update(table).where(table.c.id == bindparam("jid"))
              .values(broker_reasons=bindparam("why")),
              [{"jid": i, "why": {"at": now.isoformat(), "queues": r}}
               for i, r in unplaced.items()])
    by_reason: dict[str, list[int]] = defaultdict(list)
    for job in jobs:
        if job.id in unplaced and job.state == JobState.DEFINED:
            by_reason[summary(unplaced[job.id])].append(job.id)
    moved = 0
    for reason, ids in by_reason.items():
        log.warning("%d jobs wait: %s", len(ids), reason)
        moved += len(transition_many(s, Entity.JOB, ids, JobState.WAITING,
                                     expected=JobState.DEFINED, actor=ACTOR,
                                     reason=reason, now=now))
    return moved


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
    """Activate the jobs with all inputs local; request the rest and assign the jobs.

    One set-based transition per (from state, to state), each row given its queue."""
    by_id = {j.id: j for j in jobs}
    groups: dict[tuple[str, JobState], list[int]] = defaultdict(list)
    bunches: dict[tuple[int, int], set[int]] = defaultdict(set)
    queue_of = {job_id: c.queue.id for job_id, (c, _) in choice.items()}
    for job_id, (c, missing) in choice.items():
        job = by_id[job_id]
        target = JobState.ASSIGNED if missing else JobState.ACTIVATED
        groups[(job.state, target)].append(job_id)
        if missing:
            bunches[(job.task_id, c.local_endpoints[0])].update(missing)
    file_request = request_missing(s, ddm, bunches)
    for (state, target), ids in groups.items():
        moved = transition_many(s, Entity.JOB, ids, target, expected=state, actor=ACTOR,
                                reason="inputs at queue" if target == JobState.ACTIVATED
                                else "inputs requested", values={"broker_reasons": None},
                                per_row={"queue_id": queue_of}, now=now)
        if target == JobState.ACTIVATED:
            store_specs(s, {i: queue_of[i] for i in moved}, ddm, cfg.heartbeat_s)
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

