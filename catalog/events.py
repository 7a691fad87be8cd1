"""Catalog events: what a committed transition tells the rest of the process.

``transition()`` queues an event on the session; it is published only after the
transaction commits (never for a rollback), so a subscriber never acts on a
change the DB does not hold. This is the in-process fast path that lets the
activator run the moment a data request completes; the DB stays the record and
the periodic daemons the safety net.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


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
_subscribers: list[Subscriber] = []
_lock = threading.Lock()
_KEY = "dawms.pending_events"


def subscribe(fn: Subscriber) -> Callable[[], None]:
    """Call ``fn`` for every committed change; returns a function that unsubscribes."""
    with _lock:
        _subscribers.append(fn)

    def unsubscribe() -> None:
        with _lock:
            if fn in _subscribers:
                _subscribers.remove(fn)

    return unsubscribe


def queue(session: Session, ev: StateChanged) -> None:
    session.info.setdefault(_KEY, []).append(ev)


def install(factory: sessionmaker[Session]) -> None:
    @sa_event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():  # a savepoint released: not yet committed
            return
        pending = session.info.pop(_KEY, [])
        with _lock:
            subs = list(_subscribers)
        for ev in pending:
            for fn in subs:
                try:
                    fn(ev)
                except Exception:  # a subscriber's bug must not undo a committed change
                    log.exception("event subscriber %r failed on %r", fn, ev)

    @sa_event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        if session.in_nested_transaction():  # only a savepoint: the outer events stand
            return
        session.info.pop(_KEY, None)
