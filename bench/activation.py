"""Benchmark: from a DDM callback to the job activated, server and scheduler apart.

On PostgreSQL, ``dawms server --no-scheduler`` and ``dawms scheduler`` run as two
processes over a throwaway catalog, the scheduler's periodic runs an hour apart,
so only the committed event of the callback (``LISTEN/NOTIFY``) can wake the
activator. N tasks of one job each wait on one replication request each. This
script plays the DDM: it holds the requests' transfer lease (the scheduler's
own transfer worker leaves them alone) and, one request at a time, while the
scheduler is idle, puts the file in place and posts the callback
``POST /api/v1/ddm/event``. A request's latency runs from the callback's 200 to
the moment the job's activation commits, which this process hears on its own
LISTEN connection.

    python -m bench.activation --json [--requests 200]
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.orm import aliased

from dawms.catalog import events
from dawms.catalog.db import Database
from dawms.catalog.models import (
    DaemonLock,
    DataRequest,
    DataRequestFile,
    File,
    Job,
    JobFile,
    Replica,
    StorageEndpoint,
)
from dawms.catalog.site_config import sync, validate
from dawms.catalog.states import Entity, ReplicaState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from dawms.storage.paths import lfn2pfn

from ._common import (
    emit,
    free_port,
    log,
    parser,
    percentile,
    setup_logging,
    start_dawms,
    stop,
    throwaway_pg,
    wait_http,
)

HOLDER = "bench-ddm"
APP = "dawms-bench-scheduler"  # the scheduler's connections, to see when it is idle


def sites(root: Path) -> dict:
    """SITE_A holds the data but takes no jobs; SITE_B runs them once the data is there."""
    return {"site": [{"name": "SITE_A"}, {"name": "SITE_B"}],
            "endpoint": [{"name": f"{n}_DISK", "site": n, "kind": "disk",
                          "url": f"file://{root / n}"} for n in ("SITE_A", "SITE_B")],
            "queue": [{"name": f"{n}_PROD", "site": n, "read_endpoints": [f"{n}_DISK"],
                       "write_endpoint": f"{n}_DISK",
                       "status": "offline" if n == "SITE_A" else "online"}
                      for n in ("SITE_A", "SITE_B")]}


def prepare(db: Database, root: Path, n: int) -> list[tuple[int, int]]:
    """N tasks of one job each, assigned to SITE_B and waiting on one request each;
    returns (request id, job id) pairs."""
    ddm = LocalDDM()
    with db.session() as s:
        sync(s, validate(sites(root / "storage")), actor="bench", source="bench")
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_A_DISK"))
        src = root / "src"
        src.mkdir()
        for i in range(n):
            path = src / f"raw._{i:06d}"
            path.write_bytes(i.to_bytes(4, "big") * 256)
            ddm.upload(s, f"bench:raw{i}", [path], ep)
    with db.session() as s:
        for i in range(n):
            submit(s, {"name": f"act{i}", "transformation": "true {inputs}",
                       "input_datasets": [f"bench:raw{i}"], "output_dataset": f"bench:out{i}",
                       "split": {"files_per_job": 1}}, ddm)
    while refiner.run_once(db, ddm, limit=100):
        pass
    cfg = SchedulerConfig()
    while broker.run_once(db, ddm, cfg):
        pass
    until = datetime.now(UTC) + timedelta(hours=2)
    with db.session() as s:
        pairs = s.execute(select(JobFile.request_id, JobFile.job_id)
                          .join(Job, Job.id == JobFile.job_id)
                          .where(Job.state == "assigned", JobFile.type == "in")
                          .order_by(JobFile.request_id)).all()
        if len({r for r, _ in pairs}) != n or len(pairs) != n:
            raise SystemExit(f"set-up made {len(pairs)} waiting jobs, not {n} with a request "
                             "each")
        s.execute(update(DataRequest).values(acquired_by=HOLDER, acquired_until=until))
        # the DDM poller's safety net would end requests itself: we hold its lease
        s.add(DaemonLock(name="ddm_poller", holder=HOLDER, acquired_until=until))
    return [(r, j) for r, j in pairs]


def deliver(db: Database, request_id: int) -> None:
    """What the DDM does before its callback: the bytes at SITE_B, the replica available."""
    src_ep, dst_ep = aliased(StorageEndpoint), aliased(StorageEndpoint)
    src, dst = aliased(Replica), aliased(Replica)
    with db.session() as s:
        rows = s.execute(
            select(File.scope, File.name, src_ep.url_prefix, dst_ep.url_prefix, dst.id)
            .join(DataRequestFile, DataRequestFile.file_id == File.id)
            .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
            .join(dst, (dst.file_id == File.id) & (dst.endpoint_id == DataRequest.endpoint_id))
            .join(dst_ep, dst_ep.id == dst.endpoint_id)
            .join(src, (src.file_id == File.id) & (src.state == ReplicaState.AVAILABLE))
            .join(src_ep, src_ep.id == src.endpoint_id)
            .where(DataRequest.id == request_id)).all()
        for scope, name, src_prefix, dst_prefix, _ in rows:
            target = Path(lfn2pfn(dst_prefix, scope, name).removeprefix("file://"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lfn2pfn(src_prefix, scope, name).removeprefix("file://"), target)
        transition_many(s, Entity.REPLICA, [r[4] for r in rows], ReplicaState.AVAILABLE,
                        expected=ReplicaState.COPYING, actor=f"ddm:{HOLDER}", reason="copied")


class Activations:
    """When each job's activation was heard (this process's LISTEN connection)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self._cond = threading.Condition()

    def __call__(self, ev: events.StateChanged) -> None:
        if ev.entity == "job" and ev.to_state == "activated":
            now = time.perf_counter()
            with self._cond:
                for i in ev.ids:
                    self.at.setdefault(i, now)
                self._cond.notify_all()

    def wait(self, job_id: int, timeout: float) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: job_id in self.at, timeout):
                raise SystemExit(f"job {job_id} was not activated within {timeout} s of its "
                                 "callback")
            return self.at[job_id]


def scheduler_idle(conn) -> bool:  # type: ignore[no-untyped-def]
    """No statement or transaction of the scheduler in flight (its LISTEN is idle)."""
    return not conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                "application_name = :a AND state <> 'idle'"), {"a": APP})


def wait_idle(conn, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Idle twice 10 ms apart: a daemon between two transactions is not idle."""
    deadline = time.monotonic() + timeout
    while True:
        if scheduler_idle(conn):
            time.sleep(0.01)
            if scheduler_idle(conn):
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the scheduler stayed busy for {timeout} s")
        time.sleep(0.002)


def wait_leases(db: Database, names: set[str], proc, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Until the scheduler ran each daemon once (it holds their leases)."""
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as s:
            held = set(s.scalars(select(DaemonLock.name).where(DaemonLock.holder != HOLDER)))
        if names <= held:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the scheduler did not start its daemons: {sorted(held)}")
        time.sleep(0.1)


def ddm_headers(db: Database) -> dict[str, str]:
    """What the DDM sends with its callback: a real ``ddm`` token (auth is on, as in
    production: the server verifies it on every callback)."""
    from dawms.server.tokens import issue

    return {"Authorization": f"Bearer {issue(db, role='ddm', subject=HOLDER)[0]}"}


def run(admin_url: str, n: int, root: Path) -> dict:
    with throwaway_pg(admin_url, "activation") as url:
        db = Database(url)
        db.upgrade()
        t0 = time.monotonic()
        pairs = prepare(db, root, n)
        log.info("%d jobs waiting on %d requests (set-up %.1f s)", n, n, time.monotonic() - t0)
        heard = Activations()
        db.broker.subscribe(heard)
        if not db.broker.wait_ready(20):
            raise SystemExit("this process's event listener did not connect")
        env = {"DAWMS_INTERVAL_S": "3600", "DAWMS_TRANSFER_INTERVAL_S": "3600"}
        port = free_port()
        server = start_dawms(["server", "--no-scheduler", "--port", str(port)],
                             {**env, "DAWMS_DB_URL": url}, root / "server.log")
        scheduler = start_dawms(["scheduler"],
                                {**env, "DAWMS_DB_URL": f"{url}?application_name={APP}"},
                                root / "scheduler.log")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", server)
            wait_leases(db, {"refiner", "broker", "activator", "watcher", "finisher",
                             "transfer"}, scheduler)
            latencies: list[float] = []
            early = 0
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch, \
                    httpx.Client(base_url=base, headers=ddm_headers(db), timeout=30) as client:
                for rid, job_id in pairs:
                    wait_idle(watch)
                    deliver(db, rid)
                    r = client.post("/api/v1/ddm/event", json={
                        "source": "bench", "dedup_key": f"bench:{rid}:done", "outcome": "done",
                        "request_id": rid})
                    acked = time.perf_counter()
                    if r.status_code != 200 or r.json()["data"]["result"] != "applied":
                        raise SystemExit(f"callback for request {rid}: {r.status_code} {r.text}")
                    activated = heard.wait(job_id, 30)
                    early += activated < acked
                    latencies.append(max(0.0, activated - acked) * 1000)
            with db.session() as s:
                states = set(s.scalars(select(Job.state)))
            if states != {"activated"}:
                raise SystemExit(f"jobs ended in {states}, not all activated")
        finally:
            stop(scheduler)
            stop(server)
            db.dispose()
    return {"backend": "postgresql", "processes": 2, "requests": n,
            "activation_ms_p50": round(percentile(latencies, 50), 1),
            "activation_ms_p99": round(percentile(latencies, 99), 1),
            "activation_ms_max": round(max(latencies), 1),
            "heard_before_ack": early}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    setup_logging(args.verbose)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.pg_url, args.requests, Path(tmp))
    log.info("%s", result)
    emit(result, args.json)


if __name__ == "__main__":
    main()
