"""Benchmark: the web monitor's pages on a catalog of 1,000,000 jobs (PostgreSQL).

A throwaway database is filled with SQL ``generate_series`` (not timed, never
through the API): 40 sites with a queue and an endpoint each, 10,000 tasks of 100
jobs each spread over 58 days (85 % finished, 8 % failed, the rest queued or
running), three state-history rows per job (activated, running, its end) and an
input file row per job. Then each page is fetched through the app's HTTP stack
(TestClient, auth on, a reader's token) and timed: the dashboard, the task list,
random task pages, the first job list page, ``job_list_deep`` following the
keyset "next" link 100 times from the first page, random job pages, and the
statistics of a site in 4 h and 24 h bins. The baseline of the same run is
``/api/v1/ping`` (the HTTP stack and the token check, no query).

    python -m bench.monitor --json [--jobs 1000000] [--repeat 20]
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from bench._common import emit, parser, percentile, setup_logging, throwaway_pg
from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM
from dawms.server.app import create_app
from dawms.server.settings import ServerSettings
from dawms.server.tokens import issue

SITES = 40
JOBS_PER_TASK = 100
SPAN_S = 58 * 86400

FILL = [
    """INSERT INTO site (id, name, description)
       SELECT g, 'SITE_' || g, '' FROM generate_series(1, :sites) g""",
    """INSERT INTO storage_endpoint (id, name, site_id, kind, url_prefix, rse)
       SELECT g, 'SITE_' || g || '_DISK', g, 'disk', 'file:///tmp/bench/' || g, ''
       FROM generate_series(1, :sites) g""",
    """INSERT INTO queue (id, name, site_id, status, cores, memory_mb, max_walltime_s,
         max_disk_mb, max_running, max_queued, pilot_backend, backend_settings,
         read_endpoints, write_endpoint, movers, direct_access)
       SELECT g, 'SITE_' || g || '_PROD', g, 'online', 1, 2000, 86400, 20000, 1000, 1000,
         'local', '{}'::json, '[]'::json, 'SITE_' || g || '_DISK', '{}'::json, 0
       FROM generate_series(1, :sites) g""",
    """INSERT INTO config_change (at, actor, source, diff)
       SELECT now() - g * interval '1 day', 'ops', 'sites.toml', '[["queue", "changed"]]'::json
       FROM generate_series(1, 30) g""",
    """INSERT INTO task (id, name, owner, state, transformation, input_datasets,
         output_dataset, log_dataset, split, resources, retry, priority, share, error,
         created_at, updated_at)
       SELECT g, 'bench.task.' || g, 'user' || (g % 50), CASE WHEN g > :tasks - 200
         THEN 'running' ELSE 'done' END, 'run {inputs}', ('["b:raw.' || g || '"]')::json,
         'b:out.' || g, 'b:out.' || g || '.log', '{"files_per_job": 1}'::json, '{}'::json,
         '{}'::json, 500,
         'production', '', now() - (:span - (g - 1)::float8 * :span / :tasks) * interval '1 second',
         now() FROM generate_series(1, :tasks) g""",
    # job g: created at a steady rate over the span, on queue g % SITES
    """INSERT INTO job (id, task_id, job_index, attempt, state, queue_id, priority, cores,
         memory_mb, walltime_s, disk_mb, pilot_id, heartbeat_at, state_changed_at,
         created_at, started_at, ended_at, exit_code, error_category, error_diag, metrics)
       SELECT g, (g - 1) / :per_task + 1, (g - 1) % :per_task, 1, s.state,
         g % :sites + 1, 500, 1, 2000, 3600, 1000,
         CASE WHEN s.state IN ('finished', 'failed', 'running') THEN 'pilot-' || (g % 997) END,
         CASE WHEN s.state IN ('finished', 'failed', 'running')
           THEN t.c + interval '700 seconds' END,
         t.c + interval '700 seconds', t.c,
         CASE WHEN s.state IN ('finished', 'failed', 'running')
           THEN t.c + interval '100 seconds' END,
         CASE WHEN s.state IN ('finished', 'failed') THEN t.c + interval '700 seconds' END,
         CASE s.state WHEN 'finished' THEN 0 WHEN 'failed' THEN 1 END,
         CASE WHEN s.state = 'failed' THEN (ARRAY['payload', 'stagein', 'stageout',
           'lost_heartbeat'])[g % 4 + 1] ELSE '' END,
         CASE WHEN s.state = 'failed' THEN 'exit code 1: <b>' || g || '</b>' ELSE '' END,
         CASE WHEN s.state = 'finished' THEN json_build_object('cpu_s', 400 + g % 200,
           'wall_s', 600, 'max_rss_kb', 200000)::json ELSE '{}'::json END
       FROM generate_series(1, :jobs) g,
         LATERAL (SELECT now() - (:span - (g - 1)::float8 * :span / :jobs)
                  * interval '1 second' - interval '700 seconds' AS c) t,
         LATERAL (SELECT CASE WHEN g > :jobs - 4000 THEN (ARRAY['activated', 'running',
                    'assigned', 'running'])[g % 4 + 1]
                  WHEN g % 100 < 8 THEN 'failed' ELSE 'finished' END AS state) s""",
    """INSERT INTO state_history (entity, entity_id, from_state, to_state, attempt, at,
         actor, reason)
       SELECT 'job', j.id, v.src, v.dst, 1, j.created_at + v.dt * interval '1 second',
         v.actor, v.reason
       FROM job j CROSS JOIN (VALUES ('defined', 'activated', 50, 'scheduler:broker',
           'inputs at queue'), ('activated', 'running', 100, 'pilot:p', 'reported'),
         ('running', 'end', 700, 'pilot:p', 'reported')) v(src, dst, dt, actor, reason)
       WHERE v.dst <> 'end' OR j.ended_at IS NOT NULL""",
    "UPDATE state_history SET to_state = j.state FROM job j WHERE state_history.to_state = "
    "'end' AND j.id = state_history.entity_id",
    """INSERT INTO job_file (job_id, type, scope, lfn, dataset)
       SELECT g, 'in', 'b', 'raw.' || ((g - 1) / :per_task + 1) || '._' || g,
         'b:raw.' || ((g - 1) / :per_task + 1)
       FROM generate_series(1, :jobs) g""",
    """INSERT INTO dataset (scope, name, is_open, created_at)
       SELECT 'b', 'raw.' || g, 0, now() FROM generate_series(1, :tasks) g""",
    """INSERT INTO data_request (kind, name, endpoint_id, ddm, activity, state, files_total,
         files_done, bytes_done, attempts, error, created_at, updated_at)
       SELECT 'replicate', 'bench_dis' || g, g % :sites + 1, 'local', 'Production Input',
         CASE WHEN g % 10 = 0 THEN 'requested' ELSE 'done' END, 10, 10, 1000, 1, '', now(),
         now() FROM generate_series(1, 5000) g""",
]
SEQUENCES = ("site", "storage_endpoint", "queue", "task", "job")


def fill(db: Database, jobs: int) -> float:
    t0 = time.monotonic()
    params = {"sites": SITES, "jobs": jobs, "tasks": jobs // JOBS_PER_TASK,
              "per_task": JOBS_PER_TASK, "span": SPAN_S}
    with db.engine.begin() as conn:
        for sql in FILL:
            conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
        for table in SEQUENCES:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.monotonic() - t0


def timed(client: TestClient, path: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    reply = client.get(path)
    ms = (time.perf_counter() - t0) * 1000
    if reply.status_code != 200:
        raise RuntimeError(f"{path}: {reply.status_code} {reply.text[:300]}")
    return ms, reply.text


def measure(client: TestClient, jobs: int, repeat: int, rnd: random.Random
            ) -> dict[str, list[float]]:
    tasks = jobs // JOBS_PER_TASK
    pages: dict[str, Any] = {
        "dashboard": lambda: "/monitor/",
        "task_list": lambda: "/monitor/tasks",
        "task_page": lambda: f"/monitor/task/{rnd.randint(1, tasks)}",
        "job_list_first": lambda: "/monitor/jobs",
        "job_page": lambda: f"/monitor/job/{rnd.randint(1, jobs)}",
        "stats": lambda: f"/monitor/stats?site=SITE_{rnd.randint(1, SITES)}"
                         f"&bin_hours={rnd.choice((4, 24))}",
    }
    out: dict[str, list[float]] = {name: [] for name in ("baseline", *pages, "job_list_deep")}
    for name, path in pages.items():
        timed(client, path())  # warm the route once
        out[name] = [timed(client, path())[0] for _ in range(repeat)]
    out["baseline"] = [timed(client, "/api/v1/ping")[0] for _ in range(repeat)]
    path = "/monitor/jobs"
    for _ in range(100):
        ms, html = timed(client, path)
        out["job_list_deep"].append(ms)
        found = re.search(r'<a class="next" href="([^"]+)"', html)
        if not found:
            raise RuntimeError("the job list has no next link")
        path = found.group(1).replace("&amp;", "&")
    return out


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    setup_logging(args.verbose)
    rnd = random.Random(7)
    with throwaway_pg(args.pg_url, "monitor") as url:
        db = Database(url)
        db.upgrade()
        fill_s = fill(db, args.jobs)
        token = issue(db, role="reader", subject="bench", queues=[], lifetime_s=3600)[0]
        app = create_app(db, LocalDDM(), settings=ServerSettings(auth="on"))
        with TestClient(app, base_url="http://127.0.0.1",
                        headers={"Authorization": f"Bearer {token}"}) as client:
            times = measure(client, args.jobs, args.repeat, rnd)
        db.dispose()
    p95 = {k: round(percentile(v, 95), 1) for k, v in times.items() if k != "baseline"}
    emit({"backend": "postgresql", "jobs": args.jobs, "p95_ms": p95,
          "baseline_ping_p95_ms": round(percentile(times["baseline"], 95), 1),
          "max_p95_ms": max(p95.values()), "fill_s": round(fill_s, 1),
          "requests_per_page": args.repeat}, args.json)
    return 0 if max(p95.values()) <= 300 else 1


if __name__ == "__main__":
    raise SystemExit(main())
