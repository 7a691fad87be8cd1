"""The carousel daemon: one ``run_once`` that watches, releases and lets go.

Each run, in short transactions: withdraw the requests of tasks that ended;
mark files that arrived, retry or lose the failed ones; release the next
bunches of every tape with open requests (``release.choose``) through the DDM's
``request_staging``; end requests, let jobs and tasks go on; renew and release
pins. The scheduler's runner calls it periodically and whenever a replica
becomes available or a data request ends; the benchmark calls it in simulated
time (``now`` given).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dawms.catalog.db import Database
from dawms.catalog.models import File, StagingFile, StagingRequest, StorageEndpoint, Task
from dawms.catalog.states import (
    STAGING_OPEN,
    TASK_FINAL,
    Entity,
    StagingFileState,
    StagingState,
)
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import DDM, Ran

from . import pins, progress
from .config import CarouselConfig, TapeLimits
from .manage import cancel_requests
from .release import Candidate, choose

log = logging.getLogger(__name__)
ACTOR = "carousel"
OPEN = [s.value for s in STAGING_OPEN]


@dataclass
class Tally:
    """What one run did, part by part."""

    released: int = 0
    staged: int = 0
    retried: int = 0
    lost: int = 0
    requests_ended: int = 0
    jobs_released: int = 0
    jobs_closed: int = 0
    tasks_resumed: int = 0
    copies_released: int = 0


class RunReport(Ran):
    """A run's ``Ran`` (the sum of its parts, never full) with the parts as attributes
    (``rep.released``, ``rep.copies_released``...)."""

    released: int
    staged: int
    retried: int
    lost: int
    requests_ended: int
    jobs_released: int
    jobs_closed: int
    tasks_resumed: int
    copies_released: int

    def __new__(cls, tally: Tally) -> RunReport:  # type: ignore[misc]
        parts = asdict(tally)
        # never full: a run takes every open request and tape at once and releases up
        # to the tapes' limits, so a run right after would find nothing more to do
        self = super().__new__(cls, sum(parts.values()), full=False)
        self.__dict__.update(parts)
        return self

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.__dict__.items() if k != "full")
        return f"RunReport({int(self)}, {parts})"


def run_once(db: Database, ddm: DDM, now: datetime | None = None,
             cfg: CarouselConfig | None = None) -> RunReport:
    """One carousel run; returns what it did (a ``Ran`` for the runner)."""
    now = now or datetime.now(UTC)
    cfg = cfg or CarouselConfig()
    rep = Tally()
    with db.session() as s:
        ended = list(s.scalars(
            select(StagingRequest.id).join(Task, Task.id == StagingRequest.task_id)
            .where(StagingRequest.state.in_(OPEN), Task.state.in_(list(TASK_FINAL)))))
        if ended:
            cancel_requests(s, ended, actor=ACTOR, reason="its task has ended", now=now)
        rep.staged = progress.files_arrived(s, now)
        rep.retried, rep.lost = progress.recalls_failed(s, now, cfg)
        tapes = list(s.scalars(select(StagingRequest.source_id).where(
            StagingRequest.state.in_(OPEN)).distinct()))
    for tape_id in tapes:  # one tape's trouble must not stop the others
        try:
            with db.session() as s:
                rep.released += release_tape(s, ddm, tape_id, now, cfg)
        except Exception:
            log.exception("carousel: releasing from tape endpoint %s failed", tape_id)
    with db.session() as s:
        rep.staged += progress.files_arrived(s, now)
        rep.requests_ended = progress.requests_progress(s, now, cfg)
        rep.jobs_released, rep.jobs_closed = progress.jobs_go_on(s, now)
        rep.tasks_resumed = progress.tasks_go_on(s, now)
        pins.keep_alive(s, ddm, now, cfg)
        rep.copies_released = pins.release_unneeded(s, ddm, now)
    return RunReport(rep)


def in_flight(session: Session, tape_id: int) -> tuple[int, int]:
    """Files and bytes released from ``tape_id`` and not yet on disk."""
    n, nbytes = session.execute(
        select(func.count(), func.coalesce(func.sum(StagingFile.size), 0))
        .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
        .where(StagingRequest.source_id == tape_id,
               StagingFile.state == StagingFileState.STAGING)).one()
    return int(n), int(nbytes)


def release_tape(session: Session, ddm: DDM, tape_id: int, now: datetime,
                 cfg: CarouselConfig) -> int:
    """Release the next bunches of one tape; returns how many files were released."""
    tape = session.get(StorageEndpoint, tape_id)
    limits = TapeLimits.of(tape)
    n_staging, b_staging = in_flight(session, tape_id)
    if n_staging >= limits.staging_files or b_staging >= limits.staging_bytes:
        return 0
    rows = session.execute(
        select(StagingFile.id, StagingFile.request_id, StagingFile.file_id, StagingFile.size,
               StagingFile.position, StagingRequest.share, StagingRequest.priority,
               StagingRequest.created_at)
        .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
        .where(StagingRequest.source_id == tape_id, StagingRequest.state.in_(OPEN),
               StagingFile.state == StagingFileState.QUEUED,
               or_(StagingFile.next_try_at.is_(None), StagingFile.next_try_at <= now))).all()
    if not rows:
        return 0
    busy = list(session.scalars(
        select(StagingFile.file_id).join(StagingRequest,
                                         StagingRequest.id == StagingFile.request_id)
        .where(StagingRequest.source_id == tape_id,
               StagingFile.state == StagingFileState.STAGING)))
    where = ddm.tape_locality(session, tape, [r[2] for r in rows] + busy)
    mounted = {where[f][0] for f in busy if f in where}
    cands = [Candidate(*r, cartridge=where.get(r[2], (None, 0))[0],
                       tape_position=where.get(r[2], (None, 0))[1]) for r in rows]
    since = now - timedelta(seconds=cfg.fair_window_s)
    delivered = {share: float(b) for share, b in session.execute(
        select(StagingRequest.share, func.sum(StagingFile.size))
        .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
        .where(StagingRequest.source_id == tape_id, StagingFile.released_at >= since)
        .group_by(StagingRequest.share))}
    chosen = choose(cands, limits, n_staging, b_staging, delivered, cfg, mounted)
    if not chosen:
        return 0
    by_request: dict[int, list[Candidate]] = defaultdict(list)
    for c in chosen:
        by_request[c.request_id].append(c)
    reqs = {r.id: r for r in session.scalars(select(StagingRequest).where(
        StagingRequest.id.in_(list(by_request))))}
    files = {f.id: f for f in session.scalars(select(File).where(
        File.id.in_([c.file_id for c in chosen])))}
    names = dict(session.execute(select(Task.id, Task.name).where(
        Task.id.in_({r.task_id for r in reqs.values()}))).all())
    dests = {e.id: e for e in session.scalars(select(StorageEndpoint).where(
        StorageEndpoint.id.in_({r.destination_id for r in reqs.values()})))}
    released = 0
    for rid, group in by_request.items():
        req = reqs[rid]
        dr = ddm.request_staging(session, [files[c.file_id] for c in group], tape,
                                 dests[req.destination_id],
                                 name=f"{names[req.task_id][:200]}_stg{uuid.uuid4().hex[:10]}",
                                 lifetime_s=cfg.pin_staging_s)
        released += len(transition_many(
            session, Entity.STAGING_FILE, [c.id for c in group], StagingFileState.STAGING,
            expected=StagingFileState.QUEUED, actor=ACTOR,
            reason=f"released in a bunch of {len(group)} (data request {dr.id})", now=now,
            values={"data_request_id": dr.id, "released_at": now}))
        values = {"pinned_until": now + timedelta(seconds=cfg.pin_staging_s)}
        if req.state == StagingState.QUEUED:
            transition_many(session, Entity.STAGING, [rid], StagingState.STAGING,
                            expected=StagingState.QUEUED, actor=ACTOR,
                            reason=f"first bunch of {len(group)} files released", now=now,
                            values=values)
        elif req.pinned_until is None:
            req.pinned_until = values["pinned_until"]
    log.info("tape %s: released %d files in %d requests", tape.name, released, len(by_request))
    return released
