"""Benchmark: the scheduler brokers and activates N queued jobs on PostgreSQL.

A throwaway catalog gets 20 sites (one disk endpoint and one queue each), one
task of N one-file jobs in ``defined`` and each input file on one site's disk
(file i at site i mod 20). Each queue already runs ``N / 40`` jobs, so PanDA's
backlog cut (activated + starting <= 2 * running + 20) leaves room for every
job. Timed: the broker's runs until it has nothing left (every job placed,
``activated`` at once where its input is local, else ``assigned`` with a
replication request), then - once the bench has put the requested copies in
place, untimed - the activator's runs until every assigned job is
``activated``. History rows and events included: each state change goes through
``transition_many()``, set-based. Reported: jobs per second for N = 10,000 and
N = 100,000; the 100k figure should be within 30% of the 10k one (cost linear
in the queue).

    python -m bench.scheduler --json [--sizes 10000,100000]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text

from dawms.catalog.db import Database
from dawms.catalog.models import Dataset, DatasetFile, File, Job, JobFile, Replica, Task
from dawms.catalog.site_config import sync, validate
from dawms.catalog.states import Entity, JobState, ReplicaState, TaskState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import activator, broker
from dawms.scheduler.config import SchedulerConfig

from ._common import emit, log, parser, setup_logging, throwaway_pg

SITES = 20
CHUNK = 5000


def sites_file() -> dict[str, Any]:
    names = [f"S{i:02d}" for i in range(SITES)]
    return {"site": [{"name": n} for n in names],
            "endpoint": [{"name": f"{n}_DISK", "site": n, "kind": "disk",
                          "url": f"file:///nonexistent/bench/{n}"} for n in names],
            "queue": [{"name": f"{n}_PROD", "site": n, "read_endpoints": [f"{n}_DISK"],
                       "write_endpoint": f"{n}_DISK", "max_queued": 1_000_000,
                       "max_running": 1_000_000} for n in names]}


def _bulk(s, model, rows: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(rows), CHUNK):
        s.execute(insert(model.__table__), rows[start:start + CHUNK])


def prepare(db: Database, n: int) -> None:
    """N defined jobs of one task, their inputs placed; N/40 running per queue."""
    now = datetime.now(UTC)
    with db.session() as s:
        sync(s, validate(sites_file()), actor="bench", source="bench")
    with db.session() as s:
        from dawms.catalog.models import Queue, StorageEndpoint

        eps = [e.id for e in s.scalars(select(StorageEndpoint).order_by(StorageEndpoint.name))]
        queues = [q.id for q in s.scalars(select(Queue).order_by(Queue.name))]
        ds = Dataset(scope="bench", name="input")
        s.add(ds)
        task = Task(name="bench", owner="bench", state=TaskState.DEFINED,
                    transformation="true", input_datasets=["bench:input"],
                    output_dataset="bench:output", log_dataset="bench:log",
                    split={"files_per_job": 1}, retry={"max_attempts": 3},
                    resources={"cores": 1, "memory_mb": 2000, "walltime_s": 3600,
                               "disk_mb": 1000})
        s.add(task)
        s.flush()
        _bulk(s, File, [{"scope": "bench", "name": f"f{i:07d}", "size": 1_000_000 + i,
                         "adler32": "00000001", "guid": f"{i:032x}"} for i in range(n)])
        fids = list(s.scalars(select(File.id).order_by(File.id)))
        _bulk(s, DatasetFile, [{"dataset_id": ds.id, "file_id": f, "position": i}
                               for i, f in enumerate(fids)])
        _bulk(s, Replica, [{"file_id": f, "endpoint_id": eps[i % SITES],
                            "state": ReplicaState.AVAILABLE, "updated_at": now}
                           for i, f in enumerate(fids)])
        running = n // 40
        _bulk(s, Job, [{"task_id": task.id, "job_index": -1 - k, "attempt": 1,
                        "state": JobState.RUNNING, "queue_id": q, "state_changed_at": now,
                        "heartbeat_at": now, "created_at": now, "metrics": {}}
                       for q in queues for k in range(running)])
        _bulk(s, Job, [{"task_id": task.id, "job_index": i, "attempt": 1,
                        "state": JobState.DEFINED, "state_changed_at": now, "created_at": now,
                        "metrics": {}} for i in range(n)])
        jids = list(s.scalars(select(Job.id).where(Job.state == JobState.DEFINED)
                              .order_by(Job.id)))
        rows = []
        for i, (j, f) in enumerate(zip(jids, fids, strict=True)):
            rows += [{"job_id": j, "type": "in", "scope": "bench", "lfn": f"f{i:07d}",
                      "dataset": "bench:input", "file_id": f, "size": 1_000_000 + i,
                      "adler32": "00000001"},
                     {"job_id": j, "type": "out", "scope": "bench", "lfn": f"out.{i:07d}",
                      "dataset": "bench:output", "file_id": None, "size": None, "adler32": None},
                     {"job_id": j, "type": "log", "scope": "bench", "lfn": f"log.{i:07d}",
                      "dataset": "bench:log", "file_id": None, "size": None, "adler32": None}]
        _bulk(s, JobFile, rows)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # a freshly loaded catalog: give the planner stats


def deliver(db: Database) -> int:
    """Every requested copy arrives (what the DDM would do); untimed."""
    with db.session() as s:
        ids = list(s.scalars(select(Replica.id).where(Replica.state == ReplicaState.COPYING)))
        return len(transition_many(s, Entity.REPLICA, ids, ReplicaState.AVAILABLE,
                                   expected=ReplicaState.COPYING, actor="bench:ddm",
                                   reason="copied"))


def run(admin_url: str, n: int, cfg: SchedulerConfig) -> dict[str, Any]:
    with throwaway_pg(admin_url, f"sched{n}") as url:
        db = Database(url)
        try:
            db.upgrade()
            t0 = time.perf_counter()
            prepare(db, n)
            log.info("%d jobs prepared in %.1f s", n, time.perf_counter() - t0)
            ddm = LocalDDM()
            t0 = time.perf_counter()
            while broker.run_once(db, ddm, cfg).full:
                pass
            t_broker = time.perf_counter() - t0
            copied = deliver(db)
            t0 = time.perf_counter()
            while activator.run_once(db, ddm, cfg).full:
                pass
            t_activate = time.perf_counter() - t0
            with db.session() as s:
                states = dict(s.execute(select(Job.state, func.count()).where(Job.job_index >= 0)
                                        .group_by(Job.state)).all())
            if states.get(JobState.ACTIVATED, 0) != n:
                raise SystemExit(f"not every job was activated: {states}")
            log.info("n=%d broker %.2f s, activator %.2f s (%d copies)", n, t_broker,
                     t_activate, copied)
            return {"jobs": n, "broker_s": round(t_broker, 3),
                    "activator_s": round(t_activate, 3), "assigned": copied,
                    "jobs_per_s": round(n / (t_broker + t_activate), 1)}
        finally:
            db.broker.close()
            db.dispose()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="10000,100000", help="comma-separated job counts")
    p.add_argument("--bunch", type=int, default=SchedulerConfig().broker_bunch,
                   help="jobs per broker run")
    args = p.parse_args()
    setup_logging(args.verbose)
    cfg = SchedulerConfig(broker_bunch=args.bunch)
    sizes = [int(x) for x in args.sizes.split(",")]
    runs = {n: run(args.pg_url, n, cfg) for n in sizes}
    result: dict[str, Any] = {"backend": "postgresql", "runs": list(runs.values())}
    for n, r in runs.items():
        label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        result[f"jobs_per_s_{label}"] = r["jobs_per_s"]
    emit(result, args.json)


if __name__ == "__main__":
    main()
