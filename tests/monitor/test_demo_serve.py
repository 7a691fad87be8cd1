"""``dawms demo --serve``: the demo prints the monitor's URL and keeps serving after its
jobs end, until interrupted (what README's "open the monitor" and ``make docs`` use)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.monitor, pytest.mark.e2e]


def test_demo_serve_keeps_the_monitor_up(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "demo"
    err = open(tmp_path / "demo.err", "w")  # noqa: SIM115 (closed below)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAWMS_")}
    demo = subprocess.Popen([sys.executable, "-m", "dawms", "demo", "--serve", "--json",
                             "--port", str(port), "--workdir", str(work)],
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                            start_new_session=True)
    try:
        assert demo.stdout is not None
        line = demo.stdout.readline()  # the result: the jobs have ended
        result = json.loads(line)
        assert result["tasks"] == {"done": 1}, result
        assert demo.poll() is None  # still serving
        url = f"http://127.0.0.1:{port}"
        assert f"monitor: {url}/monitor/" in (tmp_path / "demo.err").read_text()
        token = (work / "token").read_text().strip()
        with httpx.Client(base_url=url, timeout=30) as client:
            page = client.get("/monitor/task/1", headers={"Accept": "text/html",
                                                          "Cookie": f"dawms_monitor={token}"})
            assert page.status_code == 200 and "demo.reco" in page.text
            dash = client.get("/api/v1/monitor/dashboard",
                              headers={"Authorization": f"Bearer {token}"}).json()["data"]
            assert sum(c.get("finished", 0) for c in dash["jobs_by_site"].values()) == \
                result["jobs"]["finished"]
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        err.close()
