"""The embedded DDM: the catalog's replica tables are the truth, fsspec moves bytes.

It does what Rucio does for dawms on one machine: datasets and their files,
replicas per endpoint, replication requests (carried out by ``transfer.py``, a
worker that copies and verifies size and adler32) and output registration
(which checks the file is really there with the size the pilot reported; its
adler32 is read from the stored bytes by ``stored_checksums`` before the report's
transaction opens).

Every name that reaches it follows the catalog's grammar (``catalog/names.py``)
and every path it builds stays under its endpoint's root (``lfn2pfn`` confines);
anything else is refused with a ``RegistrationError`` before a byte is written,
and its text says nothing about files outside the root.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from sqlalchemy import case, func, insert, select
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
from dawms.catalog.names import InvalidName, check_name, check_scope, split_did
from dawms.catalog.states import Entity, ReplicaState, RequestState
from dawms.catalog.transition import record_created, transition_many
from dawms.ddm_bridge.abc import (
    DDM,
    BadReplica,
    DaemonSpec,
    FileInfo,
    Outcome,
    RegistrationError,
    RequestReport,
    UnknownDataset,
)
from dawms.storage.checksum import ContentChanged, copy_stream, put_verified, url_checksum
from dawms.storage.paths import PathEscape, lfn2pfn

from .staging import TapeStaging

log = logging.getLogger(__name__)


class LocalDDM(TapeStaging, DDM):
    name = "local"

    def __init__(self, transfer_interval_s: float = 2.0) -> None:
        self.transfer_interval_s = transfer_interval_s

    # ------------------------------------------------------------- datasets
    def list_files(self, session: Session, did: str) -> list[File]:
        ds = self._dataset(session, did)
        if ds is None:
            raise UnknownDataset(f"dataset {did} is not known to the local DDM")
        return list(session.scalars(
            select(File).join(DatasetFile, DatasetFile.file_id == File.id)
            .where(DatasetFile.dataset_id == ds.id)
            .order_by(DatasetFile.position, File.name)))

    def _dataset(self, session: Session, did: str) -> Dataset | None:
        scope, name = split_did(did)
        return session.scalar(select(Dataset).where(Dataset.scope == scope,
                                                    Dataset.name == name))

    def _ensure_dataset(self, session: Session, did: str) -> Dataset:
        ds = self._dataset(session, did)
        if ds is None:
            scope, name = split_did(did)
            ds = Dataset(scope=scope, name=name)
            session.add(ds)
            session.flush()
        return ds

    def add_files(self, session: Session, did: str, files: Iterable[FileInfo],
                  endpoint: StorageEndpoint) -> list[File]:
        """Record files already present on ``endpoint`` as replicas in dataset ``did``.

        A file already known must match in size and adler32; anything else is refused.
        """
        infos = list(files)
        _check_names(infos)
        ds = self._ensure_dataset(session, did)
        known = {(f.scope, f.name): f for f in session.scalars(
            select(File).where(File.name.in_([i.name for i in infos])))}
        position = session.scalar(select(func.count()).select_from(DatasetFile)
                                  .where(DatasetFile.dataset_id == ds.id)) or 0
        out: list[File] = []
        for info in infos:
            row = known.get((info.scope, info.name))
            if row is None:
                row = File(scope=info.scope, name=info.name, size=info.size,
                           adler32=info.adler32, guid=info.guid or str(uuid.uuid4()),
                           events=info.events)
                session.add(row)
            elif (row.size, row.adler32) != (info.size, info.adler32):
                raise RegistrationError(
                    f"{info.scope}:{info.name} is already registered with size {row.size} "
                    f"adler32 {row.adler32}, not {info.size} {info.adler32}")
            out.append(row)
        session.flush()
        attached = set(session.scalars(select(DatasetFile.file_id).where(
            DatasetFile.dataset_id == ds.id, DatasetFile.file_id.in_([f.id for f in out]))))
        have = set(session.scalars(select(Replica.file_id).where(
            Replica.endpoint_id == endpoint.id, Replica.file_id.in_([f.id for f in out]))))
        now = datetime.now(UTC)
        born = []
        for f in out:
            if f.id not in attached:
                session.add(DatasetFile(dataset_id=ds.id, file_id=f.id, position=position))
                position += 1
                attached.add(f.id)
            if f.id not in have:
                born.append(Replica(file_id=f.id, endpoint_id=endpoint.id,
                                    state=ReplicaState.AVAILABLE, updated_at=now))
                have.add(f.id)
        session.add_all(born)
        session.flush()
        record_created(session, Entity.REPLICA, [(r.id, None) for r in born],
                       ReplicaState.AVAILABLE, actor="ddm:local", reason=f"registered in {did}",
                       now=now)
        return out

    def upload(self, session: Session, did: str, paths: Iterable[str | Path],
               endpoint: StorageEndpoint) -> list[File]:
        """Copy local files onto ``endpoint`` (checksummed on the way) and register them.

        Every file is checksummed before a byte moves: a name already registered with
        other bytes (or given twice with different bytes) is refused and nothing is
        written, so a registered replica is never overwritten. Each copy goes to a
        temporary name next to its destination and is renamed into place only once
        complete and verified. Uploading the same bytes again changes nothing.
        """
        scope, _ = split_did(did)
        paths = [Path(p) for p in paths]
        if bad := [problem for p in paths
                   if (problem := _name_problem(scope, p.name, f"file {str(p)[:200]!r}"))]:
            raise RegistrationError("; ".join(bad) + "; nothing was uploaded")
        sources: dict[str, tuple[Path, FileInfo]] = {}
        for path in paths:
            with open(path, "rb") as src:
                size, adler = copy_stream(src)
            info = FileInfo(scope=scope, name=path.name, size=size, adler32=adler)
            if (seen := sources.get(info.name)) and \
                    (seen[1].size, seen[1].adler32) != (size, adler):
                raise RegistrationError(f"{seen[0]} and {path} are both {scope}:{info.name} "
                                        "but differ; nothing was uploaded")
            sources[info.name] = (path, info)
        known = session.execute(select(File.name, File.size, File.adler32).where(
            File.scope == scope, File.name.in_(list(sources)))).all()
        if conflicts := [f"{scope}:{name} is already registered with size {size} adler32 "
                         f"{adler}, not {sources[name][1].size} {sources[name][1].adler32}"
                         for name, size, adler in known
                         if (size, adler) != (sources[name][1].size, sources[name][1].adler32)]:
            raise RegistrationError("; ".join(conflicts) + "; nothing was uploaded")
        for path, info in sources.values():
            self._put(path, info, endpoint)
        return self.add_files(session, did, [i for _, i in sources.values()], endpoint)

    def _put(self, path: Path, info: FileInfo, endpoint: StorageEndpoint) -> None:
        """Copy ``path`` to its place on ``endpoint`` through a temporary name."""
        try:
            put_verified(path, self.pfn(endpoint, info.scope, info.name), info.size,
                         info.adler32)
        except ContentChanged as exc:
            raise RegistrationError(str(exc)) from None

    # ------------------------------------------------------------- requests
    def request_replication(self, session: Session, files: list[File],
                            endpoint: StorageEndpoint, *, name: str,
                            activity: str = "Production Input") -> DataRequest:
        now = datetime.now(UTC)
        req = DataRequest(kind="replicate", name=name, endpoint_id=endpoint.id, ddm=self.name,
                          activity=activity, state=RequestState.REQUESTED,
                          files_total=len(files), created_at=now, updated_at=now)
        session.add(req)
        session.flush()
        req.external_id = f"local-{req.id}"
        record_created(session, Entity.REQUEST, [(req.id, None)], RequestState.REQUESTED,
                       actor="ddm:local", reason=f"{len(files)} files to {endpoint.name}",
                       now=now)
        ids = [f.id for f in files]
        session.execute(insert(DataRequestFile),
                        [{"request_id": req.id, "file_id": i, "done": 0} for i in ids])
        existing = {r.file_id: r for r in session.scalars(select(Replica).where(
            Replica.endpoint_id == endpoint.id, Replica.file_id.in_(ids)))}
        fresh = [i for i in ids if i not in existing]
        if fresh:
            born = session.scalars(insert(Replica).returning(Replica.id), [
                {"file_id": i, "endpoint_id": endpoint.id, "state": ReplicaState.COPYING,
                 "updated_at": now} for i in fresh]).all()
            record_created(session, Entity.REPLICA, [(i, None) for i in born],
                           ReplicaState.COPYING, actor="ddm:local", reason=f"request {req.id}",
                           now=now)
        for state in (ReplicaState.BAD, ReplicaState.UNAVAILABLE):
            stale = [r.id for r in existing.values() if r.state == state]
            transition_many(session, Entity.REPLICA, stale, ReplicaState.COPYING,
                            expected=state, actor="ddm:local", reason=f"request {req.id}",
                            now=now)
        session.flush()
        return req

    def poll(self, session: Session, now: datetime, *,
             request_ids: list[int] | None = None) -> list[RequestReport]:
        """Report open requests that ended: every file available at the destination
        (done), or given up by the transfer worker, which wrote why (failed); a tape
        recall (``stage``) fails only once every one of its recalls ended, as the tape
        worker records errors file by file. Only those in ``request_ids`` when given
        (the workers' fast path)."""
        # one query: each open request, how many of its files are still missing, how
        # many the tape worker has not ended, and the worker's reason for giving up
        missing = func.count(DataRequestFile.file_id) - func.count(Replica.id)
        unended = func.sum(case((DataRequestFile.done == 0, 1), else_=0))
        query = (select(DataRequest.id, missing, DataRequest.error, DataRequest.kind, unended)
                 .join(DataRequestFile, DataRequestFile.request_id == DataRequest.id)
                 .outerjoin(Replica, (Replica.file_id == DataRequestFile.file_id)
                            & (Replica.endpoint_id == DataRequest.endpoint_id)
                            & (Replica.state == ReplicaState.AVAILABLE))
                 .where(DataRequest.ddm == self.name,
                        DataRequest.state == RequestState.REQUESTED)
                 .group_by(DataRequest.id, DataRequest.error, DataRequest.kind)
                 .order_by(DataRequest.id))
        if request_ids is not None:
            query = query.where(DataRequest.id.in_(request_ids))
        reports = []
        for rid, n_missing, error, kind, n_unended in session.execute(query):
            if n_missing == 0:
                reports.append(RequestReport(Outcome.DONE, dedup_key=f"local:{rid}:done",
                                             request_id=rid))
            elif error and (kind != "stage" or not n_unended):
                reports.append(RequestReport(Outcome.FAILED, dedup_key=f"local:{rid}:failed",
                                             request_id=rid, error=error))
        return reports

    def declare_bad(self, session: Session, bad: list[BadReplica], reason: str) -> list[int]:
        """Repair each bad copy from an intact one: a replication request of the file to
        the same endpoint (its replica goes ``bad -> copying``; the transfer worker copies
        from an available source and verifies it). A file with no intact copy left stays
        ``bad`` there: nothing can mend it."""
        repaired: list[int] = []
        for item in bad:
            sources = session.scalar(select(func.count()).select_from(Replica).where(
                Replica.file_id == item.file_id, Replica.endpoint_id != item.endpoint.id,
                Replica.state == ReplicaState.AVAILABLE))
            if not sources:
                log.warning("%s:%s at %s is bad and has no intact copy to repair it from",
                            item.scope, item.name, item.endpoint.name)
                continue
            f = session.get(File, item.file_id)
            self.request_replication(session, [f], item.endpoint,
                                     name=f"repair.{item.replica_id}.{uuid.uuid4().hex[:8]}",
                                     activity="Repair")
            repaired.append(item.file_id)
        return repaired

    def daemons(self) -> list[DaemonSpec]:
        from .staging import run_tape
        from .transfer import run_once

        return [DaemonSpec("transfer", run_once, interval_s=self.transfer_interval_s,
                           wake_on=((Entity.REQUEST.value, RequestState.REQUESTED.value),)),
                DaemonSpec("tape", lambda db: run_tape(db, self),
                           interval_s=min(self.transfer_interval_s, 1.0),
                           wake_on=((Entity.REQUEST.value, RequestState.REQUESTED.value),))]

    # ------------------------------------------------------------- outputs
    def register_outputs(self, session: Session, did: str, files: list[FileInfo],
                         endpoint: StorageEndpoint) -> list[File]:
        _check_names(files)
        for info in files:
            url = self.pfn(endpoint, info.scope, info.name)
            fs, path = fsspec.core.url_to_fs(url)
            try:
                size = fs.size(path)
            except FileNotFoundError:
                raise RegistrationError(f"{info.scope}:{info.name} is not at {url}") from None
            if size != info.size:
                raise RegistrationError(f"{info.scope}:{info.name} at {url} has {size} bytes, "
                                        f"the pilot reported {info.size}")
        return self.add_files(session, did, files, endpoint)

    def stored_checksums(self, endpoint: StorageEndpoint,
                         files: list[FileInfo]) -> dict[str, tuple[int, str]]:
        """Size and adler32 read from the stored bytes (no transaction may be open)."""
        found = {}
        for info in files:
            try:
                found[info.name] = url_checksum(self.pfn(endpoint, info.scope, info.name))
            except (RegistrationError, OSError):
                continue  # missing or unreadable: register_outputs says so
        return found

    def pfn(self, endpoint: StorageEndpoint, scope: str, name: str) -> str:
        try:
            return lfn2pfn(endpoint.url_prefix, scope, name)
        except PathEscape as exc:
            raise RegistrationError(f"{scope}:{name} cannot be a file on {endpoint.name}: "
                                    f"{exc}") from None


def _name_problem(scope: str, name: str, what: str) -> str | None:
    try:
        check_scope(scope)
        check_name(name, what)
    except InvalidName as exc:
        return str(exc)
    return None


def _check_names(files: Iterable[FileInfo]) -> None:
    """Refuse (RegistrationError, nothing written) files whose names break the grammar."""
    if bad := [p for i in files if (p := _name_problem(i.scope, i.name, "file name"))]:
        raise RegistrationError("; ".join(bad))
