"""The one path that writes a ``state`` column.

Every change checks the entity's transition table (``states.py``), does a
compare-and-set ``UPDATE ... WHERE id = :id AND state = :expected [AND attempt
= :attempt AND lease_token = :token]``, writes a history row and queues an event
that is published after commit. ``claim_jobs`` is the dispatch form of the same
thing: one statement (on PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``, the
``UPDATE ... RETURNING`` and the history insert as CTEs) that moves activated jobs
to ``sent`` with a fresh lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, case, insert, literal, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ClauseElement

from . import events
from .models import DataRequest, Job, Replica, StagingFile, StagingRequest, StateHistory, Task
from .states import JOB_FINAL, Entity, JobState, allowed

MODELS: dict[Entity, Any] = {
    Entity.JOB: Job,
    Entity.TASK: Task,
    Entity.REQUEST: DataRequest,
    Entity.REPLICA: Replica,
    Entity.STAGING: StagingRequest,
    Entity.STAGING_FILE: StagingFile,
}
_CHUNK = 500
_HISTORY = insert(StateHistory.__table__)  # Core: no ORM bulk bookkeeping per row


class TransitionError(Exception):
    """A state change that was refused; nothing was written."""


class IllegalTransition(TransitionError):
    """The state machine does not allow this change (or the source state is final)."""


class StaleState(TransitionError):
    """The row is not in the expected state, attempt or lease any more."""


def _timestamp_columns(entity: Entity, to: str, now: datetime) -> dict[str, Any]:
    if entity is Entity.JOB:
        cols: dict[str, Any] = {"state_changed_at": now}
        if to in JOB_FINAL:
            cols["ended_at"] = now
        if to in (JobState.STARTING, JobState.RUNNING):
            cols["heartbeat_at"] = now
        return cols
    return {"updated_at": now}


def transition(
    session: Session,
    entity: Entity,
    entity_id: int,
    to: str,
    *,
    expected: str,
    actor: str,
    reason: str = "",
    attempt: int | None = None,
    lease_token: str | None = None,
    values: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Move one row from ``expected`` to ``to``, or raise and write nothing."""
    done = transition_many(session, entity, [entity_id], to, expected=expected, actor=actor,
                           reason=reason, attempt=attempt, lease_token=lease_token,
                           values=values, now=now)
    if not done:
        model = MODELS[entity]
        current = session.execute(select(model.state).where(model.id == entity_id)).scalar()
        if current is None:
            raise StaleState(f"{entity.value} {entity_id} does not exist")
        fence = f" attempt {attempt}" if attempt is not None else ""
        raise StaleState(f"{entity.value} {entity_id}{fence} is {current}, not {expected}"
                         + (" (or its lease changed)" if lease_token is not None else ""))


def transition_many(
    session: Session,
    entity: Entity,
    ids: Iterable[int],
    to: str,
    *,
    expected: str,
    actor: str,
    reason: str = "",
    attempt: int | None = None,
    lease_token: str | None = None,
    values: dict[str, Any] | None = None,
    now: datetime | None = None,
    guard: Sequence[Any] = (),
    per_row: Mapping[str, Mapping[int, Any]] | None = None,
) -> list[int]:
    """Move every row of ``ids`` still in ``expected`` to ``to``; returns the ids moved.

    ``per_row`` sets columns whose value differs by row (column -> {id: value}, e.g.
    each job's queue), still in one statement per chunk (a ``CASE id WHEN ...``), so
    a bunch going to many queues is not a round trip per queue.

    Rows that moved on in the meantime are left alone (compare-and-set), which is
    what makes duplicated or reordered events harmless. ``guard`` adds conditions
    that must still hold at the moment of the update (e.g. "no heartbeat since").
    """
    if not allowed(entity, expected, to):
        raise IllegalTransition(f"{entity.value}: {expected} -> {to} is not allowed")
    values = dict(values or {})
    per_row = per_row or {}
    if "state" in values or "state" in per_row:
        raise ValueError("pass the new state as `to`, not in `values`")
    now = now or datetime.now(UTC)
    model = MODELS[entity]
    table = model.__table__
    written = {**_timestamp_columns(entity, to, now), **values}
    id_list = list(dict.fromkeys(ids))
    moved: list[tuple[int, int | None]] = []
    for start in range(0, len(id_list), _CHUNK):
        chunk = id_list[start:start + _CHUNK]
        conds = [model.id.in_(chunk), model.state == expected]
        if attempt is not None:
            conds.append(model.attempt == attempt)
        if lease_token is not None:
            conds.append(model.lease_token == lease_token)
        conds.extend(guard)
        # a Core statement: no ORM evaluation of the criteria per loaded object; the
        # session's copies of the moved rows are brought up to date below instead
        varying = {col: case(whens, value=table.c.id, else_=table.c[col])
                   for col, by_id in per_row.items()
                   if (whens := {i: by_id[i] for i in chunk if i in by_id})}
        stmt = (update(table).where(*conds).values(state=to, **written, **varying)
                .returning(table.c.id, table.c.attempt if entity is Entity.JOB
                           else literal_column("NULL")))
        moved.extend((row[0], row[1]) for row in session.execute(stmt))
    _sync_loaded(session, model, [m[0] for m in moved], {"state": to, **written}, per_row)
    _log(session, entity, moved, expected, to, actor, reason, now)
    return [m[0] for m in moved]


def _sync_loaded(session: Session, model: Any, ids: list[int], written: dict[str, Any],
                 per_row: Mapping[str, Mapping[int, Any]]) -> None:
    """What the update wrote, onto the objects of those rows this session holds."""
    if not session.identity_map:
        return
    plain = {k: v for k, v in written.items() if not isinstance(v, ClauseElement)}
    computed = [k for k in written if k not in plain]
    for i in ids:
        obj = session.identity_map.get(session.identity_key(model, i))
        if obj is None:
            continue
        for key, value in plain.items():
            set_committed_value(obj, key, value)
        for key, by_id in per_row.items():
            if i in by_id:
                set_committed_value(obj, key, by_id[i])
        if computed:
            session.expire(obj, computed)


def _log(session: Session, entity: Entity, moved: Sequence[tuple[int, int | None]],
         src: str, dst: str, actor: str, reason: str, now: datetime) -> None:
    if not moved:
        return
    session.execute(_HISTORY, [
        {"entity": entity.value, "entity_id": i, "from_state": src, "to_state": dst,
         "attempt": a, "at": now, "actor": actor, "reason": reason[:2000]}
        for i, a in moved
    ])
    events.queue(session, events.StateChanged(entity.value, tuple(i for i, _ in moved), src,
                                              dst, actor, reason))


def record_created(session: Session, entity: Entity, rows: Sequence[tuple[int, int | None]],
                   state: str, *, actor: str, reason: str = "",
                   now: datetime | None = None) -> None:
    """Log the birth of rows inserted in ``state`` (from "") and publish it after commit."""
    _log(session, entity, rows, "", state, actor, reason, now or datetime.now(UTC))


@lru_cache(maxsize=8)
def _claim_statement(dialect: str, fits: bool = False) -> Any:
    """The claim statement, built once per dialect (it is the dispatch hot path);
    ``fits``: only jobs with a walltime of at most ``claim_walltime`` (none unlimited).

    On PostgreSQL it is ONE statement: a locking CTE picks the rows (the
    ``ix_job_dispatch`` index ends in ``id``, so no sort at any depth), a second
    CTE moves them to ``sent`` and a third writes their history rows; the
    statement returns what the pilot gets. SQLite (no data-modifying CTEs) runs
    the UPDATE ... RETURNING and the history insert as two statements.
    """
    job = Job.__table__
    inner = (select(job.c.id)
             .where(job.c.queue_id == bindparam("claim_queue"),
                    job.c.state == JobState.ACTIVATED.value)
             .order_by(job.c.priority.desc(), job.c.id)
             .limit(bindparam("claim_n")))
    if fits:
        inner = inner.where(job.c.walltime_s > 0,
                            job.c.walltime_s <= bindparam("claim_walltime"))
    if dialect == "postgresql":
        # A materialized CTE: the locking subquery runs exactly once (inside IN (...)
        # PostgreSQL may re-run it and hand out more rows than asked for).
        claim = inner.with_for_update(skip_locked=True).cte("claim").prefix_with("MATERIALIZED")
        target = job.c.id == claim.c.id
        token = literal_column("replace(gen_random_uuid()::text, '-', '')")
    else:  # SQLite: BEGIN IMMEDIATE already makes us the only writer
        target = job.c.id.in_(inner.scalar_subquery())
        token = literal_column("lower(hex(randomblob(16)))")
    moved = (update(job)
             .where(target, job.c.state == JobState.ACTIVATED.value)
             .values(state=JobState.SENT.value, lease_token=token,
                     pilot_id=bindparam("claim_pilot"), state_changed_at=bindparam("claim_now"),
                     heartbeat_at=bindparam("claim_now"))
             .returning(job.c.id, job.c.attempt, job.c.lease_token, job.c.spec))
    if dialect != "postgresql":
        return moved
    moved_cte = moved.cte("moved")
    history = StateHistory.__table__
    logged = insert(history).from_select(
        ["entity", "entity_id", "from_state", "to_state", "attempt", "at", "actor", "reason"],
        select(literal(Entity.JOB.value), moved_cte.c.id, literal(JobState.ACTIVATED.value),
               literal(JobState.SENT.value), moved_cte.c.attempt,
               bindparam("claim_now", type_=history.c.at.type),
               bindparam("claim_actor", type_=history.c.actor.type), literal("claimed"))
    ).cte("logged")
    return select(moved_cte.c.id, moved_cte.c.attempt, moved_cte.c.lease_token,
                  moved_cte.c.spec).add_cte(logged)



def claim_jobs(session: Session, queue_id: int, n: int, pilot_id: str,
               now: datetime | None = None, *, max_walltime_s: float = 0
               ) -> list[tuple[int, int, str, dict[str, Any]]]:
    """Claim up to ``n`` activated jobs of a queue for a pilot, best priority first.

    ``max_walltime_s`` (a pilot near the end of its lifetime): only jobs whose
    walltime fits in it; 0 means any job.

    One round trip on PostgreSQL (claim and history rows in one statement); there
    concurrent claimers skip each other's locked rows instead of waiting or
    failing, so nobody is told "no jobs" while jobs remain. Returns ``(job_id,
    attempt, lease_token, spec)`` per claimed job. Core statements built once: no
    ORM work on the dispatch path.
    """
    now = now or datetime.now(UTC)
    conn = session.connection()
    dialect = conn.dialect.name
    actor = f"pilot:{pilot_id}"
    params = {"claim_queue": queue_id, "claim_n": n, "claim_pilot": pilot_id, "claim_now": now,
              "claim_actor": actor}
    if max_walltime_s > 0:
        params["claim_walltime"] = int(max_walltime_s)
    rows = [(r[0], r[1], r[2], r[3] or {}) for r in conn.execute(
        _claim_statement(dialect, fits=max_walltime_s > 0), params)]
    if rows:
        if dialect != "postgresql":  # PostgreSQL wrote them in the claim statement
            conn.execute(_HISTORY, [
                {"entity": Entity.JOB.value, "entity_id": r[0],
                 "from_state": JobState.ACTIVATED.value, "to_state": JobState.SENT.value,
                 "attempt": r[1], "at": now, "actor": actor, "reason": "claimed"}
                for r in rows])
        events.queue(session, events.StateChanged(Entity.JOB.value, tuple(r[0] for r in rows),
                                                  JobState.ACTIVATED.value,
                                                  JobState.SENT.value, actor, "claimed"))
    return rows
