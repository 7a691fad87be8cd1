"""Dispatch at scale, on PostgreSQL: the claim's plan, its one round trip, two server
processes sharing one queue, and the pilot hot path's token cache.

- The claim is served by ``ix_job_dispatch`` in claim order (no sort at any depth);
  with the old index, ``(queue_id, state, priority)``, the plan sorts: the check can
  fail.
- The claim and its history rows are one statement.
- The SKIP LOCKED test: two ``dawms server`` processes on one catalog and 16 pilots
  (``bench.dispatch``, its load generator in another process) take every job of one
  queue through acquire, 2 heartbeats and the final report: no job handed out twice,
  none lost, and no "no jobs" answer while more jobs were left than the other
  pilots could have been holding. Without ``SKIP LOCKED`` the claimers wait on the
  same row and come back empty (false "no jobs"); without the row lock they pick the
  same row and all but one update nothing.
- The CI-sized ``bench.dispatch`` over 50 queues, with ``--workers 2``, prints the
  issue's JSON shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, insert, select, text

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, Site, StateHistory, Task
from dawms.catalog.transition import _claim_statement, claim_jobs
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.server.app import create_app
from dawms.server.settings import ServerSettings
from dawms.server.tokens import issue, revoke

pytestmark = [pytest.mark.api, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg(pg_server_url: str) -> Iterator[Database]:
    engine = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    db = Database(pg_server_url)
    db.upgrade()
    yield db
    db.dispose()


def _fill(db: Database, n: int) -> int:
    now = datetime.now(UTC)
    with db.session() as s:
        site = Site(name="S")
        s.add(site)
        s.flush()
        queue = Queue(name="S_PROD", site_id=site.id, read_endpoints=[], write_endpoint="")
        task = Task(name="t", owner="o", state="running", transformation="x",
                    input_datasets=[], output_dataset="b:o", log_dataset="b:l", split={},
                    resources={}, retry={})
        s.add_all([queue, task])
        s.flush()
        s.execute(insert(Job), [
            {"task_id": task.id, "job_index": i, "attempt": 1, "state": "activated",
             "queue_id": queue.id, "priority": i % 7, "spec": {"i": i},
             "state_changed_at": now, "created_at": now} for i in range(n)])
        queue_id = queue.id
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE job"))
        conn.commit()
    return queue_id


def _plan(db: Database, queue_id: int) -> list[str]:
    with db.engine.connect() as conn:
        compiled = _claim_statement("postgresql").compile(dialect=conn.dialect)
        params = compiled.construct_params({
            "claim_queue": queue_id, "claim_n": 1, "claim_pilot": "p",
            "claim_now": datetime.now(UTC), "claim_actor": "pilot:p"})
        return list(conn.exec_driver_sql("EXPLAIN " + str(compiled), params).scalars())


def test_the_claim_reads_the_index_in_claim_order_without_sorting(pg: Database) -> None:
    queue_id = _fill(pg, 5000)
    plan = _plan(pg, queue_id)
    assert any("ix_job_dispatch" in line for line in plan), plan
    assert not any("Sort" in line for line in plan), plan
    with pg.engine.begin() as conn:  # the index before migration 0011: the plan sorts
        conn.execute(text("DROP INDEX ix_job_dispatch"))
        conn.execute(text("CREATE INDEX ix_job_dispatch ON job (queue_id, state, priority)"))
        conn.execute(text("ANALYZE job"))
    assert any("Sort" in line for line in _plan(pg, queue_id))


def test_the_claim_and_its_history_are_one_statement(pg: Database) -> None:
    queue_id = _fill(pg, 20)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        statements.append(sql)

    with pg.session() as s:
        s.connection()  # BEGIN
        event.listen(pg.engine, "before_cursor_execute", count)
        try:
            rows = claim_jobs(s, queue_id, 3, "pilot-7")
        finally:
            event.remove(pg.engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    # best priority first, then oldest: 6, 13 (priority 6), then 5 (priority 5); the
    # rows of UPDATE ... RETURNING come in no particular order
    with pg.session() as s:
        indexes = dict(s.execute(select(Job.id, Job.job_index)).all())
        history = s.execute(select(StateHistory.entity_id, StateHistory.from_state,
                                   StateHistory.to_state, StateHistory.attempt,
                                   StateHistory.actor)).all()
        sent = s.scalars(select(Job.id).where(Job.state == "sent")).all()
    assert sorted(indexes[r[0]] for r in rows) == [5, 6, 13]
    assert sorted(sent) == sorted(r[0] for r in rows)
    assert sorted(history) == sorted((r[0], "activated", "sent", 1, "pilot:pilot-7")
                                     for r in rows)


def _bench(pg_url: str, *args: str, timeout: float = 600) -> dict:
    admin = os.environ.get("DAWMS_TEST_PG_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    proc = subprocess.run([sys.executable, "-m", "bench.dispatch", "--json", "--pg-url", admin,
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_server_processes_hand_out_every_job_once_and_never_a_false_empty() -> None:
    """The SKIP LOCKED test (see the module's docstring)."""
    result = _bench("", "--jobs", "240", "--pilots", "16", "--servers", "2", "--workers", "1",
                    "--seconds", "400", "--raw-seconds", "0", "--layouts", "one")
    one = result["one_queue"]
    assert one["errors"] == 0, one
    assert one["handed_out"] == one["jobs"] == 240, one  # every job, its whole lifecycle
    assert one["double_dispatch"] == 0, one
    assert one["false_empty"] == 0, one


def test_the_ci_sized_dispatch_benchmark_over_fifty_queues() -> None:
    result = _bench("", "--jobs", "150", "--pilots", "8", "--workers", "2", "--seconds", "400",
                    "--raw-seconds", "1", "--layouts", "fifty")
    assert (result["backend"], result["auth"], result["queued"]) == ("postgresql", True, 150)
    fifty = result["fifty_queues"]
    assert {"requests_per_s", "jobs_per_s", "p99_ms", "double_dispatch", "false_empty",
            "cpu_ms_per_request"} <= set(fifty)
    # every job the raw SQL claims left, through its whole lifecycle
    assert 0 < fifty["for_pilots"] <= 150 and fifty["errors"] == 0, fifty
    assert fifty["handed_out"] == fifty["jobs"] == fifty["for_pilots"], fifty
    assert fifty["double_dispatch"] == fifty["false_empty"] == 0, fifty
    assert fifty["requests"] >= 4 * fifty["jobs"] and result["raw_claims_per_s"] > 0
    cpu = result["cpu_ms_per_request"]["fifty_queues"]
    assert cpu["server"] > 0 and cpu["db"] > 0 and cpu["generator"] > 0, cpu


def _acquire(api: TestClient, token: str) -> int:
    return api.post("/api/v1/pilot/acquire_jobs", json={"queue": "S_PROD", "pilot_id": "p"},
                    headers={"Authorization": f"Bearer {token}"}).status_code


def test_pilot_tokens_are_cached_for_token_cache_s_and_roles_still_checked(
        pg: Database) -> None:
    _fill(pg, 5)
    cached = TestClient(create_app(pg, LocalDDM(), SchedulerConfig(),
                                   settings=ServerSettings(token_cache_s=5)))
    uncached = TestClient(create_app(pg, LocalDDM(), SchedulerConfig(),
                                     settings=ServerSettings(token_cache_s=0)))
    token, claims = issue(pg, role="pilot", subject="p", queues=["S_PROD"])
    reader, _ = issue(pg, role="reader", subject="r")
    assert _acquire(cached, token) == _acquire(uncached, token) == 200
    assert _acquire(cached, reader) == 403
    revoke(pg, claims["jti"], actor="test")
    assert _acquire(uncached, token) == 401  # no cache: refused at once
    ping = cached.get("/api/v1/ping", headers={"Authorization": f"Bearer {token}"})
    assert ping.status_code == 401  # other routes check every time
    assert _acquire(cached, reader) == 403  # a cached token's role is checked every time
    assert _acquire(cached, token) == 200  # the hot path took it from its cache
    deadline = time.monotonic() + 10
    while _acquire(cached, token) == 200:  # the hot path: within token_cache_s
        assert time.monotonic() < deadline, "a revoked pilot token stayed accepted"
        time.sleep(0.1)
    assert _acquire(cached, token) == 401
