"""Catalog events: what a committed transition tells this process and the others.

``transition()`` queues an event on the session; it is published only after the
transaction commits (never for a rollback, nor for a rolled-back savepoint), so
a subscriber never acts on a change the DB does not hold. This is the fast path
that lets the activator run the moment a data request completes; the DB stays
the record and the periodic daemons the safety net.

A broker carries committed events to subscribers. ``Database`` picks it by URL
(``broker_for``), one per catalog per process:

- ``InProcessBroker`` (SQLite: one process does everything) calls this
  process's subscribers right after the commit.
- ``PostgresBroker`` does that too, and also issues ``pg_notify`` inside the
  committing transaction: PostgreSQL delivers a notification only when that
  transaction commits, so other processes hear exactly the committed changes. A
  listener thread per process (its own connection, ``LISTEN``) hands them to
  local subscribers, skipping the ones this broker sent itself, so each event
  reaches each subscriber once. Notifications sent while the listener is
  disconnected are lost: after a reconnect subscribers are told to resync
  (``on_resync``). A notification is a wake-up only.

The module-level ``subscribe`` is a tap on every event committed by this
process (any catalog), for observers and tests inside one process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, make_url, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

log = logging.getLogger(__name__)

CHANNEL = "dawms_events"
MAX_PAYLOAD = 7999  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more
MAX_TEXT = 256  # actor and reason are cut to this in a notification (ids never are)
# Changes that stay in the process, as (entity, new state): a pilot's claim and
# its progress into the run wake no daemon, and every notifying commit takes
# PostgreSQL's global NOTIFY lock (notifying claims halved bench.claim_rate).
LOCAL_ONLY = frozenset({("job", "sent"), ("job", "starting"), ("job", "running")})


@dataclass(frozen=True)
class StateChanged:
    """One committed state change."""

    entity: str
    ids: tuple[int, ...]
    from_state: str
    to_state: str
    actor: str
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[StateChanged], None]
Resync = Callable[[], None]
_taps: list[Subscriber] = []
_taps_lock = threading.Lock()
_KEY = "dawms.pending_events"


def subscribe(fn: Subscriber) -> Callable[[], None]:
    """Call ``fn`` for every change this process commits; returns the unsubscriber."""
    with _taps_lock:
        _taps.append(fn)

    def unsubscribe() -> None:
        with _taps_lock:
            if fn in _taps:
                _taps.remove(fn)

    return unsubscribe


def _call(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a subscriber's bug must not undo a committed change
        log.exception("event subscriber %r failed on %r", fn, args)


class EventBroker:
    """Carries committed events to this process's subscribers (base: in-process)."""

    def __init__(self) -> None:
        self._subs: dict[object, tuple[Subscriber, Resync | None]] = {}
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber, on_resync: Resync | None = None) -> Callable[[], None]:
        """Call ``fn`` for every committed change of this catalog, ``on_resync`` when
        events may have been missed; returns a function that unsubscribes."""
        token = object()
        with self._lock:
            self._subs[token] = (fn, on_resync)
        self._subscribed()

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(token, None)
                last = not self._subs
            if last:
                self._unsubscribed()

        return unsubscribe

    def wait_ready(self, timeout: float) -> bool:
        """True once events of other processes reach subscribers (at once here)."""
        return True

    def before_commit(self, session: Session, pending: list[StateChanged]) -> None:
        """Inside the committing transaction (a broker that crosses processes sends here)."""

    def publish_local(self, pending: Iterable[StateChanged]) -> None:
        """After the commit: every subscriber of this process, and the taps."""
        with self._lock:
            subs = [fn for fn, _ in self._subs.values()]
        with _taps_lock:
            subs += _taps
        for ev in pending:
            for fn in subs:
                _call(fn, ev)

    def _deliver_remote(self, ev: StateChanged) -> None:
        with self._lock:
            subs = [fn for fn, _ in self._subs.values()]
        for fn in subs:
            _call(fn, ev)

    def _resync(self) -> None:
        with self._lock:
            hooks = [r for _, r in self._subs.values() if r is not None]
        for hook in hooks:
            _call(hook)

    def _subscribed(self) -> None:
        """A subscriber arrived (a listener starts here)."""

    def _unsubscribed(self) -> None:
        """The last subscriber left (a listener stops here)."""

    def close(self) -> None:
        """Stop whatever the broker runs; local delivery keeps working."""


class InProcessBroker(EventBroker):
    """SQLite: one process holds the catalog, so its subscribers are everyone."""


class PostgresBroker(EventBroker):
    """``pg_notify`` in the committing transaction; a listener thread per process."""

    def __init__(self, url: str, engine: Engine, *, backoff_s: float = 0.2,
                 max_backoff_s: float = 10.0) -> None:
        super().__init__()
        self.origin = uuid.uuid4().hex[:16]
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._engine = engine
        self._backoff, self._max_backoff = backoff_s, max_backoff_s
        self._wake_channel = f"dawms_wake_{self.origin}"
        self._stop = threading.Event()  # the running listener's; a new one per start
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.connects = 0  # successful LISTEN connections (1 + reconnects)
        self.backend_pid: int | None = None  # the listener's server process, while connected

    # ---------------------------------------------------------------- sending
    def before_commit(self, session: Session, pending: list[StateChanged]) -> None:
        payloads = [p for ev in pending
                    if (ev.entity, ev.to_state) not in LOCAL_ONLY
                    for p in encode(ev, self.origin)]
        if payloads:  # one round trip, however many events the transaction holds
            session.execute(text("SELECT pg_notify(:ch, p) FROM unnest(CAST(:ps AS text[])) p"),
                            {"ch": CHANNEL, "ps": payloads})

    # -------------------------------------------------------------- listening
    def _subscribed(self) -> None:
        """The listener runs while someone subscribes (a connection per process)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() \
                    and not self._stop.is_set():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._listen, args=(self._stop,),
                                            daemon=True, name=f"dawms-events-{self.origin}")
            self._thread.start()

    def _unsubscribed(self) -> None:
        self.close()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _listen(self, stop: threading.Event) -> None:
        import psycopg

        delay, failed = self._backoff, False
        while not stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10,
                                     keepalives=1, keepalives_idle=30, keepalives_interval=10,
                                     keepalives_count=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {self._wake_channel}")
                    self.backend_pid = conn.info.backend_pid
                    if stop.is_set():  # closed while we connected
                        return
                    self.connects += 1
                    self._ready.set()
                    delay = self._backoff
                    if failed:  # this listener was cut off (or never got through) before
                        log.info("event listener reconnected: subscribers resync")
                        self._resync()
                    for note in conn.notifies():
                        if stop.is_set():
                            return
                        if note.channel == CHANNEL:
                            self._receive(note.payload)
                    raise psycopg.OperationalError("the notification stream ended")
            except psycopg.Error as exc:
                self._ready.clear()
                self.backend_pid = None
                failed = True
                if stop.is_set():
                    return
                log.warning("event listener lost its connection (%s); retrying in %.1fs",
                            exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, self._max_backoff)

    def _receive(self, payload: str) -> None:
        try:
            origin, ev = decode(payload)
        except ValueError as exc:  # anyone who may connect can NOTIFY: never trust it
            log.warning("ignored a malformed event notification: %s", exc)
            return
        if origin != self.origin:  # our own events were delivered at commit already
            self._deliver_remote(ev)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._ready.clear()
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            try:  # wake the listener out of its wait (again, if it was not listening yet)
                with self._engine.connect() as conn:
                    conn.execute(text("SELECT pg_notify(:ch, '')"), {"ch": self._wake_channel})
                    conn.commit()
            except Exception as exc:  # the DB is gone: the listener is in its backoff wait
                log.debug("could not wake the event listener: %s", exc)
            thread.join(0.2)
        if thread.is_alive():
            log.warning("the event listener did not stop within 10 s")


# ---------------------------------------------------------------- wire form
def encode(ev: StateChanged, origin: str) -> list[str]:
    """``ev`` as NOTIFY payloads of at most MAX_PAYLOAD bytes: ids split over several."""
    head: dict[str, Any] = {"o": origin, "e": ev.entity, "f": ev.from_state, "t": ev.to_state,
                            "a": ev.actor[:MAX_TEXT], "r": ev.reason[:MAX_TEXT]}
    if ev.extra and len(_dumps(ev.extra).encode()) <= MAX_TEXT:
        head["x"] = ev.extra
    base = len(_dumps({**head, "i": []}).encode())  # < 2 kB: the texts are cut above
    return [_dumps({**head, "i": chunk}) for chunk in _chunks(ev.ids, MAX_PAYLOAD - base)]


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"), ensure_ascii=False)


def _chunks(ids: tuple[int, ...], room: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    used = 0
    for i in ids:
        cost = len(str(i)) + (1 if chunk else 0)
        if chunk and used + cost > room:
            yield chunk
            chunk, used, cost = [], 0, len(str(i))
        chunk.append(i)
        used += cost
    if chunk:
        yield chunk


def decode(payload: str) -> tuple[str, StateChanged]:
    """Parse a notification; ValueError for anything that is not one of ours."""
    try:
        d = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("not an object")
    strings = [d.get(k) for k in ("o", "e", "f", "t", "a", "r")]
    ids, extra = d.get("i"), d.get("x", {})
    if not all(isinstance(s, str) for s in strings) or not isinstance(extra, dict) \
            or not isinstance(ids, list) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError("fields of the wrong type")
    origin, entity, src, dst, actor, reason = strings
    return origin, StateChanged(entity, tuple(ids), src, dst, actor, reason, extra)


# ---------------------------------------------------------------- brokers per URL
_brokers: weakref.WeakValueDictionary[str, EventBroker] = weakref.WeakValueDictionary()
_brokers_lock = threading.Lock()


def broker_for(url: str, engine: Engine) -> EventBroker:
    """The broker of the catalog at ``url`` in this process: one per catalog, shared by
    every ``Database`` on it (its listener runs while it has subscribers)."""
    key = make_url(url).set(drivername=make_url(url).get_backend_name()) \
        .render_as_string(hide_password=False)
    with _brokers_lock:
        broker = _brokers.get(key)
        if broker is None:
            broker = (PostgresBroker(url, engine) if engine.dialect.name == "postgresql"
                      else InProcessBroker())
            _brokers[key] = broker
        return broker


# ---------------------------------------------------------------- session hooks
def queue(session: Session, ev: StateChanged) -> None:
    """Publish ``ev`` when the session's transaction commits (dropped on rollback)."""
    savepoints: list[SessionTransaction] = []
    tx = session.get_nested_transaction()
    while tx is not None:
        if tx.nested:
            savepoints.append(tx)
        tx = tx.parent
    session.info.setdefault(_KEY, []).append((ev, tuple(savepoints)))


def install(factory: sessionmaker[Session], broker: EventBroker) -> None:
    @sa_event.listens_for(factory, "before_commit")
    def _before_commit(session: Session) -> None:
        if session.in_nested_transaction():  # a savepoint released: not yet committed
            return
        pending = [ev for ev, _ in session.info.get(_KEY, ())]
        if pending:
            broker.before_commit(session, pending)

    @sa_event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():
            return
        pending = session.info.pop(_KEY, [])
        if pending:
            broker.publish_local([ev for ev, _ in pending])

    @sa_event.listens_for(factory, "after_soft_rollback")
    def _after_rollback(session: Session, previous: SessionTransaction) -> None:
        if previous.nested:  # a savepoint rolled back: only what it queued goes
            kept = [(ev, sps) for ev, sps in session.info.get(_KEY, ())
                    if not any(sp is previous for sp in sps)]
            session.info[_KEY] = kept
        elif previous.parent is None:
            session.info.pop(_KEY, None)
