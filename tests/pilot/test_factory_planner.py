"""The factory's arithmetic (``dawms.pilot.factory.planner``) and its work-dir names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dawms.pilot.factory.daemon import queue_dir
from dawms.pilot.factory.planner import QueuePlan, plan_queue, share

KEYS = {"local": frozenset(), "slurm": frozenset({"slurm"})}


def demand(**over: Any) -> dict[str, Any]:
    return {"known": True, "status": "online", "pilot_backend": "local", "activated": 10,
            "backend_settings": {}, "max_running": 1000, **over}


def test_pending_pilots_count_against_activated_jobs() -> None:
    assert plan_queue("Q", demand(activated=4), 0, 0, KEYS).submit == 4
    assert plan_queue("Q", demand(activated=4), 3, 0, KEYS).submit == 1
    p = plan_queue("Q", demand(activated=4), 4, 9, KEYS)
    assert p.submit == 0 and "pending pilot" in p.reason


def test_the_queue_limits_bound_a_cycle() -> None:
    settings = {"max_pilots": 5, "max_new": 3}
    assert plan_queue("Q", demand(backend_settings=settings), 0, 0, KEYS).submit == 3
    assert plan_queue("Q", demand(backend_settings=settings), 1, 3, KEYS).submit == 1
    p = plan_queue("Q", demand(backend_settings=settings), 0, 5, KEYS)
    assert p.submit == 0 and "limits" in p.reason
    # without max_pilots the queue's max_running bounds it
    assert plan_queue("Q", demand(max_running=2), 0, 1, KEYS).submit == 1


def test_backend_settings_become_submit_options_but_only_known_ones() -> None:
    p = plan_queue("Q", demand(pilot_backend="slurm", backend_settings={
        "max_pilots": 9, "max_jobs": 2, "slurm": {"partition": "debug"}}), 0, 0, KEYS)
    assert p.opts == {"max_jobs": 2, "slurm": {"partition": "debug"}} and p.submit == 9
    for bad in ({"python": "/bin/sh"}, {"env": {"LD_PRELOAD": "x"}}, {"slurm": {}},
                {"max_pilots": -1}, {"max_new": True}, {"max_pilots": "3"}):
        p = plan_queue("Q", demand(backend_settings=bad), 0, 0, KEYS)
        assert p.submit == 0 and "backend_settings" in p.reason, bad


@pytest.mark.parametrize(("over", "reason"), [
    ({"known": False}, "no such queue"), ({"status": "offline"}, "offline"),
    ({"pilot_backend": "pbs"}, "not one this factory runs"),
])
def test_queues_that_get_no_pilots_say_why(over: dict[str, Any], reason: str) -> None:
    p = plan_queue("Q", demand(**over), 0, 0, KEYS)
    assert p.submit == 0 and reason in p.reason


def test_the_factory_cap_is_shared_in_proportion() -> None:
    plans = [QueuePlan("A", "local", 30), QueuePlan("B", "local", 10), QueuePlan("C", "local", 0)]
    assert [p.submit for p in share(plans, 8)] == [6, 2, 0]
    assert [p.submit for p in share(plans, 100)] == [30, 10, 0]
    assert [p.submit for p in share(plans, 0)] == [0, 0, 0]
    assert [p.submit for p in share(plans, -5)] == [0, 0, 0]
    odd = share([QueuePlan(q, "local", 1) for q in "ABC"], 2)
    assert sum(p.submit for p in odd) == 2


@pytest.mark.parametrize("queue", ["Q", "../../etc", "a/b", "..", ".", "Q" * 128, "Q;$(id)"])
def test_every_queue_dir_stays_under_the_work_dir(tmp_path: Path, queue: str) -> None:
    path = queue_dir(tmp_path, queue)
    assert path.parent == tmp_path.resolve() and path.name.startswith("q-")
    assert queue_dir(tmp_path, queue) == path != queue_dir(tmp_path, queue + "x")


def test_the_factory_stays_light() -> None:
    """``dawms-factory`` and its backends import none of the server's dependencies and
    nothing of the catalog but its standard-library tables (it installs with dawms[pilot])."""
    import subprocess
    import sys

    # (not rich: httpx imports it for its own CLI wherever it is installed)
    code = ("import sys, dawms.pilot.factory.daemon, dawms.pilot.factory.slurm\n"
            "heavy = {'sqlalchemy', 'fastapi', 'pydantic', 'alembic', 'apscheduler', 'uvicorn'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy),"
            " sorted(m for m in sys.modules if m.startswith(('dawms.catalog', 'dawms.server'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] ['dawms.catalog', 'dawms.catalog.names', 'dawms.catalog.states']", out
