"""Detection: which inputs of a task live only on tape, and their staging requests.

Called by the refiner while it splits a task: a file with no available disk
replica but an available one on a tape endpoint must be staged. Each (dataset,
tape) pair of the task becomes one staging request to that tape's disk buffer
(``staging_buffer`` in the sites file, else a disk endpoint of the tape's site),
``queued``, with one ``queued`` row per file; the carousel releases them later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Replica, StagingFile, StagingRequest, StorageEndpoint, Task
from dawms.catalog.states import Entity, ReplicaState, StagingFileState, StagingState
from dawms.catalog.transition import record_created

ACTOR = "carousel:plan"


class StagingError(ValueError):
    """The inputs cannot be staged as the sites file stands (e.g. a tape with no buffer)."""


def _replicas(session: Session, file_ids: list[int]) -> tuple[set[int], dict[int, list[int]]]:
    """Files with an available disk copy, and file -> tape endpoints holding it."""
    disk: set[int] = set()
    tape: dict[int, list[int]] = defaultdict(list)
    for start in range(0, len(file_ids), 500):
        for fid, ep, kind in session.execute(
                select(Replica.file_id, Replica.endpoint_id, StorageEndpoint.kind)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(Replica.file_id.in_(file_ids[start:start + 500]),
                       Replica.state == ReplicaState.AVAILABLE)
                .order_by(Replica.endpoint_id)):
            if kind == "tape":
                tape[fid].append(ep)
            else:
                disk.add(fid)
    return disk, tape


def tape_only(session: Session, file_ids: Sequence[int]) -> dict[int, int]:
    """file id -> the tape endpoint to stage it from, for files that are only on tape."""
    disk, tape = _replicas(session, list(dict.fromkeys(file_ids)))
    return {f: eps[0] for f, eps in tape.items() if f not in disk}


def buffer_of(session: Session, tape: StorageEndpoint) -> StorageEndpoint:
    """The disk a tape stages to: its ``staging_buffer``, else a disk of its site."""
    if tape.staging_buffer:
        ep = session.scalar(select(StorageEndpoint).where(
            StorageEndpoint.name == tape.staging_buffer, StorageEndpoint.kind == "disk"))
        if ep is None:
            raise StagingError(f"tape {tape.name}: staging_buffer {tape.staging_buffer} is "
                               "not a disk endpoint")
        return ep
    ep = session.scalar(select(StorageEndpoint).where(
        StorageEndpoint.site_id == tape.site_id, StorageEndpoint.kind == "disk")
        .order_by(StorageEndpoint.name).limit(1))
    if ep is None:
        raise StagingError(f"tape {tape.name} has no disk buffer: set staging_buffer in the "
                           "sites file or give its site a disk endpoint")
    return ep


def plan_staging(session: Session, task: Task, files: Sequence[tuple[File, str]],
                 now: datetime) -> dict[int, int]:
    """Make the task's staging requests; returns file id -> staging request id.

    Empty when every input has a disk copy. Raises StagingError (nothing written)
    when a tape has no disk buffer.
    """
    source_of = tape_only(session, [f.id for f, _ in files])
    if not source_of:
        return {}
    groups: dict[tuple[str, int], list[tuple[int, File]]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for position, (f, did) in enumerate(files):
        if f.id in source_of and (did, f.id) not in seen:
            seen.add((did, f.id))
            groups[(did, source_of[f.id])].append((position, f))
    tapes = {e.id: e for e in session.scalars(select(StorageEndpoint).where(
        StorageEndpoint.id.in_({ep for _, ep in groups})))}
    buffers = {ep: buffer_of(session, tapes[ep]) for ep in tapes}
    out: dict[int, int] = {}
    for (did, ep), members in groups.items():
        req = StagingRequest(
            task_id=task.id, dataset=did, source_id=ep, destination_id=buffers[ep].id,
            state=StagingState.QUEUED, share=task.share, priority=task.priority,
            files_total=len(members), bytes_total=sum(f.size for _, f in members),
            created_at=now, updated_at=now)
        session.add(req)
        session.flush()
        record_created(session, Entity.STAGING, [(req.id, None)], StagingState.QUEUED,
                       actor=ACTOR, reason=f"{len(members)} files of {did} only on "
                       f"{tapes[ep].name}", now=now)
        ids = session.scalars(insert(StagingFile).returning(StagingFile.id), [
            {"request_id": req.id, "file_id": f.id, "state": StagingFileState.QUEUED,
             "size": f.size, "position": pos, "attempts": 0, "error": "", "updated_at": now}
            for pos, f in members]).all()
        record_created(session, Entity.STAGING_FILE, [(i, None) for i in ids],
                       StagingFileState.QUEUED, actor=ACTOR, reason=f"request {req.id}",
                       now=now)
        out.update({f.id: req.id for _, f in members})
    return out
