"""Bad replicas: copies a pilot (or an operator) found damaged, marked and mended.

A pilot's stage-in report lists the replicas it gave up and why
(``wire.BadReplicaReport``). A checksum or size mismatch or a missing file proves
the copy damaged; an unreadable storage (an outage) does not, and is only logged.
Only a URL the job's own spec offered for that input counts, and it must be the
DDM's URL of one of the input's replicas: a pilot cannot name any other file.

``declare_bad`` is the one path for both the pilot's word and the operator's
(``dawms replica declare-bad``): it moves each replica ``available`` (or
``unavailable``) ``-> bad`` through ``transition()``, tells the DDM (the local one
re-replicates from an intact copy; Rucio gets ``declare_bad_file_replicas``),
and rebuilds the dispatch data of every activated job that reads those files, so
no pilot is ever handed a bad copy again. An activated job left with an input
that no URL serves fails at once: ``bad_data`` (never retried) when no good copy
exists anywhere nor is being made, ``stagein`` (retried by policy) otherwise.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Replica, StorageEndpoint
from dawms.catalog.states import Entity, JobState, ReplicaState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.abc import DDM, BadReplica, DDMError
from dawms.wire import DAMAGE_REASONS, BadReplicaReport, ErrorCategory

from .dispatch import job_specs
from .retry import retry_failed

log = logging.getLogger(__name__)
ACTOR = "scheduler:badreplica"
# replicas that may be declared bad: what dispatch could list, or could list again
DECLARABLE = (ReplicaState.AVAILABLE, ReplicaState.UNAVAILABLE)
# copies that still count as good for a file: there now, or being made from a good one
GOOD = (ReplicaState.AVAILABLE, ReplicaState.COPYING)


@dataclass
class Declared:
    """What one ``declare_bad`` did."""

    marked: list[int] = field(default_factory=list)  # replica ids now bad
    repairing: list[int] = field(default_factory=list)  # file ids the DDM repairs
    respecced: list[int] = field(default_factory=list)  # activated jobs given new dispatch data
    failed: dict[int, str] = field(default_factory=dict)  # activated job id -> error category


def replicas_of_report(session: Session, ddm: DDM, job: Any,
                       reports: Sequence[BadReplicaReport]) -> dict[int, str]:
    """Replica id -> reason for each reported replica the report proves damaged.

    A report counts only if its URL is one the job's spec offered for that input and is
    the DDM's URL of a replica of that input file; anything else is ignored (logged)."""
    damaged = [r for r in reports if r.reason in DAMAGE_REASONS]
    for r in reports:
        if r.reason not in DAMAGE_REASONS:
            log.info("job %d: %s at %s was unreadable (%s); not marked bad", job.id, r.lfn,
                     r.url[:200], r.detail[:200])
    if not damaged:
        return {}
    spec = session.scalar(select(Job.spec).where(Job.id == job.id))  # a fence has no spec
    offered = {(i.get("lfn"), u) for i in (spec or {}).get("inputs", [])
               for u in i.get("urls", [])}
    rows = session.execute(
        select(Replica.id, File.scope, File.name, StorageEndpoint)
        .join(File, File.id == Replica.file_id)
        .join(JobFile, (JobFile.file_id == File.id) & (JobFile.job_id == job.id)
              & (JobFile.type == "in"))
        .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
        .where(File.name.in_({r.lfn for r in damaged}))).all()
    by_url: dict[tuple[str, str], int] = {}
    for replica_id, scope, name, endpoint in rows:
        try:
            by_url[(name, ddm.pfn(endpoint, scope, name))] = replica_id
        except DDMError:
            continue
    found: dict[int, str] = {}
    for r in damaged:
        replica_id = by_url.get((r.lfn, r.url))
        if (r.lfn, r.url) not in offered or replica_id is None:
            log.warning("job %d reported %s at %s bad, but its spec offered no such replica; "
                        "ignored", job.id, r.lfn, r.url[:200])
            continue
        found.setdefault(replica_id, f"{r.reason}: {r.detail}" if r.detail else r.reason)
    return found


def declare_bad(session: Session, ddm: DDM, replica_ids: Iterable[int], *, reason: str,
                actor: str, now: datetime | None = None) -> Declared:
    """Mark replicas bad, tell the DDM, and keep every activated job off them."""
    now = now or datetime.now(UTC)
    ids = list(dict.fromkeys(replica_ids))
    out = Declared()
    for state in DECLARABLE:
        out.marked += transition_many(session, Entity.REPLICA, ids, ReplicaState.BAD,
                                      expected=state, actor=actor, reason=reason[:2000],
                                      now=now)
    if not out.marked:
        return out
    rows = session.execute(
        select(Replica.id, File.id, File.scope, File.name, StorageEndpoint)
        .join(File, File.id == Replica.file_id)
        .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
        .where(Replica.id.in_(out.marked))).all()
    bad = [BadReplica(rid, fid, scope, name, ep) for rid, fid, scope, name, ep in rows]
    for b in bad:
        log.info("replica %s:%s at %s marked bad (%s)", b.scope, b.name, b.endpoint.name,
                 reason[:200])
    out.repairing = ddm.declare_bad(session, bad, reason)
    _respec_activated(session, ddm, {b.file_id for b in bad}, out, now)
    return out


def files_without_good_copy(session: Session, file_ids: Iterable[int]) -> set[int]:
    """The files among ``file_ids`` with no replica available or being copied anywhere."""
    ids = set(file_ids)
    good = set(session.scalars(select(Replica.file_id).where(
        Replica.file_id.in_(list(ids)), Replica.state.in_(list(GOOD)))))
    return ids - good


def job_inputs_lost(session: Session, job_id: int) -> list[str]:
    """The names of the job's inputs with no good copy left (empty: all can be read)."""
    inputs = dict(session.execute(select(JobFile.file_id, JobFile.lfn).where(
        JobFile.job_id == job_id, JobFile.type == "in", JobFile.file_id.is_not(None))).all())
    lost = files_without_good_copy(session, inputs)
    return sorted(inputs[f] for f in lost)


def _respec_activated(session: Session, ddm: DDM, file_ids: set[int], out: Declared,
                      now: datetime) -> None:
    jobs = dict(session.execute(
        select(Job.id, Job.queue_id).where(
            Job.state == JobState.ACTIVATED,
            Job.id.in_(select(JobFile.job_id).where(JobFile.type == "in",
                                                    JobFile.file_id.in_(list(file_ids))))))
        .all())
    if not jobs:
        return
    beats = dict(session.execute(select(Job.id, Job.spec).where(Job.id.in_(list(jobs)))).all())
    by_beat: dict[int, dict[int, int]] = defaultdict(dict)
    for job_id, queue_id in jobs.items():
        by_beat[int((beats.get(job_id) or {}).get("heartbeat_s", 1800))][job_id] = queue_id
    unserved: dict[int, list[str]] = {}
    for heartbeat_s, group in by_beat.items():
        for job_id, spec in job_specs(session, group, ddm, heartbeat_s).items():
            empty = [i.lfn for i in spec.inputs if not i.urls]
            if empty:
                unserved[job_id] = empty
                continue
            session.execute(update(Job).where(Job.id == job_id,
                                              Job.state == JobState.ACTIVATED)
                            .values(spec=spec.to_dict()))
            out.respecced.append(job_id)
    if not unserved:
        return
    lost_files = files_without_good_copy(session, file_ids)
    lost_names = set(session.scalars(select(File.name).where(File.id.in_(list(lost_files)))))
    for category in (ErrorCategory.BAD_DATA, ErrorCategory.STAGEIN):
        group = {j: names for j, names in unserved.items()
                 if (category == ErrorCategory.BAD_DATA) == bool(set(names) & lost_names)}
        for job_id, names in group.items():
            diag = (f"no good replica of {', '.join(names[:10])}: every copy is bad"
                    if category == ErrorCategory.BAD_DATA else
                    f"no disk replica of {', '.join(names[:10])} left to read; another "
                    "attempt waits for a good copy")
            moved = transition_many(session, Entity.JOB, [job_id], JobState.FAILED,
                                    expected=JobState.ACTIVATED, actor=ACTOR, reason=diag,
                                    values={"error_category": category.value,
                                            "error_diag": diag}, now=now)
            if moved:
                out.failed[job_id] = category.value
    retry_failed(session, [j for j, c in out.failed.items() if c != ErrorCategory.BAD_DATA], now)


def declare_named(session: Session, ddm: DDM, items: Sequence[tuple[str, str, str]], *,
                  reason: str, actor: str, now: datetime | None = None
                  ) -> tuple[dict[str, str], Declared]:
    """The operator's form: ``(scope, name, endpoint)`` triples -> per ``scope:name@endpoint``
    what became of it (``bad``, ``already bad``, ``copying: ...``, ``unknown ...``)."""
    answers: dict[str, str] = {}
    ids: dict[int, str] = {}
    for scope, name, ep_name in items:
        key = f"{scope}:{name}@{ep_name}"
        row = session.execute(
            select(Replica.id, Replica.state).join(File, File.id == Replica.file_id)
            .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
            .where(File.scope == scope, File.name == name,
                   StorageEndpoint.name == ep_name)).first()
        if row is None:
            answers[key] = "unknown: no such replica"
        elif row.state == ReplicaState.BAD:
            answers[key] = "already bad"
        elif row.state not in DECLARABLE:
            answers[key] = f"{row.state}: a copy being made is verified when it lands"
        else:
            ids[row.id] = key
    done = declare_bad(session, ddm, list(ids), reason=reason, actor=actor, now=now)
    for rid, key in ids.items():
        answers[key] = "bad" if rid in done.marked else "changed meanwhile; try again"
    return answers, done
