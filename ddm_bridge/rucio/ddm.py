"""The DDM interface on a real Rucio, through rucio-clients.

Rucio is the truth; the catalog's datasets, files and replicas are a cache of it
(``cache.py``), refreshed when older than ``cache_ttl_s``. A replication request
is PanDA's dispatch block: the files a bunch of jobs misses at an endpoint are
attached to a new closed ``<task>_dis<id>`` dataset and one rule (activity,
lifetime, notify) asks for it at the endpoint's RSE. How a rule ends reaches us
three ways, all applied through ``events.apply_request_outcome`` under the same
dedup key: hermes' messages over HTTP (``server/ddm.py``) or STOMP
(``stomp.py``), and ``poll()``, the safety net that reads rule states. Outputs
are registered as replicas with size and adler32 and attached to their dataset;
``housekeeping.py`` closes the datasets of ended tasks and deletes rules no job
needs; tape recalls for the carousel are ``staging.py``. Every call goes
through ``gate.RucioGate``, which backs off while Rucio is unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.names import split_did
from dawms.catalog.states import Entity, ReplicaState, RequestState
from dawms.catalog.transition import record_created
from dawms.ddm_bridge.abc import (
    DDM,
    BadReplica,
    DaemonSpec,
    DDMError,
    FileInfo,
    Outcome,
    RegistrationError,
    RequestReport,
    Subscription,
    UnknownDataset,
)
from dawms.storage.checksum import ContentChanged, copy_stream, file_adler32, put_verified

from . import cache
from .gate import RucioGate, RucioUnavailable
from .messages import done_key, failed_key
from .settings import RucioSettings
from .staging import RucioStaging

log = logging.getLogger(__name__)
CHUNK = 1000  # Rucio's bulk calls take at most this many DIDs


def _chunks(items: list[Any], n: int = CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


class RucioDDM(RucioStaging, DDM):
    """dawms' DDM interface on a Rucio server."""

    name = "rucio"

    def __init__(self, settings: RucioSettings | None = None,
                 gate: RucioGate | None = None) -> None:
        self.settings = settings or RucioSettings()
        self.gate = gate or RucioGate(self.settings)
        self._fresh: dict[str, float] = {}  # did -> monotonic time it was read from Rucio
        self._rse_info: dict[str, dict[str, Any]] = {}
        self._last_poll = float("-inf")
        self._stomp: Any = None

    # ------------------------------------------------------------- datasets
    def list_files(self, session: Session, did: str) -> list[File]:
        scope, name = split_did(did)
        seen = self._fresh.get(did)
        if seen is not None and time.monotonic() - seen < self.settings.cache_ttl_s:
            cached = cache.cached_files(session, did)
            if cached is not None:
                return cached
        return self.refresh(session, did)

    def refresh(self, session: Session, did: str) -> list[File]:
        """Read dataset ``did``'s files and replicas from Rucio into the catalog."""
        from rucio.common.exception import DataIdentifierNotFound, ScopeNotFound

        scope, name = split_did(did)

        def read(c: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
            meta = c.get_did(scope, name)
            files = list(c.list_files(scope, name))
            replicas = list(c.list_replicas([{"scope": scope, "name": name}],
                                            all_states=True, ignore_availability=True))
            return meta, files, replicas

        try:
            meta, rows, replicas = self.gate.call(f"reading dataset {did}", read)
        except (DataIdentifierNotFound, ScopeNotFound):
            raise UnknownDataset(f"dataset {did} is not known to Rucio") from None
        if meta.get("type", "").upper() not in ("DATASET", "CONTAINER"):
            raise UnknownDataset(f"{did} is a {meta.get('type')} in Rucio, not a dataset")
        infos = [FileInfo(scope=r["scope"], name=r["name"], size=int(r["bytes"]),
                          adler32=str(r.get("adler32") or "").lower().zfill(8),
                          guid=str(r.get("guid") or ""), events=r.get("events"))
                 for r in sorted(rows, key=lambda r: (r["scope"], r["name"]))]
        ds = cache.ensure_dataset(session, did, is_open=bool(meta.get("open", True)))
        files = cache.upsert_files(session, infos)
        cache.attach(session, ds, files, exact=True)
        self._cache_replicas(session, files, replicas, reason=f"read from Rucio ({did})")
        self._fresh[did] = time.monotonic()
        return files

    def _cache_replicas(self, session: Session, files: list[File],
                        replicas: list[dict[str, Any]], *, reason: str) -> None:
        by_rse = cache.endpoints_by_rse(session)
        ids = {(f.scope, f.name): f.id for f in files}
        states: dict[tuple[int, int], str] = {}
        for rep in replicas:
            fid = ids.get((rep["scope"], rep["name"]))
            if fid is None:
                continue
            for rse, st in (rep.get("states") or {}).items():
                for ep in by_rse.get(rse, []):
                    states[(fid, ep.id)] = cache.RUCIO_STATES.get(str(st).upper(),
                                                                  ReplicaState.UNAVAILABLE)
        # replicas the cache holds at a mapped endpoint that Rucio no longer lists
        mapped = {ep.id for eps in by_rse.values() for ep in eps}
        for fid, eid, st in session.execute(select(Replica.file_id, Replica.endpoint_id,
                                                   Replica.state)
                                            .where(Replica.file_id.in_(list(ids.values())))):
            if eid in mapped and (fid, eid) not in states and st == ReplicaState.AVAILABLE:
                states[(fid, eid)] = ReplicaState.UNAVAILABLE
        cache.set_replicas(session, states, reason=reason)

    # ------------------------------------------------------------- naming
    def pfn(self, endpoint: StorageEndpoint, scope: str, name: str) -> str:
        """The URL Rucio gives for ``scope:name`` on the endpoint's RSE (its own lfn2pfn)."""
        return self.pfns(endpoint, [(scope, name)])[(scope, name)]

    def pfns(self, endpoint: StorageEndpoint,
             dids: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        from rucio.rse import rsemanager

        _ensure_rucio_config(self.settings)
        rse = endpoint.rse_name
        info = self._rse_info.get(rse)
        if info is None:
            info = self.gate.call(f"reading RSE {rse}", lambda c: c.get_rse(rse))
            self._rse_info[rse] = info
        scheme = endpoint.url_prefix.split("://", 1)[0]
        out = rsemanager.lfns2pfns(info, [{"scope": s, "name": n} for s, n in dids],
                                   operation="read", scheme=scheme)
        return {(s, n): _plain(out[f"{s}:{n}"]) for s, n in dids}

    def rse(self, endpoint: StorageEndpoint) -> str:
        return endpoint.rse_name

    # ------------------------------------------------------------- requests
    def request_replication(self, session: Session, files: list[File],
                            endpoint: StorageEndpoint, *, name: str,
                            activity: str = "Production Input") -> DataRequest:
        return self.rule_request(session, files, endpoint, name=name, activity=activity,
                                 lifetime_s=self.settings.rule_lifetime_s)

    def rule_request(self, session: Session, files: list[File], endpoint: StorageEndpoint,
                     *, name: str, activity: str, lifetime_s: int | None,
                     kind: str = "replicate", source_rse: str | None = None) -> DataRequest:
        """PanDA's dispatch block: ``files`` in a new closed dataset ``name`` and one rule
        of it to the endpoint's RSE (from ``source_rse`` only, if given: a tape recall);
        the ``DataRequest`` (``kind``) that stands for the rule."""
        if not files:
            raise DDMError("a replication request needs files")
        scope = self.settings.dispatch_scope or files[0].scope
        rse = endpoint.rse_name
        dids = [{"scope": f.scope, "name": f.name} for f in files]
        options: dict[str, Any] = {"lifetime": lifetime_s, "grouping": "DATASET",
                                   "activity": activity, "notify": self.settings.notify}
        if source_rse:
            options["source_replica_expression"] = source_rse

        def make(c: Any) -> str:
            c.add_did(scope, name, "DATASET", lifetime=lifetime_s)
            for part in _chunks(dids):
                c.attach_dids(scope, name, part)
            c.set_status(scope, name, open=False)
            return c.add_replication_rule([{"scope": scope, "name": name}], 1, rse,
                                          **options)[0]

        try:
            rule_id = self.gate.call(f"the dispatch block {scope}:{name} to {rse}", make)
        except RucioUnavailable:
            raise
        except Exception as exc:  # Rucio refused (unknown RSE, quota, bad name): say which
            raise DDMError(f"Rucio refused the rule for {scope}:{name} to {rse}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        now = datetime.now(UTC)
        req = DataRequest(kind=kind, name=name, endpoint_id=endpoint.id, ddm=self.name,
                          activity=activity, state=RequestState.REQUESTED, external_id=rule_id,
                          files_total=len(files), created_at=now, updated_at=now)
        session.add(req)
        session.flush()
        record_created(session, Entity.REQUEST, [(req.id, None)], RequestState.REQUESTED,
                       actor="ddm:rucio", reason=f"rule {rule_id}: {len(files)} files to {rse}"
                       + (f" from {source_rse}" if source_rse else ""), now=now)
        session.execute(insert(DataRequestFile),
                        [{"request_id": req.id, "file_id": f.id, "done": 0} for f in files])
        have = dict(session.execute(select(Replica.file_id, Replica.state).where(
            Replica.endpoint_id == endpoint.id,
            Replica.file_id.in_([f.id for f in files]))).all())
        cache.set_replicas(session, {(f.id, endpoint.id): ReplicaState.COPYING for f in files
                                     if have.get(f.id) != ReplicaState.AVAILABLE},
                           reason=f"rule {rule_id}", now=now)
        log.info("rule %s: %s:%s (%d files) to %s%s", rule_id, scope, name, len(files), rse,
                 f" from {source_rse} ({activity})" if source_rse else "")
        return req

    def poll(self, session: Session, now: datetime) -> list[RequestReport]:
        """The safety net: read the rules of open requests; report those that ended."""
        from rucio.common.exception import RuleNotFound

        every = self.settings.poll_interval_s
        if every <= 0 or time.monotonic() - self._last_poll < every:
            return []
        self._last_poll = time.monotonic()
        reqs = list(session.scalars(
            select(DataRequest).where(DataRequest.ddm == self.name,
                                      DataRequest.state == RequestState.REQUESTED,
                                      DataRequest.external_id.is_not(None))
            .order_by(DataRequest.updated_at, DataRequest.id).limit(self.settings.poll_batch)))
        reports: list[RequestReport] = []
        for req in reqs:
            rule_id = str(req.external_id)
            try:
                rule = self.gate.call(f"checking rule {rule_id} ({len(reqs)} open requests)",
                                      lambda c, r=rule_id: c.get_replication_rule(r))
            except RucioUnavailable:
                break  # logged by the gate; the requests stay open and are asked again
            except RuleNotFound:
                reports.append(RequestReport(Outcome.CANCELLED, f"rucio:rule:{rule_id}:gone",
                                             external_id=rule_id,
                                             error=f"ddm.rule_deleted: rule {rule_id} is gone"))
                continue
            if (rep := self.judge_rule(session, req, rule, now)) is not None:
                reports.append(rep)
        return reports

    def judge_rule(self, session: Session, req: DataRequest, rule: dict[str, Any],
                   now: datetime) -> RequestReport | None:
        """What a rule's state means for its request (and the cache), or None while open."""
        state = str(rule.get("state", "")).upper().rsplit(".", 1)[-1]
        rule_id = str(req.external_id)
        if state == "OK":
            cache.mark_request_arrived(session, req, now)
            return RequestReport(Outcome.DONE, done_key(rule_id), external_id=rule_id)
        expires = rule.get("expires_at")
        # expires_at is on Rucio's clock (a deletion sets it to Rucio's now): judge it by
        # the wall clock, not by the scheduler's ``now`` (frozen in tests, maybe skewed)
        if isinstance(expires, datetime) and \
                expires.replace(tzinfo=expires.tzinfo or UTC) <= datetime.now(UTC):
            # deleted (Rucio sets expires_at = now; its cleaner removes it later) or expired
            return RequestReport(Outcome.CANCELLED, f"rucio:rule:{rule_id}:gone",
                                 external_id=rule_id,
                                 error=f"ddm.rule_deleted: rule {rule_id} was deleted or expired")
        if state in ("STUCK", "SUSPENDED"):
            return self.count_failure(session, req, f"ddm.stuck: rule {rule_id} is {state}: "
                                      f"{rule.get('error') or 'no reason given'}", now)
        if req.kind == "stage":  # per file: the carousel lets each file's jobs go on
            self.staged_files(session, req, now)
            return None
        session.execute(update(DataRequest).where(DataRequest.id == req.id).values(
            files_done=int(rule.get("locks_ok_cnt") or 0), updated_at=now))
        return None

    def count_failure(self, session: Session, req: DataRequest, error: str,
                      now: datetime) -> RequestReport | None:
        """One more try used up; the request fails once ``max_tries`` are gone."""
        attempts = req.attempts + 1
        session.execute(update(DataRequest).where(DataRequest.id == req.id)
                        .values(attempts=attempts, error=error[:2000], updated_at=now))
        req.attempts = attempts
        if attempts < self.settings.max_tries:
            log.info("request %s (rule %s): %s (try %d of %d)", req.id, req.external_id,
                     error, attempts, self.settings.max_tries)
            return None
        return RequestReport(Outcome.FAILED, failed_key(str(req.external_id)),
                             external_id=req.external_id,
                             error=f"{error} (after {attempts} tries)")

    def subscribe(self, session: Session, sub: Subscription) -> str:
        """A Rucio subscription (``subscription.py``); recorded once as a data event."""
        from dawms.ddm_bridge.events import record

        from . import subscription

        sub_id = subscription.add(self.gate, sub)
        record(session, source="submit", dedup_key=f"rucio:subscription:{sub_id}",
               kind="subscription", payload={
                   "name": sub.name, "scope": sub.scope, "pattern": sub.pattern,
                   "rses": [ep.rse_name for ep in sub.endpoints], "activity": sub.activity,
                   "lifetime_s": sub.lifetime_s, "comment": sub.comment},
               now=datetime.now(UTC))
        log.info("subscription %s (%s): %s:%s to %s", sub.name, sub_id, sub.scope,
                 sub.pattern, ",".join(ep.rse_name for ep in sub.endpoints))
        return sub_id

    def declare_bad(self, session: Session, bad: list[BadReplica], reason: str) -> list[int]:
        """``declare_bad_file_replicas`` per (scope, name, rse): Rucio's necromancer then
        repairs each from another copy or declares it lost. Unreachable or refused, the
        catalog keeps its ``bad`` mark (dispatch skips the copy either way) and the
        failure is logged; Rucio repairs nothing until an operator declares it again."""
        if not bad:
            return []
        replicas = [{"scope": b.scope, "name": b.name, "rse": b.endpoint.rse_name} for b in bad]

        def declare(c: Any) -> Any:
            return c.declare_bad_file_replicas(replicas, reason[:250])

        try:
            refused = self.gate.call(f"declaring {len(bad)} bad replicas", declare) or {}
        except Exception as exc:  # RucioUnavailable too: the catalog's mark stands
            log.warning("Rucio was not told of %d bad replicas (%s): %s", len(bad),
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return []
        for rse, problems in refused.items():
            log.warning("Rucio refused to declare bad at %s: %s", rse, "; ".join(problems)[:500])
        failed = {(rse, p.split(" ", 1)[0].rstrip(":")) for rse, ps in refused.items() for p in ps}
        return [b.file_id for b in bad
                if (b.endpoint.rse_name, f"{b.scope}:{b.name}") not in failed]

    def daemons(self) -> list[DaemonSpec]:
        from . import housekeeping

        specs = [DaemonSpec("rucio_housekeeping", lambda db: housekeeping.run_once(db, self),
                            interval_s=max(self.settings.poll_interval_s, 30.0))]
        if self.settings.stomp_brokers:
            from .stomp import StompConsumer

            if self._stomp is None:
                self._stomp = StompConsumer(self, self.settings)
            specs.append(DaemonSpec("rucio_stomp", self._stomp.ensure_running, interval_s=5.0))
        return specs

    # ------------------------------------------------------------- outputs
    def register_outputs(self, session: Session, did: str, files: list[FileInfo],
                         endpoint: StorageEndpoint) -> list[File]:
        from rucio.common.exception import DataIdentifierAlreadyExists

        scope, name = split_did(did)
        if self.settings.verify_outputs:
            urls = self.pfns(endpoint, [(f.scope, f.name) for f in files])
            for info in files:
                url = urls[(info.scope, info.name)]
                fs, path = fsspec.core.url_to_fs(url)
                try:
                    size = fs.size(path)
                except FileNotFoundError:
                    raise RegistrationError(f"{info.scope}:{info.name} is not at {url}") from None
                if size != info.size:
                    raise RegistrationError(f"{info.scope}:{info.name} at {url} has {size} "
                                            f"bytes, the pilot reported {info.size}")
        self._refuse_conflicts(files)
        rse = endpoint.rse_name
        replicas = [{"scope": f.scope, "name": f.name, "bytes": f.size, "adler32": f.adler32,
                     **({"guid": f.guid} if f.guid else {})} for f in files]

        def register(c: Any) -> None:
            with contextlib.suppress(DataIdentifierAlreadyExists):
                c.add_did(scope, name, "DATASET")
            for part in _chunks(replicas):
                c.add_replicas(rse, part)
                c.add_files_to_datasets([{"scope": scope, "name": name, "rse": rse,
                                          "dids": [{"scope": r["scope"], "name": r["name"]}
                                                   for r in part]}], ignore_duplicate=True)

        try:
            self.gate.call(f"registering {len(files)} outputs in {did}", register)
        except RucioUnavailable:
            raise
        except Exception as exc:
            raise RegistrationError(f"Rucio refused the outputs of {did} at {rse}: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        return self._cache_registered(session, did, files, endpoint)

    def _refuse_conflicts(self, files: list[FileInfo]) -> None:
        """A name Rucio holds with other bytes is refused before anything is written."""
        from rucio.common.exception import DataIdentifierNotFound

        def check(c: Any) -> list[str]:
            bad = []
            for part in _chunks([{"scope": f.scope, "name": f.name} for f in files]):
                try:
                    metas = {(m["scope"], m["name"]): m for m in c.get_metadata_bulk(part)}
                except DataIdentifierNotFound:
                    metas = {}
                for f in files:
                    m = metas.get((f.scope, f.name))
                    if m and (int(m["bytes"]), str(m.get("adler32") or "")) != \
                            (f.size, f.adler32):
                        bad.append(f"{f.scope}:{f.name} is already registered in Rucio with "
                                   f"size {m['bytes']} adler32 {m.get('adler32')}, not "
                                   f"{f.size} {f.adler32}")
            return bad

        if bad := self.gate.call(f"checking {len(files)} names", check):
            raise RegistrationError("; ".join(bad) + "; nothing was registered")

    def _cache_registered(self, session: Session, did: str, files: list[FileInfo],
                          endpoint: StorageEndpoint) -> list[File]:
        ds = cache.ensure_dataset(session, did)
        rows = cache.upsert_files(session, files)
        cache.attach(session, ds, rows, exact=False)
        cache.set_replicas(session, {(f.id, endpoint.id): ReplicaState.AVAILABLE for f in rows},
                           reason=f"registered in Rucio at {endpoint.rse_name}")
        return rows

    def upload(self, session: Session, did: str, paths: Iterable[str | Path],
               endpoint: StorageEndpoint) -> list[File]:
        """Copy files to the PFNs Rucio names on the endpoint's RSE, then register them.

        As ``rucio upload`` does: every file is checksummed first and a name Rucio
        holds with other bytes refuses the whole upload before a byte moves; each
        copy goes to a temporary name, is verified (size, adler32) and renamed into
        place; only then are the replicas registered and attached to ``did``. The
        same bytes again change nothing.
        """
        scope, _ = split_did(did)
        sources: dict[str, tuple[Path, FileInfo]] = {}
        for raw in paths:
            path = Path(raw)
            if not path.is_file():
                raise RegistrationError(f"{path} is not a file; nothing was uploaded")
            size, adler = file_adler32(path)
            info = FileInfo(scope=scope, name=path.name, size=size, adler32=adler)
            if (seen := sources.get(info.name)) and (seen[1].size, seen[1].adler32) != \
                    (size, adler):
                raise RegistrationError(f"{seen[0]} and {path} are both {scope}:{info.name} "
                                        "but differ; nothing was uploaded")
            sources[info.name] = (path, info)
        infos = [i for _, i in sources.values()]
        self._refuse_conflicts(infos)
        urls = self.pfns(endpoint, [(scope, n) for n in sources])
        for path, info in sources.values():
            _put(path, info, urls[(scope, info.name)])
        return self.register_outputs(session, did, infos, endpoint)

    # ------------------------------------------------------------- housekeeping calls
    def close_dataset(self, did: str) -> None:
        from rucio.common.exception import DataIdentifierNotFound, UnsupportedOperation

        scope, name = split_did(did)

        def close(c: Any) -> None:
            with contextlib.suppress(UnsupportedOperation, DataIdentifierNotFound):
                c.set_status(scope, name, open=False)  # already closed / gone: fine

        self.gate.call(f"closing {did}", close)

    def delete_rule(self, rule_id: str) -> None:
        from rucio.common.exception import RuleNotFound

        def delete(c: Any) -> None:
            with contextlib.suppress(RuleNotFound):
                c.delete_replication_rule(rule_id, purge_replicas=False)

        self.gate.call(f"deleting rule {rule_id}", delete)


def _put(path: Path, info: FileInfo, url: str) -> None:
    """Copy ``path`` to ``url`` through a temporary name, verified on the way."""
    fs, dst = fsspec.core.url_to_fs(url)
    if fs.exists(dst) and fs.size(dst) == info.size:
        with fs.open(dst, "rb") as fh:
            if copy_stream(fh)[1] == info.adler32:
                return  # the same bytes are there already
    try:
        put_verified(path, url, info.size, info.adler32)
    except ContentChanged as exc:
        raise RegistrationError(str(exc)) from None


def _ensure_rucio_config(settings: RucioSettings) -> None:
    """Give Rucio's own libraries a client configuration if the site has none.

    ``rsemanager`` (lfn2pfn) reads ``[common] multi_vo`` from a rucio.cfg and fails
    with ConfigNotFound when there is none, although the client itself is configured
    by ``DAWMS_RUCIO_*`` alone. Without ``RUCIO_CONFIG`` and without a rucio.cfg in
    Rucio's search path, a ``[client]``-only file (no credentials: those are passed
    to the client directly) is written once and named by ``RUCIO_CONFIG``.
    """
    from rucio.common.config import get_config_dirs

    if os.environ.get("RUCIO_CONFIG") or any(
            os.path.exists(os.path.join(d, "rucio.cfg")) for d in get_config_dirs()):
        return
    fd, path = tempfile.mkstemp(prefix="dawms-rucio-", suffix=".cfg")
    with os.fdopen(fd, "w") as out:
        out.write(f"[client]\nrucio_host = {settings.host or ''}\n"
                  f"auth_host = {settings.auth_host or settings.host or ''}\n")
    os.environ["RUCIO_CONFIG"] = path
    log.info("no rucio.cfg found: Rucio's libraries read the client-only %s", path)


def _plain(pfn: str) -> str:
    """``file://localhost/p`` (Rucio's posix PFN) is ``file:///p`` (RFC 8089), which
    fsspec and every mover read; other URLs are Rucio's, unchanged."""
    if pfn.startswith("file://localhost/"):
        return "file:///" + pfn[len("file://localhost/"):]
    if pfn.startswith("file://localhost:0/"):
        return "file:///" + pfn[len("file://localhost:0/"):]
    return pfn
