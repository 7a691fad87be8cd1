"""The rest of the API, through the client over a real HTTP server: task and job lists
with filters and keyset paging, a task's priority, and error bodies with a code.

Paging walks every page until the server stops sending ``X-Next-After`` and must
see every matching row exactly once, in order, while rows are added between
pages (keyset paging, unlike offsets, neither skips nor repeats).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, Task
from dawms.client import Client, DawmsError

pytestmark = pytest.mark.api
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _task(s: object, name: str, owner: str, state: str = "running") -> int:
    task = Task(name=name, owner=owner, state=state, transformation="x", input_datasets=[],
                output_dataset="b:o", log_dataset="b:l", split={}, resources={}, retry={},
                priority=500)
    s.add(task)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return task.id


def _jobs(s: object, task_id: int, queue_id: int, states: list[str]) -> None:
    s.execute(insert(Job), [  # type: ignore[attr-defined]
        {"task_id": task_id, "job_index": i, "attempt": 1, "state": st, "queue_id": queue_id,
         "priority": 500, "state_changed_at": NOW, "created_at": NOW,
         "error_category": "stagein" if st == "failed" else ""}
        for i, st in enumerate(states)])


@pytest.fixture
def server(db: Database, tmp_path: Path) -> Iterator[str]:
    """A real `dawms server --no-scheduler` over ``db`` (no daemon touches the rows)."""
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed after the yield)
    proc = subprocess.Popen([sys.executable, "-m", "dawms", "server", "--no-scheduler",
                             "--port", str(port)], env={**os.environ, "DAWMS_DB_URL": db.url},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            httpx.get(f"{url}/readyz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def world(db: Database, sites: list[str], server: str,
          make_token: Callable[..., str]) -> dict:
    with db.session() as s:
        queues = dict(s.execute(select(Queue.name, Queue.id)).all())
        ids = {}
        for k in range(7):
            ids[f"alice.{k}"] = _task(s, f"mc.alice_{k}", "alice")
        ids["bob"] = _task(s, "reco%bob", "bob", state="done")
        _jobs(s, ids["alice.0"], queues["SITE_A_PROD"], ["activated"] * 5 + ["running"] * 2)
        _jobs(s, ids["alice.1"], queues["SITE_C_PROD"], ["failed"] * 3 + ["activated"])
    return {"url": server, "ids": ids, "token": make_token, "db": db}


def test_task_list_filters_and_keyset_pages(world: dict) -> None:
    c = Client(world["url"], token=world["token"]("reader"))
    assert [t["owner"] for t in c.tasks(owner="bob")] == ["bob"]
    assert [t["name"] for t in c.tasks(name="reco%")] == ["reco%bob"]
    assert c.tasks(name="reco_") == []  # a prefix, '%' and '_' taken literally
    assert {t["owner"] for t in c.tasks(state="running")} == {"alice"}
    assert len(c.tasks(state=["running", "done"])) == 8
    seen, after, pages = [], None, 0
    while True:
        page, after = c.tasks_page(owner="alice", limit=3, after=after)
        seen += [t["id"] for t in page]
        pages += 1
        if pages == 1:  # a task added while paging comes first (newest), not in between
            with world["db"].session() as s:
                _task(s, "mc.alice_late", "alice")
        if after is None:
            break
    assert pages == 3 and seen == sorted(seen, reverse=True)
    assert sorted(seen) == sorted(v for k, v in world["ids"].items() if k.startswith("alice"))


def test_job_list_filters_and_keyset_pages(world: dict) -> None:
    c = Client(world["url"], token=world["token"]("reader"))
    t0, t1 = world["ids"]["alice.0"], world["ids"]["alice.1"]
    assert len(c.jobs(task_id=t0, state="activated")) == 5
    assert len(c.jobs(state=["activated", "running"])) == 8
    assert {j["task_id"] for j in c.jobs(queue="SITE_C_PROD")} == {t1}
    assert {j["task_id"] for j in c.jobs(site="SITE_A")} == {t0}
    assert len(c.jobs(error_category="stagein")) == 3
    seen, after = [], None
    while True:
        page, after = c.jobs_page(limit=4, after=after)
        seen += [j["id"] for j in page]
        if after is None:
            break
    assert len(seen) == 11 and seen == sorted(seen) and len(set(seen)) == 11
    shown = c.job(seen[0])
    assert {"files", "history", "queue"} <= set(shown)


def test_task_priority_moves_its_queued_jobs_only(world: dict) -> None:
    t0 = world["ids"]["alice.0"]
    alice = Client(world["url"], token=world["token"]("analyst", "alice"))
    result = alice.set_task_priority(t0, 900)
    assert (result["was"], result["priority"], result["jobs"]) == (500, 900, 5)
    with world["db"].session() as s:
        rows = s.execute(select(Job.state, Job.priority).where(Job.task_id == t0)).all()
        assert s.scalar(select(Task.priority).where(Task.id == t0)) == 900
    assert sorted(set(rows)) == [("activated", 900), ("running", 500)]
    mallory = Client(world["url"], token=world["token"]("analyst", "mallory"))
    with pytest.raises(DawmsError) as refused:
        mallory.set_task_priority(t0, 1)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


@pytest.mark.parametrize("call, status, code", [
    (lambda c: c.task(999999), 404, "not_found"),
    (lambda c: c.jobs(limit=0), 422, "invalid"),
    (lambda c: c.set_task_priority(1, 2**40), 422, "invalid"),
])
def test_errors_carry_a_machine_readable_code(world: dict, call: Callable, status: int,
                                              code: str) -> None:
    c = Client(world["url"], token=world["token"]("production"))
    with pytest.raises(DawmsError) as err:
        call(c)
    assert (err.value.status, err.value.code) == (status, code)
    anonymous = Client(world["url"])
    with pytest.raises(DawmsError) as err:
        anonymous.tasks()
    assert (err.value.status, err.value.code) == (401, "unauthorized")


def test_the_cli_changes_a_priority_and_pages_through_every_job(
        world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from dawms.cli import main

    token = world["token"]("production")
    t0 = world["ids"]["alice.0"]
    common = ["--server", world["url"], "--token", token]
    assert main([*common, "task", "priority", str(t0), "800", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["priority"] == 800
    assert main([*common, "job", "pages", "--page", "2", "--state", "activated",
                 "--state", "failed"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 9 and len({r["id"] for r in rows}) == 9
    assert main([*common, "task", "pages", "--owner", "alice", "--page", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7
    assert main([*common, "task", "priority", "999999", "1"]) == 1
    assert "no task 999999" in capsys.readouterr().err
