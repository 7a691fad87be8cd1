"""Daemon leases: one scheduler instance per daemon at a time, through the DB.

Several ``dawms server``/``dawms scheduler`` processes may share one PostgreSQL
catalog. Before each run a daemon takes (or renews) its lease; another instance
holding a live lease means this one skips the run. A holder that dies loses the
lease when it expires, and the next instance takes over.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import DaemonLock


def acquire(session: Session, name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
    """Take or renew the lease on ``name`` for ``holder``; False if another holds it."""
    res = session.execute(
        update(DaemonLock)
        .where(DaemonLock.name == name,
               or_(DaemonLock.holder == holder, DaemonLock.acquired_until < now))
        .values(holder=holder, acquired_until=now + ttl))
    if res.rowcount:
        return True
    try:
        with session.begin_nested():
            session.add(DaemonLock(name=name, holder=holder, acquired_until=now + ttl))
    except IntegrityError:  # it exists and someone else holds it
        return False
    return True


def succeeded(session: Session, name: str, holder: str, now: datetime,
              duration_s: float) -> None:
    """Record that ``holder`` just ran ``name`` to the end (only while it holds the lease)."""
    session.execute(update(DaemonLock)
                    .where(DaemonLock.name == name, DaemonLock.holder == holder)
                    .values(last_success_at=now, last_duration_s=duration_s))


def release(session: Session, holder: str) -> None:
    """Give up every lease of ``holder`` (on a clean shutdown)."""
    session.execute(delete(DaemonLock).where(DaemonLock.holder == holder))
