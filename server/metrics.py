"""``/metrics`` in Prometheus' text format (prometheus-client), for a ``reader`` token.

Two kinds of figures. Counters and histograms of this process: pilot dispatch
(``dawms_dispatch_seconds``, ``dawms_dispatched_jobs_total`` by queue), pilot
reports (``dawms_report_seconds``, ``dawms_reports_total`` by state and result),
daemon cycles (``dawms_daemon_cycle_seconds``, ``dawms_daemon_failures_total``)
and DDM events (``dawms_ddm_events_total`` by source, outcome, result). And
gauges read from the catalog at each scrape, so they are the same whichever
server process answers: jobs by state and queue (``dawms_jobs``), tasks by state
(``dawms_tasks``), pilots holding jobs by queue (``dawms_pilots``), open data
requests and the age of the oldest by kind, replicas by state, and each daemon's
last success and last cycle (from its lease row, whichever process ran it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DaemonLock, DataRequest, Job, Queue, Replica, Task
from dawms.catalog.states import JOB_WITH_PILOT, RequestState

from .auth import METRICS

router = APIRouter(tags=["monitor"])
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DISPATCH_SECONDS = Histogram("dawms_dispatch_seconds", "acquire_jobs: time to answer a pilot",
                             ["queue"], buckets=_LATENCY)
DISPATCHED = Counter("dawms_dispatched_jobs", "jobs handed to pilots", ["queue"])
REPORT_SECONDS = Histogram("dawms_report_seconds", "update_job: time to apply one report",
                           ["state"], buckets=_LATENCY)
REPORTS = Counter("dawms_reports", "pilot reports by reported state and result (ok, stale, "
                  "refused)", ["state", "result"])


class CatalogCollector(Collector):
    """Gauges read from the catalog at scrape time (a few grouped queries)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.db.session() as s:
            jobs = s.execute(select(Job.state, Queue.name, func.count())
                             .outerjoin(Queue, Queue.id == Job.queue_id)
                             .group_by(Job.state, Queue.name)).all()
            tasks = s.execute(select(Task.state, func.count()).group_by(Task.state)).all()
            pilots = s.execute(select(Queue.name, func.count(func.distinct(Job.pilot_id)))
                               .join(Queue, Queue.id == Job.queue_id)
                               .where(Job.state.in_(list(JOB_WITH_PILOT)))
                               .group_by(Queue.name)).all()
            requests = s.execute(select(DataRequest.kind, func.count(),
                                        func.min(DataRequest.created_at))
                                 .where(DataRequest.state == RequestState.REQUESTED)
                                 .group_by(DataRequest.kind)).all()
            replicas = s.execute(select(Replica.state, func.count())
                                 .group_by(Replica.state)).all()
            daemons = s.execute(select(DaemonLock.name, DaemonLock.last_success_at,
                                       DaemonLock.last_duration_s)).all()
        g = GaugeMetricFamily("dawms_jobs", "jobs by state and queue", labels=["state", "queue"])
        for state, queue, n in jobs:
            g.add_metric([state, queue or ""], n)
        yield g
        g = GaugeMetricFamily("dawms_tasks", "tasks by state", labels=["state"])
        for state, n in tasks:
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("dawms_pilots", "pilots holding a job, by queue", labels=["queue"])
        for queue, n in pilots:
            g.add_metric([queue], n)
        yield g
        n_open = GaugeMetricFamily("dawms_data_requests_open", "open data requests by kind",
                                   labels=["kind"])
        age = GaugeMetricFamily("dawms_data_request_oldest_age_seconds",
                                "age of the oldest open data request, by kind", labels=["kind"])
        for kind, n, oldest in requests:
            n_open.add_metric([kind], n)
            if oldest is not None:
                age.add_metric([kind], max(0.0, (now - _utc(oldest)).total_seconds()))
        yield n_open
        yield age
        g = GaugeMetricFamily("dawms_replicas", "replicas by state", labels=["state"])
        for state, n in replicas:
            g.add_metric([state], n)
        yield g
        last = GaugeMetricFamily("dawms_daemon_last_success_timestamp_seconds",
                                 "when each daemon last ran to the end", labels=["daemon"])
        took = GaugeMetricFamily("dawms_daemon_last_cycle_seconds",
                                 "how long each daemon's last successful run took",
                                 labels=["daemon"])
        for name, at, duration in daemons:
            if at is not None:
                last.add_metric([name], _utc(at).timestamp())
            if duration is not None:
                took.add_metric([name], duration)
        yield last
        yield took


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def install(app: Any, db: Database) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(db))
    app.state.metrics_registry = registry


@router.get("/metrics", dependencies=[Depends(METRICS)],
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus' text format: this process's counters, then the catalog's gauges."""
    body = generate_latest(REGISTRY) + generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class timed:  # noqa: N801 (used as a context manager, reads as a verb)
    """Observe the time a block took in a histogram's child."""

    def __init__(self, child: Any) -> None:
        self.child = child

    def __enter__(self) -> timed:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.observe(time.perf_counter() - self.start)
