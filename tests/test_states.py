"""The state machines and the one transition path, on SQLite and PostgreSQL.

Every (source, target) pair of every entity machine is generated from the enums:
the pairs outside the table are refused and write nothing, the pairs inside are
applied with one history row each. Final states never move; the compare-and-set
fences (state, attempt, lease token) refuse stale callers; events reach
subscribers only after commit; ``claim_jobs`` never hands one job to two pilots.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dawms.catalog import events
from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    File,
    Job,
    Queue,
    Replica,
    Site,
    StagingFile,
    StagingRequest,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.states import (
    JOB_FINAL,
    MACHINES,
    STAGING_FINAL,
    TASK_FINAL,
    Entity,
    is_final,
)
from dawms.catalog.transition import (
    MODELS,
    IllegalTransition,
    StaleState,
    claim_jobs,
    transition,
    transition_many,
)
from dawms.ddm_bridge.events import apply_request_outcome

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
_seq = itertools.count()


class World:
    """Minimal rows every entity needs: a site, an endpoint, a queue, a task."""

    def __init__(self, s: Session) -> None:
        site = Site(name="S")
        s.add(site)
        s.flush()
        self.endpoint = StorageEndpoint(name="S_DISK", site_id=site.id, url_prefix="file:///s")
        self.queue = Queue(name="S_PROD", site_id=site.id)
        s.add_all([self.endpoint, self.queue])
        s.flush()
        self.task_id = new_row(s, Entity.TASK, "running", self)


def new_row(s: Session, entity: Entity, state: str, w: World | None, **kw: object) -> int:
    n = next(_seq)
    if entity is Entity.TASK:
        row = Task(name=f"t{n}", owner="o", state=state, transformation="true",
                   input_datasets=["t:x"], output_dataset="t:o", log_dataset="t:o.log",
                   split={"files_per_job": 1}, resources={}, retry={}, **kw)
    elif entity is Entity.JOB:
        kw.setdefault("queue_id", w.queue.id)
        row = Job(task_id=w.task_id, job_index=n, state=state, **kw)
    elif entity is Entity.REQUEST:
        row = DataRequest(name=f"r{n}", endpoint_id=w.endpoint.id, state=state, **kw)
    elif entity in (Entity.STAGING, Entity.STAGING_FILE):
        req = StagingRequest(task_id=w.task_id, dataset="t:x", source_id=w.endpoint.id,
                             destination_id=w.endpoint.id,
                             state=state if entity is Entity.STAGING else "staging", **kw)
        s.add(req)
        s.flush()
        if entity is Entity.STAGING:
            return req.id
        f = File(scope="t", name=f"f{n}", size=1, adler32="00020002", guid=f"g{n}")
        s.add(f)
        s.flush()
        row = StagingFile(request_id=req.id, file_id=f.id, state=state, size=1)
    else:
        f = File(scope="t", name=f"f{n}", size=1, adler32="00020002", guid=f"g{n}")
        s.add(f)
        s.flush()
        row = Replica(file_id=f.id, endpoint_id=w.endpoint.id, state=state, **kw)
    s.add(row)
    s.flush()
    return row.id


def states_of(s: Session, entity: Entity, ids: list[int]) -> dict[int, str]:
    model = MODELS[entity]
    return dict(s.execute(select(model.id, model.state).where(model.id.in_(ids))).all())


def history(s: Session, entity: Entity | None = None) -> list[StateHistory]:
    where = [StateHistory.entity == entity.value] if entity else []
    return list(s.scalars(select(StateHistory).where(*where).order_by(StateHistory.id)))


@pytest.fixture
def world(db: Database) -> World:
    with db.session() as s:
        return World(s)


@pytest.fixture
def published() -> list[events.StateChanged]:
    got: list[events.StateChanged] = []
    unsubscribe = events.subscribe(got.append)
    yield got
    unsubscribe()


ENTITIES = pytest.mark.parametrize("entity", list(Entity), ids=[e.value for e in Entity])


@ENTITIES
def test_pairs_outside_the_table_are_refused_and_write_nothing(
        db: Database, world: World, entity: Entity, published: list) -> None:
    enum, table = MACHINES[entity]
    with db.session() as s:
        rows = {src: new_row(s, entity, src, world) for src in enum}
    refused = 0
    with db.session() as s:
        for src, dst in itertools.product(enum, enum):
            if dst in table[src]:
                continue
            with pytest.raises(IllegalTransition, match=f"{src.value} -> {dst.value}"):
                transition(s, entity, rows[src], dst, expected=src, actor="test")
            refused += 1
    assert refused == len(enum) ** 2 - sum(len(v) for v in table.values()) > 0
    with db.session() as s:
        assert states_of(s, entity, list(rows.values())) == {i: src for src, i in rows.items()}
        assert [h for h in history(s) if h.from_state] == []
    assert published == []


@ENTITIES
def test_pairs_in_the_table_are_applied_with_one_history_row(
        db: Database, world: World, entity: Entity, published: list) -> None:
    enum, table = MACHINES[entity]
    pairs = [(src, dst) for src in enum for dst in sorted(table[src])]
    with db.session() as s:
        rows = {p: new_row(s, entity, p[0], world, **({"attempt": 3}
                                                      if entity is Entity.JOB else {}))
                for p in pairs}
    with db.session() as s:
        for (src, dst), row_id in rows.items():
            transition(s, entity, row_id, dst, expected=src, actor="test:states",
                       reason=f"{src}->{dst}", now=NOW)
        assert published == []  # nothing before commit
    with db.session() as s:
        assert states_of(s, entity, list(rows.values())) == {i: p[1] for p, i in rows.items()}
        hist = {h.entity_id: h for h in history(s, entity)}
        assert len(hist) == len(history(s, entity)) == len(pairs)
        for (src, dst), row_id in rows.items():
            h = hist[row_id]
            assert (h.from_state, h.to_state, h.actor, h.reason) == \
                (src, dst, "test:states", f"{src}->{dst}")
            assert h.at == NOW
            assert h.attempt == (3 if entity is Entity.JOB else None)
        if entity is Entity.JOB:
            for (_, dst), row_id in rows.items():
                job = s.get(Job, row_id)
                assert job.state_changed_at == NOW
                assert (job.ended_at == NOW) == (dst in JOB_FINAL)
                assert (job.heartbeat_at == NOW) == (dst in ("starting", "running"))
        else:
            assert {s.get(MODELS[entity], i).updated_at for i in rows.values()} == {NOW}
    assert sorted((e.ids[0], e.from_state, e.to_state) for e in published) == \
        sorted((i, src, dst) for (src, dst), i in rows.items())


@pytest.mark.parametrize("entity", [Entity.JOB, Entity.TASK, Entity.REQUEST, Entity.STAGING,
                                    Entity.STAGING_FILE],
                         ids=["job", "task", "data_request", "staging_request",
                              "staging_file"])  # a bad replica may be repaired
def test_final_states_never_change(db: Database, world: World, entity: Entity) -> None:
    enum, table = MACHINES[entity]
    finals = [st for st in enum if is_final(entity, st)]
    assert finals and all(not table[st] for st in finals)
    with db.session() as s:
        rows = {f: new_row(s, entity, f, world) for f in finals}
    with db.session() as s:
        for final, dst in itertools.product(finals, enum):
            with pytest.raises(IllegalTransition):
                transition(s, entity, rows[final], dst, expected=final, actor="test")
            # a caller who believes the row is still in some earlier state is stale
            for src in (x for x in enum if dst in table[x]):
                with pytest.raises(StaleState, match=f"is {final.value}, not {src.value}"):
                    transition(s, entity, rows[final], dst, expected=src, actor="test")
    with db.session() as s:
        assert states_of(s, entity, list(rows.values())) == {i: f for f, i in rows.items()}
        assert history(s) == []


def test_final_sets_are_the_designed_ones() -> None:
    assert {s.value for s in JOB_FINAL} == {"finished", "failed", "closed", "cancelled"}
    assert {s.value for s in STAGING_FINAL} == {"done", "failed", "cancelled"}
    assert {s.value for s in TASK_FINAL} == {"done", "finished", "failed", "broken", "aborted"}


def test_stale_attempt_or_lease_is_refused_and_writes_nothing(
        db: Database, world: World) -> None:
    with db.session() as s:
        job_id = new_row(s, Entity.JOB, "running", world, attempt=2, lease_token="tok")
    bad = {"error_category": "x", "error_diag": "must not be written"}
    for attempt, token in ((1, "tok"), (3, "tok"), (2, "other"), (1, "other")):
        with db.session() as s:
            with pytest.raises(StaleState, match=f"job {job_id}"):
                transition(s, Entity.JOB, job_id, "failed", expected="running", actor="pilot",
                           attempt=attempt, lease_token=token, values=bad)
            assert transition_many(s, Entity.JOB, [job_id], "failed", expected="running",
                                   actor="pilot", attempt=attempt, lease_token=token) == []
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.error_diag, job.ended_at) == ("running", "", None)
        assert history(s) == []
    with db.session() as s:  # the right fence passes
        transition(s, Entity.JOB, job_id, "failed", expected="running", actor="pilot",
                   attempt=2, lease_token="tok", values=bad)
    with db.session() as s:
        assert s.get(Job, job_id).error_diag == "must not be written"
        assert [(h.from_state, h.to_state, h.attempt) for h in history(s)] == \
            [("running", "failed", 2)]


def test_compare_and_set_second_transition_from_the_same_state_is_stale(
        db: Database, world: World) -> None:
    with db.session() as s:
        job_id = new_row(s, Entity.JOB, "activated", world)
    with db.session() as s:
        transition(s, Entity.JOB, job_id, "sent", expected="activated", actor="first")
    with db.session() as s, pytest.raises(StaleState, match="is sent, not activated"):
        transition(s, Entity.JOB, job_id, "closed", expected="activated", actor="second")
    with db.session() as s:
        assert s.get(Job, job_id).state == "sent"
        assert [h.actor for h in history(s)] == ["first"]


def test_compare_and_set_under_concurrency_lets_exactly_one_win(
        db: Database, world: World) -> None:
    with db.session() as s:
        job_id = new_row(s, Entity.JOB, "activated", world)
    barrier = threading.Barrier(6)
    results: list[str] = []

    def racer(i: int) -> None:
        barrier.wait()
        try:
            with db.session() as s:
                transition(s, Entity.JOB, job_id, "sent", expected="activated",
                           actor=f"racer{i}")
            results.append("won")
        except StaleState:
            results.append("stale")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["stale"] * 5 + ["won"]
    with db.session() as s:
        assert len(history(s, Entity.JOB)) == 1


def test_transition_many_moves_only_rows_in_the_expected_state(
        db: Database, world: World, published: list) -> None:
    with db.session() as s:
        ids = [new_row(s, Entity.JOB, st, world, attempt=i + 1)
               for i, st in enumerate(["defined", "waiting", "defined", "running", "defined"])]
    want = [ids[0], ids[2], ids[4]]
    with db.session() as s:
        moved = transition_many(s, Entity.JOB, [*ids, ids[0], 987654], "assigned",
                                expected="defined", actor="broker",
                                values={"queue_id": world.queue.id})
    assert sorted(moved) == want
    with db.session() as s:
        assert states_of(s, Entity.JOB, ids) == dict(zip(
            ids, ["assigned", "waiting", "assigned", "running", "assigned"], strict=True))
        hist = history(s, Entity.JOB)
        assert sorted((h.entity_id, h.attempt) for h in hist) == [(i, ids.index(i) + 1)
                                                                   for i in want]
        assert {s.get(Job, i).queue_id for i in (ids[1], ids[3])} == {world.queue.id}
    assert [(sorted(e.ids), e.to_state) for e in published] == [(want, "assigned")]


def test_transition_many_over_chunks(db: Database, world: World, published: list) -> None:
    with db.session() as s:
        s.execute(Job.__table__.insert(), [  # Core fills the column defaults
            {"task_id": world.task_id, "job_index": i, "state": "defined"} for i in range(1203)])
        ids = list(s.scalars(select(Job.id)))
    with db.session() as s:
        assert sorted(transition_many(s, Entity.JOB, ids, "closed", expected="defined",
                                      actor="t")) == sorted(ids)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StateHistory)) == 1203
    assert len(published) == 1 and len(published[0].ids) == 1203


def test_events_are_published_after_commit_and_never_after_rollback(
        db: Database, world: World, published: list) -> None:
    with db.session() as s:
        a, b = (new_row(s, Entity.JOB, "defined", world) for _ in range(2))
    with db.session() as s:
        transition(s, Entity.JOB, a, "assigned", expected="defined", actor="t", reason="go")
        assert published == []
    assert [(e.entity, e.ids, e.from_state, e.to_state, e.actor, e.reason)
            for e in published] == [("job", (a,), "defined", "assigned", "t", "go")]
    published.clear()
    with pytest.raises(RuntimeError), db.session() as s:
        transition(s, Entity.JOB, b, "assigned", expected="defined", actor="t")
        raise RuntimeError("roll back")
    assert published == []
    with db.session() as s:
        assert s.get(Job, b).state == "defined"
        # the rolled-back change's event is not carried into the next transaction
        transition(s, Entity.JOB, b, "waiting", expected="defined", actor="t")
    assert [(e.ids, e.to_state) for e in published] == [((b,), "waiting")]


def test_a_savepoint_does_not_publish_the_outer_transactions_events(
        db: Database, world: World, published: list) -> None:
    """``apply_request_outcome`` keeps the DDM event under a savepoint; releasing
    that savepoint is not a commit, so nothing may be published before the real one."""
    with db.session() as s:
        job_id = new_row(s, Entity.JOB, "defined", world)
        req_id = new_row(s, Entity.REQUEST, "requested", world)
    with pytest.raises(RuntimeError), db.session() as s:
        transition(s, Entity.JOB, job_id, "assigned", expected="defined", actor="t")
        assert apply_request_outcome(s, source="test", dedup_key="k1", outcome="done",
                                     request_id=req_id, now=NOW) == "applied"
        assert published == [], "published before commit"
        raise RuntimeError("roll back")
    assert published == [], "published a rolled-back change"
    with db.session() as s:
        assert s.get(Job, job_id).state == "defined"


# ------------------------------------------------------------------ claim_jobs
def _activated(db: Database, w: World, priorities: list[int], queue_id: int | None = None,
               state: str = "activated") -> list[int]:
    with db.session() as s:
        return [new_row(s, Entity.JOB, state, w, priority=p, spec={"n": i},
                        queue_id=queue_id or w.queue.id) for i, p in enumerate(priorities)]


def test_claim_jobs_never_hands_a_job_to_two_claimers(db: Database, world: World) -> None:
    ids = _activated(db, world, [500 + i % 7 for i in range(50)])
    barrier = threading.Barrier(8)
    claims: list[tuple[str, int, int, str, dict]] = []
    errors: list[BaseException] = []

    def claimer(k: int) -> None:
        barrier.wait()
        try:
            while True:
                with db.session() as s:
                    rows = claim_jobs(s, world.queue.id, 1 + k % 3, f"pilot{k}")
                if not rows:
                    return
                claims.extend((f"pilot{k}", *r) for r in rows)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert Counter(c[1] for c in claims) == Counter(ids)  # each job exactly once
    tokens = [c[3] for c in claims]
    assert len(set(tokens)) == 50 and all(len(t) == 32 for t in tokens)
    with db.session() as s:
        for pilot, job_id, attempt, token, spec in claims:
            job = s.get(Job, job_id)
            assert (job.state, job.pilot_id, job.lease_token) == ("sent", pilot, token)
            assert spec == {"n": ids.index(job_id)} and attempt == job.attempt
        hist = history(s, Entity.JOB)
        assert sorted((h.entity_id, h.actor) for h in hist if h.to_state == "sent") == \
            sorted((c[1], f"pilot:{c[0]}") for c in claims)
        assert all(h.from_state == "activated" for h in hist)


def test_claim_jobs_takes_the_best_priority_first(db: Database, world: World) -> None:
    with db.session() as s:
        other = Queue(name="OTHER", site_id=world.queue.site_id)
        s.add(other)
        s.flush()
        other_id = other.id
    ids = _activated(db, world, [500, 900, 100, 900, 700])
    _activated(db, world, [1000], queue_id=other_id)  # another queue's job
    _activated(db, world, [2000], state="assigned")  # not yet activated
    with db.session() as s:
        first = claim_jobs(s, world.queue.id, 2, "p")
    assert sorted(r[0] for r in first) == [ids[1], ids[3]]  # both 900s
    order = []
    while True:
        with db.session() as s:
            rows = claim_jobs(s, world.queue.id, 1, "p")
        if not rows:
            break
        order.append(rows[0][0])
    assert order == [ids[4], ids[0], ids[2]]  # 700, 500, 100
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.state == "sent")) == 5
