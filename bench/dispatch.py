"""Benchmark: pilots running full job lifecycles over HTTP against a real server.

A fresh PostgreSQL catalog gets ``--jobs`` activated jobs (7 priorities, a
realistic prepared job description), once all in one queue and once spread over
50 queues. ``dawms server`` runs as its own process(es) with auth on. A load
generator in another process runs ``--pilots`` simulated pilots (asyncio +
aiohttp, each with its own pilot token bound to its queue), each doing what a
real pilot does per job: acquire, exactly 2 heartbeats, the final report (4
requests per job). Each layout runs until its jobs are gone or ``--seconds``
pass (the queue stays deep: the point is the cost at depth).

Measured per layout: requests/s, jobs/s, p50/p99 latency, double dispatch (a job
handed out twice: seen by the pilots, and in the catalog's history), false "no
jobs" (an empty answer while more jobs were left than the other pilots of that
queue could have been holding), and the CPU milliseconds per request spent by the
server processes, the database backends of this catalog and the generator. In
the same run, on the same database: the raw SQL claim rate (one ``UPDATE ...
FOR UPDATE SKIP LOCKED`` per transaction, ``--raw-seconds``), the floor.

    python -m bench.dispatch --json [--jobs 100000] [--pilots 64] [--seconds 60]
        [--workers 2] [--servers 1] [--layouts one,fifty]

``--servers 2`` starts two server processes on the catalog and sends each pilot
to one of them (tests/test_dispatch_scale.py runs a small such run: the SKIP
LOCKED test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, insert, select, text

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, Site, StateHistory, Task

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

SPEC = {"transformation": "reco.py {inputs} {output}", "cores": 1, "memory_mb": 2000,
        "walltime_s": 3600, "disk_mb": 1000, "heartbeat_s": 60, "endpoint_out": "",
        "inputs": [{"scope": "bench", "lfn": f"raw._{i:06d}", "size": 2_000_000_000,
                    "adler32": "0a1b2c3d", "guid": str(uuid.UUID(int=i)),
                    "urls": [f"root://site.example//data/bench/ab/cd/raw._{i:06d}"]}
                   for i in range(3)],
        "outputs": [], "log": None}
PRIORITIES = 7
LAYOUTS = {"one": ("one_queue", 1), "fifty": ("fifty_queues", 50)}


def fill(db: Database, n: int, n_queues: int) -> dict[str, int]:
    """``n`` activated jobs round-robin over ``n_queues`` queues; queue name -> its jobs."""
    now = datetime.now(UTC)
    with db.session() as s:
        site = Site(name="BENCH")
        s.add(site)
        s.flush()
        queues = [Queue(name=f"BENCH_Q{i:02d}", site_id=site.id, read_endpoints=[],
                        write_endpoint="") for i in range(n_queues)]
        task = Task(name="bench", owner="bench", state="running", transformation="x",
                    input_datasets=[], output_dataset="b:o", log_dataset="b:l", split={},
                    resources={}, retry={})
        s.add_all([*queues, task])
        s.flush()
        ids = [q.id for q in queues]
        task_id = task.id
    for start in range(0, n, 10_000):
        with db.session() as s:
            s.execute(insert(Job), [
                {"task_id": task_id, "job_index": i, "attempt": 1, "state": "activated",
                 "queue_id": ids[i % n_queues], "priority": i % PRIORITIES, "spec": SPEC,
                 "state_changed_at": now, "created_at": now}
                for i in range(start, min(n, start + 10_000))])
    with db.engine.connect() as conn:  # fresh statistics, as autovacuum would give later
        conn.execute(text("ANALYZE job"))
        conn.commit()
    return activated(db)


def activated(db: Database) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(Queue.name, func.count(Job.id))
                         .join(Job, Job.queue_id == Queue.id)
                         .where(Job.state == "activated").group_by(Queue.name))
        return {name: count for name, count in rows}


def raw_claim_rate(url: str, queue_id: int, threads: int, seconds: float) -> float:
    """Claims/s of a bare ``UPDATE ... (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``."""
    engine = create_engine(url, pool_size=threads)
    sql = text("UPDATE job SET state='sent' WHERE id = (SELECT id FROM job WHERE "
               "queue_id=:q AND state='activated' ORDER BY priority DESC, id LIMIT 1 "
               "FOR UPDATE SKIP LOCKED) RETURNING id, spec")
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(k: int) -> None:
        while time.monotonic() < deadline:
            with engine.begin() as conn:
                if conn.execute(sql, {"q": queue_id}).first() is None:
                    return
            counts[k] += 1

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return sum(counts) / elapsed


# ------------------------------------------------------------------ the generator
async def _generate(cfg: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    total: dict[str, int] = cfg["jobs_per_queue"]
    handed = dict.fromkeys(total, 0)
    pilots_on: dict[str, int] = {}
    for queues, _token, _url in cfg["pilots"]:
        for queue in queues:
            pilots_on[queue] = pilots_on.get(queue, 0) + 1
    seen: set[int] = set()
    stats = {"requests": 0, "jobs": 0, "double_dispatch": 0, "false_empty": 0, "empty": 0,
             "errors": 0}
    latencies: list[float] = []
    first_error: list[str] = []
    deadline = time.monotonic() + cfg["seconds"]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)

    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def call(url: str, path: str, headers: dict[str, str],
                       body: dict[str, Any]) -> dict[str, Any] | None:
            t0 = time.perf_counter()
            async with http.post(url + path, json=body, headers=headers) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
            latencies.append(time.perf_counter() - t0)
            stats["requests"] += 1
            if status != 200 or not data.get("success"):
                stats["errors"] += 1
                if not first_error:
                    first_error.append(f"{path}: {status} {str(data)[:300]}")
                return None
            return data["data"]

        async def pilot(k: int, queues: list[str], token: str, url: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            turn = 0
            while time.monotonic() < deadline:
                open_queues = [q for q in queues if handed[q] < total[q]]
                if not open_queues:
                    return
                queue = open_queues[turn % len(open_queues)]  # its queues in turn
                turn += 1
                ask = {"queue": queue, "pilot_id": f"bench-{k}", "n_jobs": 1}
                got = await call(url, "/api/v1/pilot/acquire_jobs", headers, ask)
                if got is None:
                    await asyncio.sleep(0.01)
                    continue
                if not got["jobs"]:
                    stats["empty"] += 1
                    # the other pilots of this queue hold at most one claim each
                    if total[queue] - handed[queue] > pilots_on[queue] - 1:
                        stats["false_empty"] += 1
                    await asyncio.sleep(0.005)
                    continue
                for job in got["jobs"]:
                    handed[queue] += 1
                    if job["job_id"] in seen:
                        stats["double_dispatch"] += 1
                    seen.add(job["job_id"])
                    fence = {"job_id": job["job_id"], "attempt": job["attempt"],
                             "lease_token": job["lease_token"]}
                    ok = True
                    for _ in range(2):
                        ok = await call(url, "/api/v1/pilot/update_job", headers,
                                        {**fence, "state": "running"}) is not None and ok
                    ok = await call(url, "/api/v1/pilot/update_job", headers,
                                    {**fence, "state": "finished", "exit_code": 0}) \
                        is not None and ok
                    stats["jobs"] += ok

        t0 = time.perf_counter()
        await asyncio.gather(*(pilot(k, q, tok, url)
                               for k, (q, tok, url) in enumerate(cfg["pilots"])))
        wall = time.perf_counter() - t0
    cpu = psutil.Process().cpu_times()
    return {**stats, "wall_s": wall, "cpu_s": cpu.user + cpu.system,
            "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
            "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
            "handed_out": len(seen), "first_error": first_error[0] if first_error else ""}


def generator_main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_generate(cfg))), flush=True)


# ------------------------------------------------------------------ one layout
def _backend_pids(admin_url: str, dbname: str) -> list[int]:
    engine = create_engine(admin_url)
    with engine.connect() as conn:
        pids = [r[0] for r in conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": dbname})]
    engine.dispose()
    return pids


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _tree(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    pids = []
    for p in procs:
        pids.append(p.pid)
        pids.extend(c.pid for c in psutil.Process(p.pid).children(recursive=True))
    return pids


def run_layout(args: Any, layout: str, tmp: Path) -> tuple[dict[str, Any], float | None]:
    key, n_queues = LAYOUTS[layout]
    with throwaway_pg(args.pg_url, f"dispatch_{layout}") as url:
        db = Database(url)
        db.upgrade()
        t0 = time.perf_counter()
        fill(db, args.jobs, n_queues)
        log.info("%s: %d jobs in %d queue(s) in %.1f s", key, args.jobs, n_queues,
                 time.perf_counter() - t0)
        raw = None
        if args.raw_seconds > 0:
            with db.session() as s:
                q0 = s.scalar(select(Queue.id).where(Queue.name == "BENCH_Q00"))
            raw = raw_claim_rate(url, q0, 8, args.raw_seconds)
            log.info("raw SQL claims: %.0f/s", raw)
        jobs_per_queue = activated(db)
        from dawms.server.tokens import issue

        env = {"DAWMS_DB_URL": url, "DAWMS_AUTH": "on"}
        servers, urls = [], []
        for k in range(args.servers):
            port = free_port()
            cmd = ["server", "--no-scheduler", "--port", str(port), "--workers",
                   str(args.workers)]
            servers.append(start_dawms(cmd, env, tmp / f"server-{layout}-{k}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        try:
            for proc, base in zip(servers, urls, strict=True):
                wait_http(f"{base}/healthz", proc)
            queues = sorted(jobs_per_queue)
            pilots = []
            for k in range(args.pilots):  # every queue served; fewer pilots: several each
                mine = queues[k::args.pilots] or [queues[k % len(queues)]]
                token, _ = issue(db, role="pilot", subject=f"bench-{k}", queues=mine)
                pilots.append([mine, token, urls[k % len(urls)]])
            cfg = tmp / f"generator-{layout}.json"
            cfg.write_text(json.dumps({"pilots": pilots, "jobs_per_queue": jobs_per_queue,
                                       "seconds": args.seconds}))
            dbname = url.rsplit("/", 1)[1]
            server_pids = _tree(servers)
            before_server = _cpu(server_pids)
            before_db = _cpu(_backend_pids(args.pg_url, dbname))
            gen = subprocess.run([sys.executable, "-m", "bench.dispatch", "--generate",
                                  str(cfg)], capture_output=True, text=True,
                                 timeout=args.seconds + 600, env=os.environ.copy())
            after_db = _cpu(_backend_pids(args.pg_url, dbname))
            after_server = _cpu(server_pids)
        finally:
            for proc in servers:
                stop(proc)
        if gen.returncode != 0:
            raise SystemExit(f"the load generator failed: {gen.stderr[-2000:]}")
        g = json.loads(gen.stdout.strip().splitlines()[-1])
        with db.session() as s:  # the catalog's own word: a job claimed twice?
            twice = s.scalar(select(func.count()).select_from(
                select(StateHistory.entity_id)
                .where(StateHistory.entity == "job", StateHistory.to_state == "sent")
                .group_by(StateHistory.entity_id).having(func.count() > 1).subquery()))
        db.dispose()
    requests = max(g["requests"], 1)
    server_s = sum(after_server.get(p, 0) - before_server.get(p, 0) for p in after_server)
    db_s = sum(v - before_db.get(p, 0) for p, v in after_db.items())
    result = {
        "requests_per_s": round(g["requests"] / g["wall_s"]),
        "jobs_per_s": round(g["jobs"] / g["wall_s"]),
        "p50_ms": round(g["p50_ms"] or 0, 1), "p99_ms": round(g["p99_ms"] or 0, 1),
        "double_dispatch": max(g["double_dispatch"], twice or 0),
        "false_empty": g["false_empty"],
        "jobs": g["jobs"], "handed_out": g["handed_out"], "requests": g["requests"],
        "for_pilots": sum(jobs_per_queue.values()),  # activated after the raw SQL claims
        "empty": g["empty"], "errors": g["errors"], "seconds": round(g["wall_s"], 1),
        "cpu_ms_per_request": {
            "server": round(1000 * server_s / requests, 3),
            "db": round(1000 * db_s / requests, 3),
            "generator": round(1000 * g["cpu_s"] / requests, 3),
            "total": round(1000 * (server_s + db_s + g["cpu_s"]) / requests, 3)},
    }
    if g["first_error"]:
        result["first_error"] = g["first_error"]
    log.info("%s: %s", key, result)
    return result, raw


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--pilots", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60, help="longest run of each layout")
    p.add_argument("--raw-seconds", type=float, default=5)
    p.add_argument("--workers", type=int, default=2, help="processes of each server")
    p.add_argument("--servers", type=int, default=1, help="server instances on the catalog")
    p.add_argument("--layouts", default="one,fifty")
    p.add_argument("--generate", metavar="CONFIG", help=argparse_hidden())
    args = p.parse_args()
    if args.generate:
        generator_main(args.generate)
        return
    setup_logging(args.verbose)
    out: dict[str, Any] = {"backend": "postgresql", "auth": True, "queued": args.jobs,
                           "pilots": args.pilots, "workers": args.workers,
                           "servers": args.servers, "raw_claims_per_s": None}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts.split(","):
            result, raw = run_layout(args, layout.strip(), Path(tmp))
            out[LAYOUTS[layout.strip()][0]] = result
            if raw is not None and out["raw_claims_per_s"] is None:
                out["raw_claims_per_s"] = round(raw)
    out["cpu_ms_per_request"] = {LAYOUTS[k.strip()][0]: out[LAYOUTS[k.strip()][0]]
                                 ["cpu_ms_per_request"] for k in args.layouts.split(",")}
    emit(out, args.json)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
