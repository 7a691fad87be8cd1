"""Drives the daemons: APScheduler 3.11 runs each ``run_once`` periodically, and
committed catalog events wake the one that should react at once.

A task registered wakes the refiner; jobs defined wake the broker; the daemons
the DDM backend declares (the local DDM's transfer worker) run beside these and
wake on the changes they name; a request ended wakes the
activator with that request's id; a job or task ended wakes the finisher; a
replica becoming available, a request ending, a task going to staging or ending
wakes the carousel. A
wake-up while the daemon runs is remembered and served right after, so no event
is lost; the periodic run stays the safety net and the DB the only record.

Every ``run_once`` returns a ``Ran`` (``ddm_bridge.abc``): a count, and ``full``
when the daemon took a whole bunch (it knows its bunch size) and moved some of it
on. While a run is full the daemon runs again at once, as Rucio's ``run_daemon``
sleeps only when idle: 1,500 defined jobs are brokered in three runs back to back,
not one per interval.
Several instances may share a catalog: before each run a daemon renews its
lease in the DB (``catalog.locks``), and skips the run while another holds it.
A run that ends without an error records its end and duration on the lease row
(``/readyz`` and ``/metrics`` read it, from any process) and in the
``dawms_daemon_cycle_seconds`` histogram of this process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import Counter, Histogram

from dawms import carousel
from dawms.catalog import events, locks
from dawms.catalog.db import Database
from dawms.catalog.states import (
    JOB_FINAL,
    TASK_FINAL,
    Entity,
    JobState,
    RequestState,
    TaskState,
)
from dawms.ddm_bridge.abc import DDM, Ran
from dawms.ddm_bridge.events import apply_reports

from . import activator, autorebroker, broker, finisher, refiner, stuck, watcher
from .config import SchedulerConfig

log = logging.getLogger(__name__)
MAX_INSTANCES_TEXT = "maximum number of running instances reached"


class _OverlapToDebug(logging.Filter):
    """APScheduler warns each time a periodic run finds the daemon's previous run still
    going; that is the designed behaviour (the run is simply not started again, and
    ``_Daemon`` serves wake-ups after it), so it is logged at debug instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and MAX_INSTANCES_TEXT in record.getMessage():
            log.debug("%s", record.getMessage())
            return False
        return True


APS_LOG = logging.getLogger(f"{__name__}.apscheduler")
APS_LOG.addFilter(_OverlapToDebug())
DAEMON_CYCLE = Histogram("dawms_daemon_cycle_seconds", "how long one run of a daemon took",
                         ["daemon"], buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                              30, 60, 300))
DAEMON_FAILURES = Counter("dawms_daemon_failures", "runs of a daemon that raised", ["daemon"])
# a file arrived, a recall ended, a task went to staging or ended (its copies may go)
CAROUSEL_WAKES = {(Entity.REPLICA.value, "available"), (Entity.TASK.value, TaskState.STAGING.value),
                  *((Entity.REQUEST.value, st.value) for st in RequestState
                    if st != RequestState.REQUESTED),
                  *((Entity.TASK.value, st.value) for st in TASK_FINAL)}


def expected_daemons(ddm: DDM, cfg: SchedulerConfig) -> dict[str, float]:
    """Every daemon a scheduler over ``ddm`` runs, with its period (``/readyz`` checks each
    one's last success, whichever process runs it)."""
    core = ("refiner", "rebroker", "broker", "activator", "watcher", "stuck", "finisher",
            "ddm_poller", "carousel")
    return {**dict.fromkeys(core, cfg.interval_s),
            **{spec.name: spec.interval_s for spec in ddm.daemons()}}


class _Daemon:
    """One daemon: never two runs at once; wake-ups during a run cause one more run,
    and so does a full run (a ``Ran`` with ``full``): the next bunch is taken at once."""

    def __init__(self, name: str, fn: Callable[[], object],
                 lease: Callable[[str], bool] | None = None,
                 succeeded: Callable[[str, float], None] | None = None) -> None:
        self.name, self.fn, self.lease, self.succeeded = name, fn, lease, succeeded
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self.runs = 0
        self.full_runs = 0  # runs that took a whole bunch and so were followed at once
        self.skipped = 0  # runs left to the instance holding the lease

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                self._again = False
                try:
                    if self.lease is None or self.lease(self.name):
                        start = time.monotonic()
                        result = self.fn()
                        took = time.monotonic() - start
                        self.runs += 1
                        DAEMON_CYCLE.labels(self.name).observe(took)
                        if self.succeeded is not None:
                            self.succeeded(self.name, took)
                        if isinstance(result, Ran) and result.full:
                            self.full_runs += 1
                            with self._lock:
                                self._again = True
                    else:
                        self.skipped += 1
                except Exception:
                    DAEMON_FAILURES.labels(self.name).inc()
                    log.exception("daemon %s failed; the next run will try again", self.name)
                with self._lock:
                    if not self._again:
                        self._running = False
                        return
        except BaseException:
            with self._lock:
                self._running = False
            raise


class Scheduler:
    """All daemons of one scheduler instance over one database."""

    def __init__(self, db: Database, ddm: DDM, cfg: SchedulerConfig | None = None) -> None:
        self.db, self.ddm, self.cfg = db, ddm, cfg or SchedulerConfig()
        self._pending_requests: set[int] = set()
        self._req_lock = threading.Lock()
        cfg = self.cfg
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease_ttl = timedelta(seconds=max(60.0, 3 * cfg.interval_s))
        fns: dict[str, tuple[Callable[[], object], float]] = {
            "refiner": (lambda: refiner.run_once(db, ddm, limit=cfg.refiner_bunch),
                        cfg.interval_s),
            "broker": (lambda: broker.run_once(db, ddm, cfg), cfg.interval_s),
            "activator": (self._activate, cfg.interval_s),
            "watcher": (lambda: watcher.run_once(db, cfg), cfg.interval_s),
            "rebroker": (lambda: autorebroker.run_once(db, cfg), cfg.interval_s),
            "stuck": (lambda: stuck.run_once(db, cfg), cfg.interval_s),
            "finisher": (lambda: finisher.run_once(db), cfg.interval_s),
            "ddm_poller": (self._poll, cfg.interval_s),
            "carousel": (lambda ccfg=carousel.CarouselConfig.from_env():
                         carousel.run_once(db, ddm, cfg=ccfg), cfg.interval_s),
        }
        self._backend_wakes: dict[tuple[str, str], list[str]] = {}
        self._backend_daemons = [spec.name for spec in ddm.daemons()]
        for spec in ddm.daemons():  # what the configured backend needs, nothing else
            fns[spec.name] = (lambda run=spec.run_once: run(db), spec.interval_s)
            for key in spec.wake_on:
                self._backend_wakes.setdefault(key, []).append(spec.name)
        self.daemons: dict[str, tuple[_Daemon, float]] = {
            name: (_Daemon(name, fn, self._lease, self._succeeded), interval)
            for name, (fn, interval) in fns.items()}
        self._aps = BackgroundScheduler(executors={"default": ThreadPoolExecutor(8)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None},
                                        timezone=UTC, logger=APS_LOG)
        self._unsubscribe: Callable[[], None] | None = None

    def _lease(self, name: str) -> bool:
        with self.db.session() as s:
            return locks.acquire(s, name, self.holder, self._lease_ttl, datetime.now(UTC))

    def _succeeded(self, name: str, duration_s: float) -> None:
        with self.db.session() as s:
            locks.succeeded(s, name, self.holder, datetime.now(UTC), duration_s)

    def _activate(self) -> Ran:
        with self._req_lock:
            ids, self._pending_requests = sorted(self._pending_requests), set()
        fast = Ran(0, full=False)
        if ids:  # the fast path first: jobs of the requests that just ended
            fast = activator.run_once(self.db, self.ddm, self.cfg, request_ids=ids)
        sweep = activator.run_once(self.db, self.ddm, self.cfg)
        return Ran(fast + sweep, full=fast.full or sweep.full)

    def _poll(self) -> int:
        now = datetime.now(UTC)
        with self.db.session() as s:
            return apply_reports(s, self.ddm.poll(s, now), source="poll",
                                 now=now).get("applied", 0)

    def run_all_once(self) -> None:
        """Every daemon once (each until it is not full), in flow order, the backend's
        daemons after the broker and the carousel after the poller (for tests and
        `dawms scheduler --once`)."""
        for name in ("refiner", "rebroker", "broker", *self._backend_daemons, "ddm_poller",
                     "carousel", "activator", "watcher", "stuck", "finisher"):
            self.daemons[name][0]()

    def wake(self, name: str) -> None:
        if name in self.daemons and self._aps.running:
            self._aps.add_job(self.daemons[name][0], id=f"wake-{name}", replace_existing=True)

    def _on_event(self, ev: events.StateChanged) -> None:
        for name in self._backend_wakes.get((ev.entity, ev.to_state), ()):
            self.wake(name)
        if (ev.entity, ev.to_state) in CAROUSEL_WAKES:
            self.wake("carousel")
        if ev.entity == Entity.TASK and ev.to_state == TaskState.REGISTERED:
            self.wake("refiner")
        elif ev.entity == Entity.JOB and ev.to_state == JobState.DEFINED:
            self.wake("broker")
        elif ev.entity == Entity.REQUEST and ev.to_state != RequestState.REQUESTED:
            with self._req_lock:
                self._pending_requests.update(ev.ids)
            self.wake("activator")
        elif ev.entity == Entity.JOB and ev.to_state in JOB_FINAL:
            self.wake("finisher")

    def _on_resync(self) -> None:
        """Events may have been missed (the listener reconnected): every daemon looks."""
        for name in self.daemons:
            self.wake(name)

    def start(self) -> None:
        for name, (daemon, interval) in self.daemons.items():
            self._aps.add_job(daemon, "interval", seconds=interval, id=name,
                              next_run_time=datetime.now(UTC))
        # committed changes of every process on this catalog (LISTEN/NOTIFY on PostgreSQL)
        self._unsubscribe = self.db.broker.subscribe(self._on_event, on_resync=self._on_resync)
        if not self.db.broker.wait_ready(timeout=10):
            log.warning("events of other processes are not reaching us yet; the periodic "
                        "runs cover until the listener connects")
        self._aps.start()
        log.info("scheduler started: %s", ", ".join(self.daemons))

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._aps.running:
            self._aps.shutdown(wait=True)
        with self.db.session() as s:
            locks.release(s, self.holder)
