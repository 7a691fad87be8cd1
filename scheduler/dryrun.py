"""Dry run: what a task submission would do, without doing any of it.

``dawms task submit --dry-run FILE`` answers before anything is written: how the
task would split, where each job would go and why (every queue's verdict or
weight, the broker's own formula on the queues' current loads), which files
would have to move and how many bytes, which would come from tape, and whether
a subscription would be made. It runs the real validation, the real splitter and
the broker's own filters and weights in a session that is rolled back at the
end, so even what the DDM caches while listing the inputs is not kept; nothing is
asked of the DDM but the listing (no rule, no subscription, no staging).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.carousel.plan import tape_only
from dawms.catalog.db import Database
from dawms.catalog.models import File, Job, Queue, StorageEndpoint
from dawms.ddm_bridge.abc import DDM

from .broker import _candidate, _loads, data_weight, dynamic_reason, static_reason
from .config import SchedulerConfig
from .dispatch import available_disk_replicas
from .split import split_files
from .task import validate

MAX_JOBS_LISTED = 200  # jobs shown one by one; the summary counts them all


class _Sized:
    __slots__ = ("file", "did", "size")

    def __init__(self, f: File, did: str) -> None:
        self.file, self.did, self.size = f, did, f.size


def dry_run(db: Database, ddm: DDM, spec: dict[str, Any], owner: str | None = None,
            cfg: SchedulerConfig | None = None) -> dict[str, Any]:
    """The plan for ``spec``; TaskSpecError as a real submission would raise it."""
    s = Session(db.engine, autoflush=False)
    try:
        return _plan(s, ddm, spec, owner, cfg or SchedulerConfig())
    finally:
        s.rollback()
        s.close()


def _plan(s: Session, ddm: DDM, spec: dict[str, Any], owner: str | None,
          cfg: SchedulerConfig) -> dict[str, Any]:
    clean = validate(spec, ddm, s)
    if owner:
        clean["owner"] = owner
    files: list[tuple[File, str]] = []
    for did in clean["input_datasets"]:
        files += [(f, did) for f in ddm.list_files(s, did)]
    on_tape = tape_only(s, [f.id for f, _ in files])
    chunks = split_files([_Sized(f, did) for f, did in files], clean["split"])
    res = clean["resources"]
    probe = Job(cores=res["cores"], memory_mb=res["memory_mb"], walltime_s=res["walltime_s"],
                disk_mb=res["disk_mb"], priority=clean["priority"])
    endpoints = {e.name: e for e in s.scalars(select(StorageEndpoint))}
    names = {e.id: e.name for e in endpoints.values()}
    queues = list(s.scalars(select(Queue).order_by(Queue.name)))
    loads = _loads(s, [q.id for q in queues])
    held = available_disk_replicas(s, {f.id for f, _ in files})
    now = datetime.now(UTC)
    tags = tuple(sorted(set(res.get("software") or ())))
    cands = {q.id: _candidate(q, endpoints, loads[q.id]) for q in queues}
    verdict = {q.name: static_reason(cands[q.id], probe, tags, cfg, now) for q in queues}
    jobs, placed = [], Counter()
    move_files = move_bytes = 0
    for i, chunk in enumerate(chunks, start=1):
        sizes = {c.file.id: c.size for c in chunk}
        weights: dict[str, Any] = {}
        best: tuple[float, Queue, list[int]] | None = None
        for q in queues:
            load = loads[q.id]
            why = verdict[q.name] or dynamic_reason(cands[q.id], {})
            if why:
                weights[q.name] = why
                continue
            dweight, missing = data_weight(sizes, held, cands[q.id].local_endpoints)
            w = load.weight() * dweight
            weights[q.name] = round(w, 6)
            if best is None or w > best[0]:
                best = (w, q, missing)
        tape = [c.file.id for c in chunk if c.file.id in on_tape]
        entry: dict[str, Any] = {"job": i, "files": len(chunk), "bytes": sum(sizes.values()),
                                 "from_tape": len(tape), "weights": weights}
        if best is None:
            entry.update(queue=None, why="no queue passes")
        else:
            _, q, missing = best
            load = loads[q.id]
            if missing:
                load.assigned += 1
            else:
                load.activated += 1
            nbytes = sum(sizes[f] for f in missing if f not in on_tape)
            entry.update(queue=q.name, missing_files=len(missing), move_bytes=nbytes,
                         destination=names.get(cands[q.id].local_endpoints[0]) if missing
                         else None)
            move_files += len([f for f in missing if f not in on_tape])
            move_bytes += nbytes
            placed[q.name] += 1
        jobs.append(entry)
    tape_bytes = sum(f.size for f, _ in files if f.id in on_tape)
    return {
        "task": {k: v for k, v in clean.items() if k != "subscription"},
        "subscription": clean.get("subscription"),
        "input_files": len(files), "input_bytes": sum(f.size for f, _ in files),
        "jobs_total": len(chunks), "jobs_by_queue": dict(placed),
        "unplaced_jobs": len(chunks) - sum(placed.values()),
        "files_to_move": move_files, "bytes_to_move": move_bytes,
        "files_from_tape": len(on_tape), "bytes_from_tape": tape_bytes,
        "tapes": sorted({names[ep] for ep in on_tape.values()}),
        "queues": verdict, "jobs": jobs[:MAX_JOBS_LISTED],
        "written": False,
    }
