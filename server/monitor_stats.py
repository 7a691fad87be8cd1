"""Job statistics as the 2009 PanDA monitor had them: per site or per task, in bins.

For each 4 h (or 24 h) bin, by the time jobs ended: jobs finished and failed, the
mean wait (activated -> running: the job's last ``activated`` history row to its
``started_at``), the mean run time (``started_at`` -> ``ended_at``) and the CPU
efficiency (sum of cpu seconds / sum of wall seconds x cores, from the pilots'
metrics). One aggregate query per call, binned in SQL; the time arithmetic is the
only part written per dialect (PostgreSQL ``extract(epoch ...)``, SQLite
``julianday``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dawms.catalog.models import Job, Queue, Site, StateHistory, Task

from .envelope import NotFound

BIN_HOURS = (4, 24)
BINS = 12  # 4 h bins: the last two days; 24 h bins: the last twelve days
SERIES = ("finished", "failed", "mean_wait_s", "mean_run_s", "cpu_eff")


def _seconds(s: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    """``later - earlier`` in seconds, in the dialect's own arithmetic."""
    if s.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _since(s: Session, column: Any, start: datetime) -> ColumnElement[float]:
    if s.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column - literal(start))
    return (func.julianday(column) - func.julianday(start.strftime("%Y-%m-%d %H:%M:%S.%f"))
            ) * 86400.0


def _floor_start(now: datetime, hours: int) -> datetime:
    """The end of the current bin (bins are aligned on the hour grid, UTC)."""
    epoch = int(now.timestamp())
    step = hours * 3600
    return datetime.fromtimestamp((epoch // step + 1) * step, UTC)


def job_stats(s: Session, *, site: str | None = None, task_id: int | None = None,
              bin_hours: int = 4, bins: int = BINS, now: datetime | None = None
              ) -> dict[str, Any]:
    """The series for one site, one task, or everything (neither given)."""
    if bin_hours not in BIN_HOURS:
        raise ValueError(f"bin_hours must be one of {BIN_HOURS}")
    bins = min(max(bins, 1), 60)
    now = now or datetime.now(UTC)
    end = _floor_start(now, bin_hours)
    start = end - timedelta(hours=bin_hours * bins)
    step = bin_hours * 3600.0
    activated = (select(func.max(StateHistory.at))
                 .where(StateHistory.entity == "job", StateHistory.entity_id == Job.id,
                        StateHistory.to_state == "activated")
                 .correlate(Job).scalar_subquery())
    cpu = Job.metrics["cpu_s"].as_float()
    wall = Job.metrics["wall_s"].as_float()
    inner = select(
        cast(func.floor(_since(s, Job.ended_at, start) / step), Float).label("bin"),
        Job.state.label("state"),
        _seconds(s, Job.ended_at, Job.started_at).label("run_s"),
        _seconds(s, Job.started_at, activated).label("wait_s"),
        cpu.label("cpu_s"), (wall * Job.cores).label("core_s"),
    ).where(Job.ended_at >= start, Job.ended_at < end,
            Job.state.in_(("finished", "failed")))
    if site is not None:
        site_id = s.scalar(select(Site.id).where(Site.name == site))
        if site_id is None:
            raise NotFound(f"no site {site[:128]!r}")
        # the site's queue ids as values: the planner then walks (queue_id, ended_at)
        queue_ids = list(s.scalars(select(Queue.id).where(Queue.site_id == site_id)))
        inner = inner.where(Job.queue_id.in_(queue_ids))
    if task_id is not None:
        if s.get(Task, task_id) is None:
            raise NotFound(f"no task {task_id}")
        inner = inner.where(Job.task_id == task_id)
    sub = inner.subquery()
    done = sub.c.state == "finished"
    rows = s.execute(select(
        sub.c.bin,
        func.count().filter(done), func.count().filter(sub.c.state == "failed"),
        func.avg(sub.c.wait_s), func.avg(case((done, sub.c.run_s))),
        func.sum(case((and_(done, sub.c.core_s > 0), sub.c.cpu_s))),
        func.sum(case((and_(done, sub.c.core_s > 0), sub.c.core_s))),
    ).group_by(sub.c.bin)).all()
    by_bin = {int(r[0]): r for r in rows if r[0] is not None}
    out = []
    for i in range(bins):
        r = by_bin.get(i)
        b0 = start + timedelta(hours=bin_hours * i)
        if r is None:
            out.append({"start": b0.isoformat(), "finished": 0, "failed": 0,
                        "mean_wait_s": None, "mean_run_s": None, "cpu_eff": None})
            continue
        eff = (float(r[5]) / float(r[6])) if r[5] is not None and r[6] else None
        out.append({"start": b0.isoformat(), "finished": int(r[1]), "failed": int(r[2]),
                    "mean_wait_s": _round(r[3]), "mean_run_s": _round(r[4]),
                    "cpu_eff": None if eff is None else round(eff, 3)})
    return {"site": site, "task_id": task_id, "bin_hours": bin_hours,
            "start": start.isoformat(), "end": end.isoformat(), "bins": out}


def _round(v: Any) -> float | None:
    return None if v is None else round(float(v), 1)
