"""What a pilot says about its job: heartbeats, state reports, the final report.

Every report is fenced by ``(job_id, attempt, lease_token)``: a report about an
attempt that is not current (ended, retried, taken by another pilot) raises
``StaleReport`` and changes nothing, so an old attempt can never resurrect and
report success (DIRAC's lesson). A final ``finished`` report moves the job to
``holding``, registers its outputs in the DDM with their size and adler32, and
finishes it; a registration error fails it as a stage-out failure instead. The
pilot's adler32 is checked, not trusted: ``stored_outputs`` asks the DDM for the
stored files' checksums (the local DDM reads their bytes) BEFORE the report's
transaction opens, so no row lock is held while files are read, and a mismatch
registers nothing and fails the job as a stage-out failure.
Replicas the pilot gave up in stage-in (``bad_replicas``) are declared bad first
(``badreplica.py``), and a ``stagein`` failure whose inputs have no good copy
left fails as ``bad_data``, never retried: another attempt would read the same
bytes.
Every reply carries the job's pending command for its pilot (``tobekilled``);
the ``failed`` report that follows a kill makes the job ``cancelled``.
Final reports are idempotent: a pilot re-sends its final report until it is
acknowledged (the reply may have been lost in an outage), so a final report of
the current attempt and lease about a job this pilot's own report already ended
answers OK and changes nothing. A job ended by anyone else (the watcher, a kill)
still answers 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import Job, JobFile, StateHistory, StorageEndpoint, Task
from dawms.catalog.states import JOB_FINAL, PILOT_REPORT_PATHS, PILOT_REPORTABLE, Entity, JobState
from dawms.catalog.transition import StaleState, transition
from dawms.ddm_bridge.abc import DDM, FileInfo, RegistrationError
from dawms.wire import Command, JobReport, WireError

from .badreplica import declare_bad, job_inputs_lost, replicas_of_report
from .retry import retry_failed

if TYPE_CHECKING:
    from dawms.catalog.db import Database

Stored = Mapping[str, tuple[int, str]]  # file name -> (size, adler32) read from storage


class StaleReport(Exception):
    """The report is about an attempt or lease that is not current; nothing changed."""


class BadReport(ValueError):
    """The report itself is malformed; nothing changed."""


@dataclass(frozen=True)
class Fenced:
    """The columns of a fenced job a report needs (the row, spec included, is not loaded)."""

    id: int
    task_id: int
    state: str
    command: str | None
    pilot_id: str | None
    metrics: dict[str, Any] | None


_JOB = Job.__table__


def _fenced(session: Session, job_id: int, attempt: int, token: str, now: datetime,
            lock_task: bool = False, with_metrics: bool = False,
            final_ok: bool = False) -> Fenced:
    """Lock the job if ``(attempt, lease token)`` is current and not final, and stamp its
    heartbeat, in one ``UPDATE ... RETURNING`` of the few columns a report needs.
    ``final_ok``: a final job whose last change was its own pilot's report is returned
    as it is (a re-sent final report), not refused."""
    if lock_task:  # a final report may retry: take the task first, as a task kill does
        task_id = session.scalar(select(_JOB.c.task_id).where(_JOB.c.id == job_id))
        if task_id is not None:
            session.execute(select(Task.id).where(Task.id == task_id)
                            .with_for_update(read=True))
    cols = [_JOB.c.id, _JOB.c.task_id, _JOB.c.state, _JOB.c.command, _JOB.c.pilot_id]
    row = session.execute(
        update(_JOB).where(_JOB.c.id == job_id, _JOB.c.attempt == attempt,
                           _JOB.c.lease_token == token, _JOB.c.state.not_in(list(JOB_FINAL)))
        .values(heartbeat_at=now)
        .returning(*cols, _JOB.c.metrics if with_metrics else literal_column("NULL"))).first()
    if row is not None:
        return Fenced(*row)
    current = session.execute(select(_JOB.c.attempt, _JOB.c.lease_token, _JOB.c.state)
                              .where(_JOB.c.id == job_id)).first()
    if current is None:
        raise StaleReport(f"job {job_id} does not exist")
    if current.attempt != attempt or current.lease_token != token:
        raise StaleReport(f"job {job_id} attempt {attempt} with this lease is not current "
                          f"(current attempt {current.attempt}, state {current.state})")
    if final_ok and _ended_by_its_pilot(session, job_id):
        row = session.execute(select(*cols, literal_column("NULL"))
                              .where(_JOB.c.id == job_id)).one()
        return Fenced(*row)
    raise StaleReport(f"job {job_id} attempt {attempt} is already {current.state}")


def _ended_by_its_pilot(session: Session, job_id: int) -> bool:
    """Whether the job's last state change was made by its pilot's own report."""
    pilot = session.scalar(select(_JOB.c.pilot_id).where(_JOB.c.id == job_id))
    actor = session.scalar(select(StateHistory.actor).where(
        StateHistory.entity == Entity.JOB.value, StateHistory.entity_id == job_id)
        .order_by(StateHistory.id.desc()).limit(1))
    return actor == f"pilot:{pilot}"


def parse_report(report: JobReport | Mapping[str, Any]) -> JobReport:
    """The report as a record; ``BadReport`` if it is malformed (nothing changed)."""
    if isinstance(report, JobReport):
        return report
    try:
        return JobReport.from_dict(report)
    except WireError as exc:
        raise BadReport(f"{exc}; a pilot may report "
                        f"{', '.join(sorted(s.value for s in PILOT_REPORTABLE))}") from None


def pilot_update(session: Session, ddm: DDM, report: JobReport | Mapping[str, Any],
                 now: datetime | None = None, *, stored: Stored | None = None) -> dict[str, Any]:
    """Apply one pilot report; returns the reply data (``{"command": ...}``).

    ``stored``: what ``stored_outputs`` read before this transaction; without it the
    outputs' checksums are read here, under the job's row lock."""
    now = now or datetime.now(UTC)
    report = parse_report(report)
    job_id, attempt, token = report.job_id, report.attempt, report.lease_token
    state = JobState(report.state)
    if state not in PILOT_REPORTABLE:  # the record's choices come from this table
        raise BadReport(f"a pilot may not report {state.value}")
    final = state in (JobState.FAILED, JobState.FINISHED)
    job = _fenced(session, job_id, attempt, token, now, lock_task=final, final_ok=final,
                  with_metrics=bool(report.metrics))
    if job.state in JOB_FINAL:  # a re-sent final report, already applied: nothing changes
        return {"command": None}
    if report.metrics:  # the row is locked by the fence: merge and write them
        session.execute(update(_JOB).where(_JOB.c.id == job.id)
                        .values(metrics={**(job.metrics or {}), **report.metrics}))
    actor = f"pilot:{job.pilot_id}"
    fence = {"attempt": attempt, "lease_token": token, "actor": actor, "now": now}

    def step(src: str, dst: JobState, reason: str = "", **values: Any) -> str:
        try:
            transition(session, Entity.JOB, job.id, dst, expected=src, reason=reason,
                       values=values or None, **fence)
        except StaleState as exc:
            raise StaleReport(str(exc)) from None
        return dst

    current = job.state
    reply = {"command": job.command}
    path = PILOT_REPORT_PATHS.get((JobState(current), state))
    if path is None:
        raise StaleReport(f"job {job_id} is {current}; a report of {state.value} does not "
                          "follow from it")
    if report.bad_replicas:
        by_reason: dict[str, list[int]] = {}
        for replica_id, why in replicas_of_report(session, ddm, job,
                                                  report.bad_replicas).items():
            by_reason.setdefault(why, []).append(replica_id)
        for why, ids in by_reason.items():
            declare_bad(session, ddm, ids, reason=f"job {job.id} stage-in: {why}"[:2000],
                        actor=actor, now=now)
    if state == JobState.FAILED:
        diag = report.error_diag
        category = report.error_category or "pilot"
        if category == "stagein" and (lost := job_inputs_lost(session, job.id)):
            category = "bad_data"
            diag = f"no good replica left of {', '.join(lost[:10])}; {diag}"
        try:  # a failed job's log is welcome, but its failure is recorded regardless
            _register(session, ddm, job, report, types=("log",), required=False,
                      stored=stored)
        except RegistrationError as exc:
            diag = f"{diag} (log not registered: {exc})".strip()
        killed = job.command == Command.KILL  # the pilot obeyed a kill: cancelled, never retried
        step(current, JobState.CANCELLED if killed else JobState.FAILED,
             "killed on request" if killed else diag[:500],
             exit_code=report.exit_code,
             error_category="killed" if killed else category,
             error_diag=diag[:4000])
        if not killed:
            retry_failed(session, [job.id], now)
        return reply
    last = len(path) - 1 if state == JobState.FINISHED else len(path)
    for dst in path[:last]:
        current = step(current, dst, "reported by the pilot",
                       **({"started_at": now} if dst == JobState.RUNNING else {}))
    if state == JobState.FINISHED:
        try:
            _register(session, ddm, job, report, types=("out", "log"), required=True,
                      stored=stored)
        except RegistrationError as exc:
            step(current, JobState.FAILED, str(exc), exit_code=report.exit_code,
                 error_category="stageout", error_diag=str(exc)[:4000])
            retry_failed(session, [job.id], now)
            return reply
        step(current, path[-1], "outputs registered",
             exit_code=report.exit_code if report.exit_code is not None else 0)
    return reply


def _output_files(session: Session, job_id: int,
                  types: tuple[str, ...]) -> tuple[list[JobFile], StorageEndpoint | None]:
    files = list(session.scalars(select(JobFile).where(JobFile.job_id == job_id,
                                                       JobFile.type.in_(types))))
    spec = session.scalar(select(Job.spec).where(Job.id == job_id)) or {}
    endpoint = session.scalar(select(StorageEndpoint).where(
        StorageEndpoint.name == spec.get("endpoint_out")))
    return files, endpoint


def stored_outputs(db: Database, ddm: DDM, report: JobReport) -> Stored | None:
    """Before a final report's transaction: the stored size and adler32 of the outputs it
    reports, read through the DDM with no transaction open. None for any other report,
    or one whose fence is not current (its transaction refuses it anyway)."""
    if report.state not in (JobState.FINISHED, JobState.FAILED) or not report.outputs:
        return None
    with db.session() as s:  # a short read: no row is locked while the bytes are read
        job = s.execute(select(_JOB.c.id, _JOB.c.attempt, _JOB.c.lease_token, _JOB.c.state)
                        .where(_JOB.c.id == report.job_id)).first()
        if job is None or job.attempt != report.attempt \
                or job.lease_token != report.lease_token or job.state in JOB_FINAL:
            return None
        files, endpoint = _output_files(s, job.id, ("out", "log"))
        if endpoint is None:
            return None
        s.expunge(endpoint)
        infos = [FileInfo(scope=jf.scope, name=jf.lfn, size=0, adler32="") for jf in files]
    reported = {o.lfn for o in report.outputs}
    return ddm.stored_checksums(endpoint, [i for i in infos if i.name in reported])


def _register(session: Session, ddm: DDM, job: Fenced, report: JobReport,
              types: tuple[str, ...], required: bool, stored: Stored | None = None) -> None:
    """Register the reported outputs of ``types``; if ``required``, all must be there.

    Each output's size and adler32 as the pilot reports them must match what the storage
    holds (``stored``, or asked of the DDM now); any mismatch registers nothing."""
    reported = {o.lfn: o for o in report.outputs}
    files, endpoint = _output_files(session, job.id, types)
    by_dataset: dict[str, list[tuple[JobFile, FileInfo]]] = {}
    for jf in files:
        out = reported.get(jf.lfn)
        if out is None:
            if not required:
                continue  # e.g. a failed job's log: welcome, not owed
            raise RegistrationError(f"the pilot did not report output {jf.lfn}")
        # the record checked size and adler32 (8 hex digits)
        info = FileInfo(scope=jf.scope, name=jf.lfn, size=out.size, adler32=out.adler32.lower())
        by_dataset.setdefault(jf.dataset, []).append((jf, info))
    if by_dataset and endpoint is None:
        raise RegistrationError(f"job {job.id} has no output endpoint")
    infos = [info for pairs in by_dataset.values() for _, info in pairs]
    if infos and stored is None:
        stored = ddm.stored_checksums(endpoint, infos)  # type: ignore[arg-type]
    for info in infos:
        held = (stored or {}).get(info.name)
        if held is not None and held != (info.size, info.adler32):
            raise RegistrationError(
                f"output {info.name}: the stored file has size {held[0]} adler32 {held[1]}, "
                f"the pilot reported {info.size} {info.adler32}; nothing was registered")
    with session.begin_nested():  # all of the job's outputs, or none of them
        for did, pairs in by_dataset.items():
            registered = ddm.register_outputs(session, did, [i for _, i in pairs], endpoint)
            for (jf, info), f in zip(pairs, registered, strict=True):
                jf.file_id, jf.size, jf.adler32 = f.id, info.size, info.adler32
