"""The local DDM's transfer worker: carries out replication requests.

``carry_out`` takes open requests with a lease (so two workers never copy the same
request), copies each missing file from a source replica with fsspec outside any
transaction, verifies the destination's size and adler32 against the catalog,
and records what happened to the replicas in short transactions. A source whose
bytes do not match is marked ``bad`` and the next source is tried; a file with no
intact source makes the worker give up the request (its ``error`` says why).
The worker ends no request itself: like every backend it reports, through
``LocalDDM.poll`` (every file there: done; given up: failed), and the core applies
the reports (``events.apply_reports``). ``run_once``, the daemon the backend
declares, does both at once for the requests it just worked on, so the activator
hears of them without waiting for the poller.

It reads and writes only under endpoint roots: every source and destination URL
is built by ``lfn2pfn``, which refuses a name that is not a plain file name and
checks the result lies under the endpoint's prefix. A file whose name fails that
fails alone, with an error that says nothing about what lies outside the root.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import fsspec
from sqlalchemy import or_, select, update

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.states import Entity, ReplicaState, RequestState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import Ran
from dawms.ddm_bridge.events import apply_reports, record_file_failure
from dawms.storage.checksum import copy_stream, url_checksum
from dawms.storage.paths import PathEscape, lfn2pfn

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Item:
    file_id: int
    scope: str
    name: str
    size: int
    adler32: str
    dest_replica_id: int
    dest_state: str
    sources: list[tuple[int, str]] = field(default_factory=list)  # (replica id, url)


@dataclass
class _Outcome:
    item: _Item
    ok: bool
    bad_sources: list[int]
    error: str = ""


def _copy(item: _Item, dest_url: str) -> _Outcome:
    """Copy one file from its first intact source; any error fails this file only."""
    bad: list[int] = []
    errors: list[str] = []
    try:
        fs, dest_path = fsspec.core.url_to_fs(dest_url)
    except Exception as exc:  # e.g. a scheme no installed fsspec backend knows
        return _Outcome(item, False, bad, f"{dest_url}: cannot open the destination: {exc}")
    for replica_id, src in item.sources:
        try:
            fs.makedirs(posixpath.dirname(dest_path), exist_ok=True)
            with fsspec.open(src, "rb") as fin, fs.open(dest_path, "wb") as fout:
                size, adler = copy_stream(fin, fout)
            if (size, adler) != (item.size, item.adler32):
                bad.append(replica_id)
                errors.append(f"{src}: source has size {size} adler32 {adler}, "
                              f"catalog says {item.size} {item.adler32}")
                fs.rm(dest_path)
                continue
            dsize, dadler = url_checksum(dest_url)
            if (dsize, dadler) != (item.size, item.adler32):
                errors.append(f"{dest_url}: copy has size {dsize} adler32 {dadler}")
                fs.rm(dest_path)
                continue
            return _Outcome(item, True, bad)
        except Exception as exc:  # a broken source or backend must not stop the worker
            errors.append(f"{src}: {type(exc).__name__}: {exc}")
    return _Outcome(item, False, bad, "; ".join(errors) or "no source replica")


def run_once(db: Database, now: datetime | None = None, *, max_requests: int = 5,
             lease: timedelta = timedelta(minutes=10), batch: int = 16) -> Ran:
    """The daemon: carry out up to ``max_requests`` requests, then apply at once what
    ``LocalDDM.poll`` reports about them. Returns files copied, full when it found
    ``max_requests`` requests and claimed some (a claimed request is then reported
    ended, given up, or keeps its lease, so it is not taken again at once)."""
    from .ddm import LocalDDM

    claimed, ran = carry_out(db, now, max_requests=max_requests, lease=lease, batch=batch)
    if claimed:
        done_at = datetime.now(UTC)
        with db.session() as s:
            apply_reports(s, LocalDDM().poll(s, done_at, request_ids=claimed),
                          source="local", now=done_at)
    return ran


def carry_out(db: Database, now: datetime | None = None, *, max_requests: int = 5,
              lease: timedelta = timedelta(minutes=10),
              batch: int = 16) -> tuple[list[int], Ran]:
    """Work on up to ``max_requests`` open local requests; ends none of them (poll()
    reports them). Returns the requests claimed and the files copied."""
    now = now or datetime.now(UTC)
    with db.session() as s:
        ids = list(s.scalars(select(DataRequest.id).where(
            DataRequest.ddm == "local", DataRequest.state == RequestState.REQUESTED,
            DataRequest.kind != "stage",  # tape recalls are the tape worker's (staging.py)
            # carried out (every file done) or given up: it waits for its report
            DataRequest.files_done < DataRequest.files_total, DataRequest.error == "",
            or_(DataRequest.acquired_until.is_(None), DataRequest.acquired_until < now))
            .order_by(DataRequest.id).limit(max_requests)))
        claimed = []
        for rid in ids:  # compare-and-set on the lease: another worker may have it
            res = s.execute(update(DataRequest).where(
                DataRequest.id == rid,
                or_(DataRequest.acquired_until.is_(None), DataRequest.acquired_until < now))
                .values(acquired_by=WORKER, acquired_until=now + lease))
            if res.rowcount:
                claimed.append(rid)
    copied = 0
    for rid in claimed:  # one broken request must not hold up the ones behind it
        try:
            copied += _work(db, rid, batch)
        except Exception:
            log.exception("request %s: the transfer worker failed; its lease will expire", rid)
    return claimed, Ran(copied, full=len(ids) >= max_requests and bool(claimed))


def _load(db: Database, rid: int) -> tuple[str, str, list[_Item]]:
    with db.session() as s:
        req = s.get(DataRequest, rid)
        dest = s.get(StorageEndpoint, req.endpoint_id)
        rows = s.execute(
            select(File, Replica.id, Replica.state)
            .join(DataRequestFile, DataRequestFile.file_id == File.id)
            .join(Replica, (Replica.file_id == File.id) & (Replica.endpoint_id == dest.id))
            .where(DataRequestFile.request_id == rid, DataRequestFile.done == 0)).all()
        items = {f.id: _Item(f.id, f.scope, f.name, f.size, f.adler32, rep_id, state)
                 for f, rep_id, state in rows}
        src_rows = s.execute(
            select(Replica.id, Replica.file_id, StorageEndpoint.url_prefix, StorageEndpoint.kind)
            .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
            .where(Replica.file_id.in_(list(items)), Replica.endpoint_id != dest.id,
                   Replica.state == ReplicaState.AVAILABLE)
            .order_by(StorageEndpoint.kind, Replica.id)).all()  # disk before tape
        for rep_id, file_id, prefix, _kind in src_rows:
            it = items[file_id]
            try:
                it.sources.append((rep_id, lfn2pfn(prefix, it.scope, it.name)))
            except PathEscape:
                continue  # this file then fails alone in _work, saying why
        return dest.url_prefix, req.name, list(items.values())


def _work(db: Database, rid: int, batch: int) -> int:
    dest_prefix, name, items = _load(db, rid)
    copied, failed = 0, []
    for start in range(0, len(items), batch):
        outcomes = []
        for item in items[start:start + batch]:
            if item.dest_state == ReplicaState.AVAILABLE:
                outcomes.append(_Outcome(item, True, []))  # another request brought it
                continue
            try:
                dest_url = lfn2pfn(dest_prefix, item.scope, item.name)
            except PathEscape as exc:
                outcomes.append(_Outcome(item, False, [], f"refused: {exc}"))
                continue
            outcomes.append(_copy(item, dest_url))
        copied += sum(1 for o in outcomes if o.ok and o.item.dest_state != "available")
        failed += [o for o in outcomes if not o.ok]
        _record(db, rid, outcomes)
    values: dict[str, object] = {"acquired_by": None, "acquired_until": None}
    if failed:  # given up: poll() reports it failed with this error
        error = "; ".join(f"{o.item.scope}:{o.item.name}: {o.error}" for o in failed)
        values["error"] = error[:2000]
        log.warning("request %s (%s) failed: %s", rid, name, error)
    with db.session() as s:
        s.execute(update(DataRequest).where(DataRequest.id == rid).values(**values))
    return copied


def _record(db: Database, rid: int, outcomes: list[_Outcome]) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        for o in outcomes:
            transition_many(s, Entity.REPLICA, o.bad_sources, ReplicaState.BAD,
                            expected=ReplicaState.AVAILABLE, actor="ddm:local",
                            reason=f"checksum mismatch while serving request {rid}", now=now)
        ok = [o.item for o in outcomes if o.ok]
        to_flip = [i.dest_replica_id for i in ok if i.dest_state != ReplicaState.AVAILABLE]
        transition_many(s, Entity.REPLICA, to_flip, ReplicaState.AVAILABLE,
                        expected=ReplicaState.COPYING, actor="ddm:local",
                        reason=f"request {rid}", now=now)
        bad_dest = [o.item.dest_replica_id for o in outcomes if not o.ok]
        transition_many(s, Entity.REPLICA, bad_dest, ReplicaState.UNAVAILABLE,
                        expected=ReplicaState.COPYING, actor="ddm:local",
                        reason=f"request {rid} found no intact source", now=now)
        for o in outcomes:
            if not o.ok:
                record_file_failure(s, rid, [o.item.file_id], o.error, now)
        if ok:
            s.execute(update(DataRequestFile).where(
                DataRequestFile.request_id == rid,
                DataRequestFile.file_id.in_([i.file_id for i in ok])).values(done=1))
            s.execute(update(DataRequest).where(DataRequest.id == rid).values(
                files_done=DataRequest.files_done + len(ok),
                bytes_done=DataRequest.bytes_done + sum(
                    i.size for i in ok if i.dest_state != ReplicaState.AVAILABLE),
                updated_at=now))
