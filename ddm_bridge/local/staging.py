"""The local DDM's side of the carousel: recalls from an emulated tape library.

``TapeStaging`` (mixed into ``LocalDDM``) implements the tape part of the DDM
interface: ``request_staging`` makes a ``stage`` request (activity ``Staging``)
whose files the tape worker recalls; ``tape_locality`` says which cartridge and
position each file has (files fill cartridges in the order their tape replicas
were written, ``cartridge_bytes`` each); ``release_staging`` lets the buffer
copies go once nobody needs them (replica ``unavailable`` and the bytes removed
after commit). The worker (``run_tape``, a daemon the backend declares) feeds
open stage requests to the ``tape.TapeLibrary``, plays it forward on its clock,
and copies each recalled file tape -> buffer for real, verifying size and
adler32. The worker ends no request itself: ``LocalDDM.poll`` reports a stage
request done when every file is on the buffer, failed once every recall ended
and some failed, and the worker applies at once what poll reports about the
requests it just worked on (as the disk transfer worker does).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import fsspec
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.states import Entity, ReplicaState, RequestState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import DDMError, Ran
from dawms.ddm_bridge.events import apply_reports
from dawms.storage.paths import lfn2pfn

from .tape import TapeConfig, TapeLibrary
from .transfer import _copy, _Item

log = logging.getLogger(__name__)
ACTOR = "ddm:local:tape"
FAILED = -1  # DataRequestFile.done of a recall that failed


class TapeStaging:
    """Tape recalls for the local DDM (a mixin: ``LocalDDM(TapeStaging, DDM)``)."""

    name: str
    _library: TapeLibrary | None = None
    _cartridges: dict[int, tuple[int, dict[int, tuple[str, int]]]]

    @property
    def library(self) -> TapeLibrary:
        """The emulated library (from ``DAWMS_TAPE_*`` unless one was set)."""
        if self._library is None:
            self._library = TapeLibrary(TapeConfig.from_env())
        return self._library

    @library.setter
    def library(self, lib: TapeLibrary) -> None:
        self._library = lib

    @property
    def tape_sources(self) -> dict[Hashable, tuple[int, str]]:
        """recall key -> (tape replica id, URL) of the recalls the library holds."""
        if "_tape_sources" not in self.__dict__:
            self.__dict__["_tape_sources"] = {}
        return self.__dict__["_tape_sources"]

    # ------------------------------------------------------------- interface
    def request_staging(self, session: Session, files: list[File], source: StorageEndpoint,
                        destination: StorageEndpoint, *, name: str,
                        lifetime_s: int) -> DataRequest:
        if source.kind != "tape" or destination.kind != "disk":
            raise DDMError(f"staging goes from tape to disk, not {source.name} "
                             f"({source.kind}) -> {destination.name} ({destination.kind})")
        req = self.request_replication(  # type: ignore[attr-defined]  (LocalDDM's)
            session, files, destination, name=name, activity="Staging")
        req.kind = "stage"  # the tape worker's, not the disk transfer worker's
        session.flush()
        return req

    def tape_locality(self, session: Session, source: StorageEndpoint,
                      file_ids: list[int]) -> dict[int, tuple[str, int]]:
        cartridges = self._cartridge_map(session, source)
        return {f: cartridges[f] for f in file_ids if f in cartridges}

    def extend_staging(self, session: Session, requests: list[DataRequest],
                       lifetime_s: int) -> None:
        """Local buffer copies stay until released: nothing expires on its own."""

    def release_staging(self, session: Session, requests: list[DataRequest],
                        keep: set[int]) -> int:
        if not requests:
            return 0
        rows = session.execute(
            select(Replica.id, File.scope, File.name, StorageEndpoint.url_prefix)
            .join(DataRequestFile, DataRequestFile.file_id == Replica.file_id)
            .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
            .join(File, File.id == Replica.file_id)
            .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
            .where(DataRequest.id.in_([r.id for r in requests]),
                   Replica.endpoint_id == DataRequest.endpoint_id,
                   Replica.state == ReplicaState.AVAILABLE,
                   Replica.file_id.not_in(keep) if keep else Replica.id.is_not(None))).all()
        ids = transition_many(session, Entity.REPLICA, sorted({r[0] for r in rows}),
                              ReplicaState.UNAVAILABLE, expected=ReplicaState.AVAILABLE,
                              actor=ACTOR, reason="staged copy released")
        urls = [lfn2pfn(prefix, scope, name) for rid, scope, name, prefix in rows if rid in ids]
        _delete_after_commit(session, urls)
        return len(ids)

    # ------------------------------------------------------------- cartridges
    def _cartridge_map(self, session: Session,
                       source: StorageEndpoint) -> dict[int, tuple[str, int]]:
        """file id -> (cartridge, position): replicas fill cartridges in write order."""
        if not hasattr(self, "_cartridges"):
            self._cartridges = {}
        count = session.scalar(select(func.count()).select_from(Replica)
                               .where(Replica.endpoint_id == source.id)) or 0
        cached = self._cartridges.get(source.id)
        if cached and cached[0] == count:
            return cached[1]
        capacity = self.library.cfg.cartridge_bytes
        out: dict[int, tuple[str, int]] = {}
        index, position, used = 0, 0, 0
        for file_id, size in session.execute(
                select(Replica.file_id, File.size).join(File, File.id == Replica.file_id)
                .where(Replica.endpoint_id == source.id).order_by(Replica.id)):
            if used and used + size > capacity:
                index, position, used = index + 1, 0, 0
            out[file_id] = (f"{source.name}-{index:05d}", position)
            position += 1
            used += size
        self._cartridges[source.id] = (count, out)
        return out


_DELETE = "dawms.delete_after_commit"


def _delete_after_commit(session: Session, urls: list[str]) -> None:
    """Remove released bytes once the catalog says they are gone (never before)."""
    if not urls:
        return
    if _DELETE not in session.info:
        session.info[_DELETE] = []
        if not sa_event.contains(session, "after_commit", _after_commit):
            sa_event.listen(session, "after_commit", _after_commit)
            sa_event.listen(session, "after_rollback", _after_rollback)
    session.info[_DELETE].extend(urls)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for url in session.info.pop(_DELETE, []):
        try:
            fs, path = fsspec.core.url_to_fs(url)
            fs.rm(path)
        except FileNotFoundError:
            pass
        except Exception:  # the replica is unavailable already; a stray file is harmless
            log.exception("could not remove released copy %s", url)


def _after_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_DELETE, None)


# ----------------------------------------------------------------- the tape worker
def run_tape(db: Database, ddm: Any, now: datetime | None = None) -> Ran:
    """Feed open stage requests to the library, play it forward, land what it read,
    then apply what ``poll`` reports about the requests it touched.

    Returns how many recalls ended in this run, never full: it takes every open
    recall at once and the library ends only what its clock has reached, so a run
    right after would find nothing more to do."""
    lib: TapeLibrary = ddm.library
    sources = ddm.tape_sources
    with db.session() as s:
        rows = s.execute(
            select(DataRequestFile.request_id, File.id, File.size, File.scope, File.name)
            .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
            .join(File, File.id == DataRequestFile.file_id)
            .where(DataRequest.ddm == ddm.name, DataRequest.kind == "stage",
                   DataRequest.state == RequestState.REQUESTED,
                   DataRequestFile.done == 0)).all()
        open_keys = {(rid, fid) for rid, fid, *_ in rows}
        gone = {k for k in lib.known if k not in open_keys}
        if gone:  # cancelled requests: their queued recalls go too
            lib.cancel(gone)
        new = [r for r in rows if (r[0], r[1]) not in lib.known]
        no_source: list[tuple[int, int]] = []
        if new:
            tapes = defaultdict(list)
            for rep_id, file_id, ep_id, prefix in s.execute(
                    select(Replica.id, Replica.file_id, StorageEndpoint.id,
                           StorageEndpoint.url_prefix)
                    .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                    .where(Replica.file_id.in_({r[1] for r in new}),
                           StorageEndpoint.kind == "tape",
                           Replica.state == ReplicaState.AVAILABLE).order_by(Replica.id)):
                tapes[file_id].append((rep_id, ep_id, prefix))
            endpoints = {e.id: e for e in s.scalars(select(StorageEndpoint).where(
                StorageEndpoint.kind == "tape"))}
            maps = {}
            for rid, fid, size, scope, name in new:
                if not tapes.get(fid):
                    no_source.append((rid, fid))
                    continue
                rep_id, ep_id, prefix = tapes[fid][0]
                if ep_id not in maps:
                    maps[ep_id] = ddm._cartridge_map(s, endpoints[ep_id])
                cart, pos = maps[ep_id][fid]
                if lib.submit((rid, fid), cart, pos, size):
                    sources[(rid, fid)] = (rep_id, lfn2pfn(prefix, scope, name))
    ended = lib.advance()
    outcomes: list[tuple[int, int, str]] = [(rid, fid, "no available tape replica")
                                            for rid, fid in no_source]
    if ended:
        outcomes += _land(db, ended, sources)
    if outcomes:
        touched = _record(db, outcomes, now)
        done_at = now or datetime.now(UTC)
        with db.session() as s:
            apply_reports(s, ddm.poll(s, done_at, request_ids=touched), source="local",
                          now=done_at)
    return Ran(len(ended), full=False)


def _land(db: Database, ended: list, sources: dict) -> list[tuple[int, int, str]]:
    """Copy each recalled file tape -> buffer (outside any transaction), verified."""
    keys = [e.key for e in ended]
    with db.session() as s:
        dest = {(rid, fid): (rep_id, state, prefix, f)
                for rid, fid, rep_id, state, prefix, f in s.execute(
                    select(DataRequest.id, File.id, Replica.id, Replica.state,
                           StorageEndpoint.url_prefix, File)
                    .join(DataRequestFile, DataRequestFile.request_id == DataRequest.id)
                    .join(File, File.id == DataRequestFile.file_id)
                    .join(Replica, (Replica.file_id == File.id)
                          & (Replica.endpoint_id == DataRequest.endpoint_id))
                    .join(StorageEndpoint, StorageEndpoint.id == DataRequest.endpoint_id)
                    .where(DataRequest.id.in_({k[0] for k in keys}),
                           File.id.in_({k[1] for k in keys})))}
    out = []
    for e in ended:
        src = sources.pop(e.key, None)
        if e.key not in dest or src is None:
            continue  # the request went away meanwhile
        rep_id, state, prefix, f = dest[e.key]
        if e.error:
            out.append((e.key[0], e.key[1], f"tape recall failed: {e.error}"))
            continue
        item = _Item(f.id, f.scope, f.name, f.size, f.adler32, rep_id, state, [src])
        done = _copy(item, lfn2pfn(prefix, f.scope, f.name))
        out.append((e.key[0], e.key[1], "" if done.ok else done.error))
    return out


def _record(db: Database, outcomes: list[tuple[int, int, str]],
            now: datetime | None) -> list[int]:
    """Record what the recalls did to replicas and request counters; returns the
    requests touched (their end is for ``poll`` to report)."""
    now = now or datetime.now(UTC)
    with db.session() as s:
        by_req: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for rid, fid, error in outcomes:
            by_req[rid].append((fid, error))
        reqs = {r.id: r for r in s.scalars(select(DataRequest).where(
            DataRequest.id.in_(list(by_req))))}
        for rid, items in by_req.items():
            req = reqs.get(rid)
            if req is None or req.state != RequestState.REQUESTED:
                continue
            ok = [fid for fid, err in items if not err]
            bad = [fid for fid, err in items if err]
            reps = dict(s.execute(select(Replica.file_id, Replica.id).where(
                Replica.endpoint_id == req.endpoint_id,
                Replica.file_id.in_(ok + bad))).all())
            transition_many(s, Entity.REPLICA, [reps[f] for f in ok if f in reps],
                            ReplicaState.AVAILABLE, expected=ReplicaState.COPYING,
                            actor=ACTOR, reason=f"recalled for request {rid}", now=now)
            transition_many(s, Entity.REPLICA, [reps[f] for f in bad if f in reps],
                            ReplicaState.UNAVAILABLE, expected=ReplicaState.COPYING,
                            actor=ACTOR, reason=f"recall failed for request {rid}", now=now)
            for done, fids in ((1, ok), (FAILED, bad)):
                if fids:
                    s.execute(update(DataRequestFile).where(
                        DataRequestFile.request_id == rid, DataRequestFile.file_id.in_(fids),
                        DataRequestFile.done == 0).values(done=done))
            sizes = dict(s.execute(select(File.id, File.size).where(File.id.in_(ok))).all())
            errors = "; ".join(x for x in (req.error, *(f"file {f}: {e}" for f, e in items
                                                         if e)) if x)[:4000]
            s.execute(update(DataRequest).where(DataRequest.id == rid).values(
                files_done=DataRequest.files_done + len(ok),
                bytes_done=DataRequest.bytes_done + sum(sizes.values()),
                error=errors, updated_at=now))
        return sorted(by_req)
