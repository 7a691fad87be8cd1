"""Dispatch data: the complete job description a pilot gets, prepared before any claim.

Built once when a job is activated and stored on the job row, so the claim path
is a single UPDATE ... RETURNING with no joins (see DESIGN.md, "Concurrency and
scale"). The description is a ``dawms.wire.JobSpec`` record, the one the pilot
parses; the row keeps its ``to_dict()``. Inputs list replica URLs local to the
queue first, then other disk replicas as fallbacks; outputs go to the queue's
write endpoint.
``endpoints`` names every endpoint the spec's URLs point into, with its URL
prefix: the pilot reads and writes nothing outside them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Queue, Replica, StorageEndpoint, Task
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import DDM
from dawms.wire import InputFile, JobSpec, Movers, OutputSpec

from .naming import job_name


def available_disk_replicas(session: Session, file_ids: set[int]) -> dict[int, list[int]]:
    """file id -> endpoint ids holding an available copy on disk."""
    out: dict[int, list[int]] = defaultdict(list)
    ids = list(file_ids)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(Replica.file_id, Replica.endpoint_id)
            .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
            .where(Replica.file_id.in_(ids[start:start + 500]),
                   Replica.state == ReplicaState.AVAILABLE, StorageEndpoint.kind == "disk"))
        for file_id, endpoint_id in rows:
            out[file_id].append(endpoint_id)
    return out


def build_specs(session: Session, job_queue: dict[int, int], ddm: DDM,
                heartbeat_s: int) -> dict[int, dict[str, Any]]:
    """The pilot's job description for each ``job id -> queue id``, in the form the job
    row stores (``JobSpec.to_dict()``; the claim fills in the lease)."""
    return {i: spec.to_dict() for i, spec in job_specs(session, job_queue, ddm,
                                                         heartbeat_s).items()}


def store_specs(session: Session, job_queue: dict[int, int], ddm: DDM,
                heartbeat_s: int) -> int:
    """Build the dispatch data of ``job id -> queue id`` and store it on the job rows:
    one executemany of Core updates (no ORM bookkeeping per row); returns how many."""
    specs = build_specs(session, job_queue, ddm, heartbeat_s)
    if specs:
        job = Job.__table__
        session.execute(update(job).where(job.c.id == bindparam("jid"))
                        .values(spec=bindparam("sp")),
                        [{"jid": i, "sp": sp} for i, sp in specs.items()])
    return len(specs)


def job_specs(session: Session, job_queue: dict[int, int], ddm: DDM,
              heartbeat_s: int) -> dict[int, JobSpec]:
    """The pilot's job description, as a record, for each ``job id -> queue id``."""
    if not job_queue:
        return {}
    ids = list(job_queue)
    jobs = list(session.scalars(select(Job).where(Job.id.in_(ids))))
    tasks = {t.id: t for t in session.scalars(
        select(Task).where(Task.id.in_({j.task_id for j in jobs})))}
    queues = {q.id: q for q in session.scalars(
        select(Queue).where(Queue.id.in_(set(job_queue.values()))))}
    endpoints = list(session.scalars(select(StorageEndpoint)))
    by_name = {e.name: e for e in endpoints}
    by_id = {e.id: e for e in endpoints}
    job_files: dict[int, list[tuple[JobFile, File | None]]] = defaultdict(list)
    for jf, f in session.execute(select(JobFile, File).outerjoin(File, File.id == JobFile.file_id)
                                 .where(JobFile.job_id.in_(ids)).order_by(JobFile.id)):
        job_files[jf.job_id].append((jf, f))
    where = available_disk_replicas(session, {f.id for rows in job_files.values()
                                              for jf, f in rows if jf.type == "in" and f})
    specs = {}
    for job in jobs:
        task, queue = tasks[job.task_id], queues[job_queue[job.id]]
        local = [by_name[n].id for n in queue.read_endpoints if n in by_name]
        write = by_name[queue.write_endpoint]
        inputs: list[InputFile] = []
        outputs: list[OutputSpec] = []
        log: OutputSpec | None = None
        used = {write.name: write.url_prefix}
        for jf, f in job_files[job.id]:
            if jf.type == "in" and f is not None:
                held = where.get(f.id, [])
                order = [e for e in local if e in held] + [e for e in held if e not in local]
                used.update((by_id[e].name, by_id[e].url_prefix) for e in order)
                inputs.append(InputFile(
                    scope=f.scope, lfn=f.name, size=f.size, adler32=f.adler32, guid=f.guid,
                    dataset=jf.dataset, urls=[ddm.pfn(by_id[e], f.scope, f.name) for e in order]))
            else:
                entry = OutputSpec(scope=jf.scope, lfn=jf.lfn, dataset=jf.dataset,
                                   url=ddm.pfn(write, jf.scope, jf.lfn))
                if jf.type == "log":
                    log = entry
                else:
                    outputs.append(entry)
        specs[job.id] = JobSpec(
            job_id=job.id, attempt=job.attempt, task_id=task.id,
            job_name=job_name(task.name, task.id, job.job_index),
            transformation=task.transformation, cores=job.cores,
            memory_mb=job.memory_mb, walltime_s=job.walltime_s, disk_mb=job.disk_mb,
            heartbeat_s=heartbeat_s, queue=queue.name, endpoint_out=write.name,
            inputs=inputs, outputs=outputs, log=log, movers=Movers.of_queue(queue.movers),
            direct_access=bool(queue.direct_access), endpoints=used)
    return specs
