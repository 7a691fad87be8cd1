"""Benchmark: how fast jobs are handed to pilots, against raw SQL in the same run.

For each backend (SQLite file, PostgreSQL) it fills a fresh catalog with N
activated jobs (with a realistic prepared job description) and drains them with
T concurrent claimers three ways:

- ``raw_sql``: the floor: hand-written ``UPDATE ... RETURNING`` on a bare connection
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), one job per statement;
- ``claim_jobs``: dawms' own claim path (``catalog.transition.claim_jobs``, which
  also writes the history row), one job per call;
- ``http``: ``POST /api/v1/pilot/acquire_jobs`` against a real ``dawms server``
  process (uvicorn, one worker, no scheduler), one job per request, with a real
  pilot token (auth on, as in production: the token is verified on every call).

Every mode must hand out every job exactly once; the script fails otherwise.
Logs each backend's result to stderr; the result is the last line of stdout.

    python -m bench.claim_rate --json [--backend postgresql] [--jobs 2000] [--threads 8]
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, insert, select, text

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, Site, Task
from dawms.catalog.transition import claim_jobs

from ._common import (
    catalog_url,
    emit,
    free_port,
    log,
    parser,
    setup_logging,
    start_dawms,
    stop,
    wait_http,
)

SPEC = {"transformation": "reco.py {inputs} {output}", "cores": 1, "memory_mb": 2000,
        "inputs": [{"scope": "bench", "lfn": f"raw._{i:06d}", "size": 2_000_000_000,
                    "adler32": "0a1b2c3d", "guid": str(uuid.UUID(int=i)),
                    "urls": [f"root://site.example//data/bench/ab/cd/raw._{i:06d}"]}
                   for i in range(3)],
        "outputs": [{"scope": "bench", "lfn": "out", "url": "root://site.example//out"}]}


def fill(db: Database, n: int) -> int:
    now = datetime.now(UTC)
    with db.session() as s:
        site = Site(name="BENCH")
        s.add(site)
        s.flush()
        queue = Queue(name="BENCH_PROD", site_id=site.id, read_endpoints=[], write_endpoint="")
        task = Task(name="bench", owner="bench", state="running", transformation="x",
                    input_datasets=[], output_dataset="b:o", log_dataset="b:l", split={},
                    resources={}, retry={})
        s.add_all([queue, task])
        s.flush()
        s.execute(insert(Job), [
            {"task_id": task.id, "job_index": i, "attempt": 1, "state": "activated",
             "queue_id": queue.id, "priority": i % 7, "spec": SPEC, "state_changed_at": now,
             "created_at": now} for i in range(n)])
        return queue.id


def drain(threads: int, claim_one: Callable[[], int | None]) -> tuple[float, list[int]]:
    got: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while (job := claim_one()) is not None:
            mine.append(job)
        with lock:
            got.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, got


def raw_sql(url: str, queue_id: int) -> tuple[Callable[[], int | None], Engine]:
    engine = create_engine(url, pool_size=32, connect_args={"timeout": 60}
                           if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        sql = text("UPDATE job SET state='sent' WHERE id = (SELECT id FROM job WHERE "
                   "queue_id=:q AND state='activated' ORDER BY priority DESC, id LIMIT 1) "
                   "RETURNING id, spec")
    else:
        sql = text("UPDATE job SET state='sent' WHERE id = (SELECT id FROM job WHERE "
                   "queue_id=:q AND state='activated' ORDER BY priority DESC, id LIMIT 1 "
                   "FOR UPDATE SKIP LOCKED) RETURNING id, spec")

    def claim() -> int | None:
        with engine.begin() as conn:
            row = conn.execute(sql, {"q": queue_id}).first()
        return row[0] if row else None

    return claim, engine


def dawms_claim(db: Database, queue_id: int) -> Callable[[], int | None]:
    def claim() -> int | None:
        with db.session() as s:
            rows = claim_jobs(s, queue_id, 1, "bench")
        return rows[0][0] if rows else None

    return claim


def http_claim(url: str, token: str) -> Callable[[], int | None]:
    local = threading.local()

    def claim() -> int | None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30,
                                        headers={"Authorization": f"Bearer {token}"})
        data = local.client.post("/api/v1/pilot/acquire_jobs",
                                 json={"queue": "BENCH_PROD", "pilot_id": "bench"}).json()
        jobs = data["data"]["jobs"]
        return jobs[0]["job_id"] if jobs else None

    return claim


def start_server(db_url: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start_dawms(["server", "--no-scheduler", "--port", str(port)],
                       {"DAWMS_DB_URL": db_url}, log_path)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


def bench_backend(label: str, admin_url: str, n: int, threads: int, tmp: Path) -> dict:
    result: dict = {"backend": label, "jobs": n, "threads": threads}
    for mode in ("raw_sql", "claim_jobs", "http"):
        with catalog_url(label, admin_url, tmp, mode) as url:
            db = Database(url)
            db.upgrade()
            queue_id = fill(db, n)
            proc = None
            if mode == "raw_sql":
                fn, engine = raw_sql(url, queue_id)
            elif mode == "claim_jobs":
                fn, engine = dawms_claim(db, queue_id), None
            else:
                from dawms.server.tokens import issue

                token, _ = issue(db, role="pilot", subject="bench", queues=["BENCH_PROD"])
                proc, server = start_server(url, tmp / f"server-{label}.log")
                fn, engine = http_claim(server, token), None
            seconds, got = drain(threads, fn)
            if proc:
                stop(proc)
            if engine:
                engine.dispose()
            with db.session() as s:
                left = s.scalar(select(Job.id).where(Job.state == "activated").limit(1))
            db.dispose()
        if len(got) != n or len(set(got)) != n or left is not None:
            raise SystemExit(f"{label}/{mode}: {len(got)} claims, {len(set(got))} distinct, "
                             f"of {n} jobs: a job was lost or handed out twice")
        result[f"{mode}_per_s"] = round(n / seconds)
        log.info("%s %s: %d claims/s", label, mode, result[f"{mode}_per_s"])
    result["claim_jobs_vs_raw"] = round(result["claim_jobs_per_s"] / result["raw_sql_per_s"], 2)
    result["http_vs_raw"] = round(result["http_per_s"] / result["raw_sql_per_s"], 2)
    return result


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    setup_logging(args.verbose)
    backends = ("sqlite", "postgresql") if args.backend == "all" else (args.backend,)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in backends:
            results[label] = bench_backend(label, args.pg_url, args.jobs, args.threads,
                                           Path(tmp))
            log.info("%s", results[label])
    if len(results) == 1:
        emit(results[backends[0]], args.json)
    else:
        emit({"backend": ",".join(backends), "results": results}, args.json)


if __name__ == "__main__":
    main()
