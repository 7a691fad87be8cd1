"""``/metrics`` scraped with a reader token after a real run matches ``dawms task show``.

A real server process, real pilot processes over HTTP: a task of four jobs, one of
whose inputs has its only copy corrupt (it fails as ``bad_data``). The scrape's
``dawms_jobs`` by state equals the task's job counts from ``dawms task show
--json``; the dispatch and report counters saw every job; the bad copy shows in
``dawms_replicas``; the daemons' last successes are there. Other roles are refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from ops_helpers import corrupt, replica_path, task_spec
from prometheus_client.parser import text_string_to_metric_families

from dawms.catalog.db import Database
from dawms.cli import main
from dawms.client import Client
from dawms.ddm_bridge.local import LocalDDM
from factories import make_dataset

pytestmark = pytest.mark.ops


def _scrape(server: str, token: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    reply = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
    assert reply.status_code == 200, reply.text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_match_the_task_after_a_run(db: Database, ddm: LocalDDM, server: str,
                                            tmp_path: Path, make_token: Callable[..., str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_dataset(db, ddm, "ops:raw.M", "SITE_A_DISK", 4, tmp_path, seed=9)
    corrupt(replica_path(db, "ops", paths[0].name, "SITE_A_DISK"))
    prod = make_token("production", "op")
    with Client(server, token=prod) as client:
        task_id = client.submit_task(task_spec("ops:raw.M"))["task_id"]
        pilots = []
        for queue in ("SITE_A_PROD", "SITE_C_PROD"):
            token_file = tmp_path / f"{queue}.token"
            token_file.write_text(make_token("pilot", f"p-{queue}", [queue]))
            work = tmp_path / f"work-{queue}"
            work.mkdir()
            pilots.append(subprocess.Popen(
                [sys.executable, "-m", "dawms.pilot", "--server", server, "--queue", queue,
                 "--token-file", str(token_file), "--workdir", str(work), "--max-jobs", "10",
                 "--idle-timeout", "60", "--poll-interval", "0.2", "--kill-grace", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        try:
            deadline = time.monotonic() + 180
            while client.task(task_id)["state"] not in ("done", "finished", "failed"):
                assert time.monotonic() < deadline, client.summary(task_id)
                time.sleep(0.5)
        finally:
            for p in pilots:
                p.terminate()
                p.wait(30)
    assert main(["--server", server, "--token", prod, "task", "show", str(task_id),
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["jobs"]
    assert shown == {"finished": 3, "failed": 1}, shown
    m = _scrape(server, make_token("reader", "prometheus"))
    by_state: dict[str, float] = {}
    for labels, value in m["dawms_jobs"]:
        by_state[labels["state"]] = by_state.get(labels["state"], 0) + value
    assert by_state == shown
    assert sum(v for _, v in m["dawms_dispatched_jobs_total"]) == 4
    finals = {lab["state"]: v for lab, v in m["dawms_reports_total"] if lab["result"] == "ok"}
    assert finals.get("finished") == 3 and finals.get("failed") == 1
    assert sum(v for lab, v in m["dawms_dispatch_seconds_count"]) >= 4
    assert {lab["state"]: v for lab, v in m["dawms_replicas"]}["bad"] == 1
    assert {lab["state"]: v for lab, v in m["dawms_tasks"]} == {"finished": 1}
    daemons = {lab["daemon"] for lab, _ in m["dawms_daemon_last_success_timestamp_seconds"]}
    assert {"refiner", "broker", "activator", "finisher"} <= daemons
    assert any(lab["daemon"] == "broker" for lab, _ in m["dawms_daemon_cycle_seconds_count"])
    for role in ("pilot", "analyst", "ddm"):
        reply = httpx.get(f"{server}/metrics", timeout=10,
                          headers={"Authorization":
                                   f"Bearer {make_token(role, 'x', ['SITE_A_PROD'])}"})
        assert reply.status_code == 403, role
    assert httpx.get(f"{server}/metrics", timeout=10).status_code == 401
