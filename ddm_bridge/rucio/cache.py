"""The catalog as a cache of what Rucio says: datasets, files and replicas, refreshed in place.

In Rucio mode the broker's data weights and the activator read the catalog's
``dataset``/``file``/``replica`` rows, never Rucio directly (a cycle over
thousands of jobs must not make thousands of calls). These functions write what
Rucio answered into those rows: files are upserted by ``scope:name`` (a DID's
bytes never change in Rucio, so a differing cached size/adler32 is corrected),
replica states move through ``transition()`` only, and a request Rucio reports
complete marks its files available at its endpoint in the same transaction
that ends the request, so the activator never sees one without the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    Dataset,
    DatasetFile,
    File,
    Replica,
    StorageEndpoint,
)
from dawms.catalog.names import split_did
from dawms.catalog.states import Entity, ReplicaState, allowed
from dawms.catalog.transition import record_created, transition_many
from dawms.ddm_bridge.abc import FileInfo

ACTOR = "ddm:rucio"
# Rucio's replica states -> ours
RUCIO_STATES = {
    "AVAILABLE": ReplicaState.AVAILABLE, "A": ReplicaState.AVAILABLE,
    "COPYING": ReplicaState.COPYING, "C": ReplicaState.COPYING,
    "UNAVAILABLE": ReplicaState.UNAVAILABLE, "U": ReplicaState.UNAVAILABLE,
    "TEMPORARY_UNAVAILABLE": ReplicaState.UNAVAILABLE, "T": ReplicaState.UNAVAILABLE,
    "BEING_DELETED": ReplicaState.UNAVAILABLE, "B": ReplicaState.UNAVAILABLE,
    "BAD": ReplicaState.BAD, "D": ReplicaState.BAD,
}


def endpoints_by_rse(session: Session) -> dict[str, list[StorageEndpoint]]:
    out: dict[str, list[StorageEndpoint]] = {}
    for ep in session.scalars(select(StorageEndpoint)):
        out.setdefault(ep.rse_name, []).append(ep)
    return out


def ensure_dataset(session: Session, did: str, *, is_open: bool | None = None) -> Dataset:
    scope, name = split_did(did)
    ds = session.scalar(select(Dataset).where(Dataset.scope == scope, Dataset.name == name))
    if ds is None:
        ds = Dataset(scope=scope, name=name, is_open=1 if is_open in (None, True) else 0)
        session.add(ds)
        session.flush()
    elif is_open is not None and ds.is_open != int(is_open):
        ds.is_open = int(is_open)
    return ds


def upsert_files(session: Session, infos: Iterable[FileInfo]) -> list[File]:
    """File rows for ``infos`` in order, created or corrected to what Rucio says."""
    infos = list(infos)
    known: dict[tuple[str, str], File] = {}
    names = [i.name for i in infos]
    for start in range(0, len(names), 500):
        for f in session.scalars(select(File).where(File.name.in_(names[start:start + 500]))):
            known[(f.scope, f.name)] = f
    out = []
    for info in infos:
        row = known.get((info.scope, info.name))
        if row is None:
            row = File(scope=info.scope, name=info.name, size=info.size, adler32=info.adler32,
                       guid=info.guid or str(uuid.uuid4()), events=info.events)
            session.add(row)
            known[(info.scope, info.name)] = row
        else:
            row.size, row.adler32 = info.size, info.adler32
            if info.guid:
                row.guid = info.guid
            if info.events is not None:
                row.events = info.events
        out.append(row)
    session.flush()
    return out


def attach(session: Session, ds: Dataset, files: list[File], *, exact: bool) -> None:
    """Make ``files`` the content of ``ds`` in this order (``exact``) or add them to it."""
    rows = dict(session.execute(select(DatasetFile.file_id, DatasetFile.position)
                                .where(DatasetFile.dataset_id == ds.id)).all())
    wanted = [f.id for f in files]
    if exact:
        gone = set(rows) - set(wanted)
        if gone:
            session.execute(DatasetFile.__table__.delete().where(
                DatasetFile.dataset_id == ds.id, DatasetFile.file_id.in_(list(gone))))
        for pos, fid in enumerate(wanted):
            if fid not in rows:
                session.add(DatasetFile(dataset_id=ds.id, file_id=fid, position=pos))
            elif rows[fid] != pos:
                session.execute(update(DatasetFile).where(
                    DatasetFile.dataset_id == ds.id, DatasetFile.file_id == fid)
                    .values(position=pos))
    else:
        pos = (max(rows.values()) + 1) if rows else 0
        for fid in wanted:
            if fid not in rows:
                session.add(DatasetFile(dataset_id=ds.id, file_id=fid, position=pos))
                rows[fid] = pos
                pos += 1
    session.flush()


def set_replicas(session: Session, states: dict[tuple[int, int], str], *, reason: str,
                 now: datetime | None = None) -> None:
    """``(file id, endpoint id) -> state``: insert missing rows, move the others there."""
    if not states:
        return
    now = now or datetime.now(UTC)
    file_ids = list({f for f, _ in states})
    existing: dict[tuple[int, int], tuple[int, str]] = {}
    for start in range(0, len(file_ids), 500):
        for rid, fid, eid, st in session.execute(
                select(Replica.id, Replica.file_id, Replica.endpoint_id, Replica.state)
                .where(Replica.file_id.in_(file_ids[start:start + 500]))):
            existing[(fid, eid)] = (rid, st)
    fresh = [{"file_id": f, "endpoint_id": e, "state": st, "updated_at": now}
             for (f, e), st in states.items() if (f, e) not in existing]
    if fresh:  # born rows get their history row like every state change
        born: dict[str, list[tuple[int, int | None]]] = {}
        for rid, st in session.execute(insert(Replica).returning(Replica.id, Replica.state),
                                       fresh):
            born.setdefault(st, []).append((rid, None))
        for st, rows in born.items():
            record_created(session, Entity.REPLICA, rows, st, actor=ACTOR, reason=reason,
                           now=now)
    moves: dict[tuple[str, str], list[int]] = {}
    for key, st in states.items():
        if key in existing:
            rid, cur = existing[key]
            if cur != st:
                if not allowed(Entity.REPLICA, cur, st):  # e.g. bad -> available: via copying
                    if allowed(Entity.REPLICA, cur, ReplicaState.COPYING) and \
                            allowed(Entity.REPLICA, ReplicaState.COPYING, st):
                        moves.setdefault((cur, ReplicaState.COPYING), []).append(rid)
                        moves.setdefault((ReplicaState.COPYING, st), []).append(rid)
                    continue
                moves.setdefault((cur, st), []).append(rid)
    for src, dst in sorted(moves, key=lambda k: k[0] != ReplicaState.BAD):
        transition_many(session, Entity.REPLICA, moves[(src, dst)], dst, expected=src,
                        actor=ACTOR, reason=reason, now=now)


def mark_request_arrived(session: Session, req: DataRequest, now: datetime) -> None:
    """Rucio says the request's rule is complete: its files are available at its endpoint."""
    file_ids = list(session.scalars(select(DataRequestFile.file_id)
                                    .where(DataRequestFile.request_id == req.id)))
    set_replicas(session, {(f, req.endpoint_id): ReplicaState.AVAILABLE for f in file_ids},
                 reason=f"rule {req.external_id} OK", now=now)
    session.execute(update(DataRequestFile).where(DataRequestFile.request_id == req.id)
                    .values(done=1))
    total = session.scalar(select(func.coalesce(func.sum(File.size), 0))
                           .join(DataRequestFile, DataRequestFile.file_id == File.id)
                           .where(DataRequestFile.request_id == req.id)) or 0
    session.execute(update(DataRequest).where(DataRequest.id == req.id)
                    .values(files_done=len(file_ids), bytes_done=total, updated_at=now))


def cached_files(session: Session, did: str) -> list[File] | None:
    scope, name = split_did(did)
    ds = session.scalar(select(Dataset).where(Dataset.scope == scope, Dataset.name == name))
    if ds is None:
        return None
    return list(session.scalars(
        select(File).join(DatasetFile, DatasetFile.file_id == File.id)
        .where(DatasetFile.dataset_id == ds.id)
        .order_by(DatasetFile.position, File.name)))
