"""Event brokers: committed changes reach subscribers once, in this process and others.

On both databases: nothing before the commit, nothing for a rollback or a rolled
back savepoint. On PostgreSQL a second ``PostgresBroker`` stands for another
process (its own origin and LISTEN connection): it hears exactly what committed,
big id lists arrive whole over several notifications, a killed listener
connection comes back and tells its subscribers to resync, garbage on the channel
is ignored, and this process's own notifications are not delivered twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, text

from dawms.catalog import events
from dawms.catalog.db import Database
from dawms.catalog.models import Task
from dawms.catalog.states import Entity, TaskState
from dawms.catalog.transition import transition_many

PG = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


def new_tasks(db: Database, n: int) -> list[int]:
    with db.session() as s:
        rows = [Task(name=f"t{i}", owner="o", state=TaskState.REGISTERED, transformation="true",
                     input_datasets=["t:x"], output_dataset="t:o", log_dataset="t:o.log",
                     split={}, resources={}, retry={}) for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def define(s, ids: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    return transition_many(s, Entity.TASK, ids, TaskState.DEFINED,
                           expected=TaskState.REGISTERED, actor="test")


class Inbox:
    """What a subscriber got, with a wait on a condition and a deadline."""

    def __init__(self) -> None:
        self.got: list[events.StateChanged] = []
        self.resyncs = 0
        self._cond = threading.Condition()

    def __call__(self, ev: events.StateChanged) -> None:
        with self._cond:
            self.got.append(ev)
            self._cond.notify_all()

    def resync(self) -> None:
        with self._cond:
            self.resyncs += 1
            self._cond.notify_all()

    def wait(self, what: Callable[[], bool], timeout: float = 20) -> None:
        with self._cond:
            assert self._cond.wait_for(what, timeout), f"timed out; got {self.got}"

    def ids(self, reason: str | None = None) -> list[int]:
        return [i for ev in self.got if reason is None or ev.reason == reason for i in ev.ids]


@pytest.fixture
def remote(db: Database) -> Iterator[tuple[events.PostgresBroker, Inbox]]:
    """A broker of 'another process' on the same catalog, listening."""
    broker = events.PostgresBroker(db.url, db.engine, backoff_s=0.05, max_backoff_s=0.2)
    inbox = Inbox()
    broker.subscribe(inbox, on_resync=inbox.resync)
    assert broker.wait_ready(20), "the listener did not connect"
    yield broker, inbox
    broker.close()


def marker(db: Database, inbox: Inbox) -> None:
    """Commit a change and wait for ``inbox`` to hear it: whatever was committed
    before it has been delivered by then (notifications arrive in commit order)."""
    (tid,) = new_tasks(db, 1)
    with db.session() as s:
        transition_many(s, Entity.TASK, [tid], TaskState.ABORTED, expected=TaskState.REGISTERED,
                        actor="test", reason=f"marker {tid}")
    inbox.wait(lambda: tid in inbox.ids(f"marker {tid}"))


# ------------------------------------------------------------------ both databases
def test_published_after_commit_never_before(db: Database) -> None:
    ids = new_tasks(db, 3)
    inbox = Inbox()
    unsubscribe = db.broker.subscribe(inbox)
    try:
        with db.session() as s:
            assert define(s, ids) == ids
            assert inbox.got == [], "published before the commit"
        assert [(ev.entity, ev.ids, ev.to_state) for ev in inbox.got] == \
            [("task", tuple(ids), "defined")]
    finally:
        unsubscribe()


def test_a_rollback_publishes_nothing(db: Database) -> None:
    ids = new_tasks(db, 2)
    inbox = Inbox()
    unsubscribe = db.broker.subscribe(inbox)
    try:
        with pytest.raises(RuntimeError), db.session() as s:
            define(s, ids)
            raise RuntimeError("the caller fails after the transition")
        assert inbox.got == []
        with db.session() as s:  # and the change is really not there
            assert set(s.scalars(select(Task.state).where(Task.id.in_(ids)))) == {"registered"}
        # a session used again after a rollback does not carry the dropped events along
        with db._factory() as s:
            with pytest.raises(RuntimeError), s.begin():
                define(s, ids[:1])
                raise RuntimeError("rolled back")
            with s.begin():
                define(s, ids[1:])
        assert inbox.ids() == ids[1:]
    finally:
        unsubscribe()


def test_a_rolled_back_savepoint_takes_its_events_along(db: Database) -> None:
    a, b, c = new_tasks(db, 3)
    inbox = Inbox()
    unsubscribe = db.broker.subscribe(inbox)
    try:
        with db.session() as s:
            define(s, [a])
            with pytest.raises(RuntimeError), s.begin_nested():
                define(s, [b])
                raise RuntimeError("undo b")
            with s.begin_nested():  # a released savepoint keeps its events
                define(s, [c])
        assert sorted(inbox.ids()) == [a, c]
        with db.session() as s:
            assert s.get(Task, b).state == "registered"
    finally:
        unsubscribe()


def test_every_database_on_a_catalog_shares_one_broker(db: Database) -> None:
    other = Database(db.url)
    try:
        assert other.broker is db.broker
        (tid,) = new_tasks(db, 1)
        inbox = Inbox()
        unsubscribe = db.broker.subscribe(inbox)
        with other.session() as s:  # committed through the other handle: heard at once
            define(s, [tid])
        assert inbox.ids() == [tid]
        unsubscribe()
    finally:
        other.dispose()
    assert events.broker_for(db.url, db.engine) is db.broker  # still alive for ``db``


# ------------------------------------------------------------------ PostgreSQL
@PG
@pytest.mark.postgres
def test_other_processes_hear_commits_only(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    _broker, inbox = remote
    kept, undone = new_tasks(db, 2)
    with pytest.raises(RuntimeError), db.session() as s:
        define(s, [undone])
        raise RuntimeError("rolled back")
    with db.session() as s:
        define(s, [kept])
        s.flush()
        assert kept not in inbox.ids()  # NOTIFY is held by the server until the commit
    marker(db, inbox)
    assert [ev.ids for ev in inbox.got if ev.to_state == "defined"] == [(kept,)]
    assert undone not in inbox.ids()


@PG
@pytest.mark.postgres
def test_savepoints_cross_once_and_only_when_kept(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    _broker, inbox = remote
    a, b, c = new_tasks(db, 3)
    with db.session() as s:
        define(s, [a])
        with pytest.raises(RuntimeError), s.begin_nested():
            define(s, [b])
            raise RuntimeError("undo b")
        with s.begin_nested():
            define(s, [c])
    marker(db, inbox)
    assert [ev.ids for ev in inbox.got if ev.to_state == "defined"] == [(a,), (c,)]


@PG
@pytest.mark.postgres
def test_large_id_lists_travel_in_chunks(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    _broker, inbox = remote
    ids = tuple(range(10**9, 10**9 + 5000))  # 11 bytes an id: ~55 kB of ids
    payloads = events.encode(events.StateChanged("job", ids, "defined", "assigned", "a" * 999,
                                                 "r" * 9999), "me")
    assert len(payloads) > 6
    assert all(len(p.encode()) <= events.MAX_PAYLOAD for p in payloads)
    assert [i for p in payloads for i in events.decode(p)[1].ids] == list(ids)
    with db.session() as s:  # through a real commit
        events.queue(s, events.StateChanged("job", ids, "defined", "assigned", "test", "big"))
        s.execute(text("SELECT 1"))
    inbox.wait(lambda: len(inbox.ids("big")) == len(ids))
    assert inbox.ids("big") == list(ids)


@PG
@pytest.mark.postgres
def test_own_notifications_are_not_delivered_twice(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    _broker, far = remote
    near = Inbox()
    unsubscribe = db.broker.subscribe(near)
    assert db.broker.wait_ready(20)
    try:
        (tid,) = new_tasks(db, 1)
        with db.session() as s:
            define(s, [tid])
        assert near.ids() == [tid]  # at once, from the commit
        # a change committed by 'another process' reaches us through our listener,
        # after ours went through it too: by then a duplicate would have arrived
        (other,) = new_tasks(db, 1)
        (payload,) = events.encode(events.StateChanged("task", (other,), "registered",
                                                       "defined", "far"), "far-origin")
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": events.CHANNEL, "p": payload})
        near.wait(lambda: other in near.ids())
        assert near.ids() == [tid, other]
    finally:
        unsubscribe()


@PG
@pytest.mark.postgres
def test_claims_and_pilot_progress_stay_in_the_process(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    _broker, inbox = remote
    near = Inbox()
    unsubscribe = db.broker.subscribe(near)
    try:
        with db.session() as s:
            for src, dst in (("activated", "sent"), ("sent", "starting"),
                             ("starting", "running"), ("running", "finished")):
                events.queue(s, events.StateChanged("job", (1, 2), src, dst, "pilot:x"))
            s.execute(text("SELECT 1"))
    finally:
        unsubscribe()
    assert [ev.to_state for ev in near.got] == ["sent", "starting", "running", "finished"]
    marker(db, inbox)
    assert [ev.to_state for ev in inbox.got if ev.entity == "job"] == ["finished"]


@PG
@pytest.mark.postgres
def test_a_killed_listener_reconnects_and_asks_for_a_resync(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    broker, inbox = remote
    pid = broker.backend_pid
    assert pid and broker.connects == 1 and inbox.resyncs == 0
    with db.engine.begin() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    inbox.wait(lambda: inbox.resyncs == 1)
    assert broker.connects == 2 and broker.backend_pid not in (None, pid)
    marker(db, inbox)  # and it hears changes again


@PG
@pytest.mark.postgres
def test_garbage_on_the_channel_is_ignored(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    broker, inbox = remote
    with db.engine.begin() as conn:
        for junk in ("", "not json", "[1]", '{"o": "x", "e": "task", "i": ["1"]}',
                     '{"o":"x","e":"task","f":"a","t":"b","a":"","r":"","i":[true]}'):
            conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": events.CHANNEL, "p": junk})
    marker(db, inbox)
    assert all(ev.actor == "test" for ev in inbox.got)
    assert broker.connects == 1  # the same connection heard the marker: nothing broke


@PG
@pytest.mark.postgres
def test_an_unreachable_server_is_retried_and_close_is_prompt(db: Database) -> None:
    url = db.url.replace("127.0.0.1:5432", "127.0.0.1:9")  # nothing listens on port 9
    broker = events.PostgresBroker(url, db.engine, backoff_s=0.05, max_backoff_s=0.1)
    broker.subscribe(lambda ev: None)
    assert not broker.wait_ready(0.5)
    t0 = time.monotonic()
    broker.close()
    assert time.monotonic() - t0 < 2
    assert broker._thread is not None and not broker._thread.is_alive()


@PG
@pytest.mark.postgres
def test_close_stops_the_listener_at_once(db: Database, remote) -> None:  # type: ignore[no-untyped-def]
    broker, _inbox = remote
    pid = broker.backend_pid
    t0 = time.monotonic()
    broker.close()
    assert time.monotonic() - t0 < 2
    assert not broker._thread.is_alive()
    # autocommit: pg_stat_activity is read once per transaction
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        deadline = time.monotonic() + 10
        while conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                          {"p": pid}):
            assert time.monotonic() < deadline, "the listener's connection stayed open"
            time.sleep(0.05)


@PG
@pytest.mark.postgres
def test_the_listener_runs_while_someone_subscribes(db: Database) -> None:
    broker = db.broker
    assert isinstance(broker, events.PostgresBroker)
    first = Inbox()
    unsubscribe = broker.subscribe(first)
    assert broker.wait_ready(20)
    pid, thread = broker.backend_pid, broker._thread
    unsubscribe()  # the last one: the listener and its connection go
    assert thread is not None and not thread.is_alive()
    assert not broker.wait_ready(0)
    again = Inbox()
    unsubscribe = broker.subscribe(again)
    try:
        assert broker.wait_ready(20)
        assert broker.backend_pid not in (None, pid)
        (payload,) = events.encode(events.StateChanged("task", (7,), "registered", "defined",
                                                       "far"), "far-origin")
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": events.CHANNEL, "p": payload})
        again.wait(lambda: again.ids() == [7])
        assert first.got == []
    finally:
        unsubscribe()
