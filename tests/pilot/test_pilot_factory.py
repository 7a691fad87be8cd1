"""The local pilot factory: real ``python -m dawms.pilot`` processes against the stub server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import StubServer, pid_alive, wait_for

from dawms.pilot.factory import PilotHandle, PilotStatus, get_factory, pilot_argv
from dawms.pilot.factory.local import LocalFactory


def test_local_pilot_runs_the_queued_job_and_exits_when_idle(
    stub_server: StubServer, make_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    spec = make_spec()
    stub_server.jobs = [spec]
    factory = get_factory("local")
    assert isinstance(factory, LocalFactory)
    [handle] = factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots",
                              idle_timeout=0.5, poll_interval=0.1)
    status = factory.wait(handle, timeout=60)
    log_text = handle.log_path.read_text() if handle.log_path else ""
    assert status is PilotStatus.DONE, log_text
    assert stub_server.states() == ["starting", "running", "finished"]
    assert f"job {spec['job_id']} attempt 1: finished" in log_text
    assert handle.pilot_id in log_text


def test_cancel_kills_the_payload_and_reports_the_job_killed(
    stub_server: StubServer, make_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    spec = make_spec()
    stub_server.jobs = [spec]
    factory = LocalFactory()
    [handle] = factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots", idle_timeout=0.5,
                              kill_grace=1, env={"TEST_SLEEP": "60"})
    assert factory.poll(handle) is PilotStatus.RUNNING
    pid_files = (tmp_path / "pilots").glob
    assert wait_for(lambda: list(pid_files("pilot-*/*/payload.pid")), timeout=30), \
        handle.log_path.read_text()
    payload_pid = int(next(pid_files("pilot-*/*/payload.pid")).read_text())
    factory.cancel(handle)
    assert factory.wait(handle, timeout=30) is PilotStatus.CANCELLED
    final = stub_server.updates()[-1]
    assert (final["state"], final["error_category"]) == ("failed", "killed")
    assert "SIGTERM" in final["error_diag"]
    assert wait_for(lambda: not pid_alive(payload_pid)), "the payload survived its pilot"


def test_a_pilot_killed_outright_leaves_no_payload_behind(
    stub_server: StubServer, make_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    stub_server.jobs = [make_spec()]
    factory = LocalFactory()
    [handle] = factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots",
                              env={"TEST_SLEEP": "60"})
    pid_files = (tmp_path / "pilots").glob
    assert wait_for(lambda: list(pid_files("pilot-*/*/payload.pid")), timeout=30)
    payload_pid = int(next(pid_files("pilot-*/*/payload.pid")).read_text())
    os.killpg(int(handle.id), signal.SIGKILL)  # no chance to clean up
    assert factory.wait(handle, timeout=30) is PilotStatus.FAILED
    assert wait_for(lambda: not pid_alive(payload_pid)), "the payload outlived its pilot"


def test_several_pilots_share_the_queue(
    stub_server: StubServer, make_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    stub_server.jobs = [make_spec() for _ in range(4)]
    factory = LocalFactory()
    handles = factory.submit(stub_server.url, "Q", 2, tmp_path / "pilots", idle_timeout=0.5,
                             poll_interval=0.1)
    assert len({h.pilot_id for h in handles}) == 2
    start = time.monotonic()
    assert [factory.wait(h, timeout=60) for h in handles] == [PilotStatus.DONE] * 2
    assert time.monotonic() - start < 60
    assert stub_server.states().count("finished") == 4


def test_unknown_factory_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="dawms.pilot_factories"):
        get_factory("pbs-from-1995")


def test_pilot_argv_passes_only_given_options(tmp_path: Path) -> None:
    argv = pilot_argv("http://s", "Q", tmp_path, max_jobs=3, idle_timeout=0.5)
    assert argv == [sys.executable, "-m", "dawms.pilot", "--server", "http://s", "--queue", "Q",
                    "--workdir", str(tmp_path), "--max-jobs", "3", "--idle-timeout", "0.5"]


def test_poll_of_a_pilot_this_factory_did_not_start(tmp_path: Path) -> None:
    factory = LocalFactory()
    gone = PilotHandle("local", "999999999", "x")
    assert factory.poll(gone) is PilotStatus.UNKNOWN



def test_the_pilot_stays_light() -> None:
    """Importing every pilot module pulls in none of the server's dependencies; of the
    catalog only its standard-library name grammar (``catalog/names.py``)."""
    code = ("import sys, dawms.pilot.main, dawms.pilot.factory.local, dawms.storage.movers.file\n"
            "heavy = {'sqlalchemy', 'fastapi', 'pydantic', 'alembic', 'apscheduler', 'uvicorn'}\n"
            "ours = {m.split('.')[1] for m in sys.modules if m.startswith('dawms.')}\n"
            "cat = sorted(m for m in sys.modules if m.startswith('dawms.catalog.'))\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), sorted(ours), cat)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.strip() == "[] ['catalog', 'pilot', 'storage'] ['dawms.catalog.names']"
