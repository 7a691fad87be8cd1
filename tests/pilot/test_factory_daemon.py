"""The factory loop end to end: a real ``dawms server``, the factory asking it over HTTP,
real pilots on the local backend and on the real one-node Slurm cluster (marker
``slurm``) running a task's jobs to finished.

The queue's ``pilot_backend`` and ``backend_settings`` come from the site file,
through the demand endpoint; the factory keeps within ``max_pilots``, gives each
batch a pilot token in a 0600 file that no command line shows (and keeps its own
token from its pilots), and cleans up every pilot and token file once they end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue
from dawms.catalog.site_config import sync, validate
from dawms.client import Client
from dawms.ddm_bridge.local import LocalDDM
from dawms.pilot.factory.daemon import Factory, FactoryClient, ServerError, main
from factories import make_dataset, site_config

pytestmark = [pytest.mark.e2e, pytest.mark.pilot]
QUEUES = ["SITE_A_PROD", "SITE_C_PROD"]
PAYLOAD = (f"{sys.executable} -c \"import sys,time; time.sleep(0.5); "
           "open(sys.argv[1],'w').write(str(len(sys.argv)))\" {output} {inputs}")


def configure(db: Database, tmp_path: Path, backend: str, settings: dict[str, Any]) -> None:
    """The site file of the ``server`` fixture, its queues now with pilot settings."""
    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"],
                      pilot_backend=backend, backend_settings=settings)
    cfg["queue"][1]["status"] = "brokeroff"
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="factory")


def argv_of_processes() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


def environ_of(pid_pattern: str) -> list[bytes]:
    """The initial environments of the processes whose command line has ``pid_pattern``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pid_pattern in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    out.append((entry / "environ").read_bytes())
            except OSError:
                continue
    return out


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "slurm" and not Path(os.environ.get("SLURM_CONF", "/none")).is_file():
        pytest.fail("SLURM_CONF names no slurm.conf: run `make services`")
    return request.param


def test_the_factory_keeps_the_queue_supplied_and_the_task_finishes(
    db: Database, ddm: LocalDDM, server: str, tmp_path: Path, backend: str,
    make_token: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings: dict[str, Any] = {"max_pilots": 2, "max_new": 2, "idle_timeout": 3,
                                "poll_interval": 0.3, "token_lifetime_s": 600}
    if backend == "slurm":
        settings["slurm"] = {"partition": "debug", "time_limit_min": 10}
    configure(db, tmp_path, backend, settings)
    make_dataset(db, ddm, "fac:raw.A", "SITE_A_DISK", 6, tmp_path, seed=5)
    factory_token = make_token("factory", "fac", QUEUES)
    monkeypatch.setenv("DAWMS_TOKEN", factory_token)  # the factory's own: no pilot may get it
    spec = {"name": "fac", "transformation": PAYLOAD, "input_datasets": ["fac:raw.A"],
            "output_dataset": "fac:out.{task_id}", "split": {"files_per_job": 1}}
    client = FactoryClient(server, factory_token)
    factory = Factory(client, server, QUEUES, tmp_path / "factory")
    seen_tokens: set[str] = set()
    most_live, submitted = 0, 0
    with Client(server, token=make_token("production", "prodmgr")) as user:
        task_id = user.submit_task(spec)["task_id"]
        deadline = time.monotonic() + 240
        while True:
            report = factory.run_once()
            submitted += report["queues"]["SITE_A_PROD"]["submitted"]
            assert report["queues"]["SITE_C_PROD"]["submitted"] == 0  # it has no work
            most_live = max(most_live, len(factory.pilots))
            for f in (tmp_path / "factory").glob("q-*/tokens/token-*"):
                assert f.stat().st_mode & 0o777 == 0o600
                seen_tokens.add(f.read_text())
            secrets = [factory_token, *seen_tokens]
            assert not [a for a in argv_of_processes() if any(t in a for t in secrets)]
            for env in environ_of("dawms.pilot --server"):
                assert factory_token.encode() not in env
            if user.task(task_id)["state"] == "done" and not factory.pilots:
                break
            assert time.monotonic() < deadline, (report, user.summary(task_id))
            time.sleep(0.5)
        summary = user.summary(task_id)
    client.close()
    assert summary["jobs"] == {"finished": 6}
    assert 1 <= most_live <= 2 and submitted >= 1 and seen_tokens
    assert not list((tmp_path / "factory").glob("q-*/tokens/token-*"))  # cleaned up
    with db.session() as s:
        pilots = set(s.scalars(select(Job.pilot_id).join(Queue, Queue.id == Job.queue_id)
                               .where(Queue.name == "SITE_A_PROD")))
    assert all(f":{backend}:" in str(p) for p in pilots), pilots
    if backend == "slurm":  # the pilots ran as batch jobs, named for their queue
        names = subprocess.run(["squeue", "-h", "--states=all", "-o", "%j"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert "dawms-pilot-SITE_A_PROD" in names


def test_a_queue_with_bad_settings_gets_no_pilots_and_says_why(
    db: Database, server: str, tmp_path: Path, make_token: Callable[..., str],
) -> None:
    configure(db, tmp_path, "local", {"python": "/bin/sh"})
    client = FactoryClient(server, make_token("factory", "fac", QUEUES))
    report = Factory(client, server, QUEUES, tmp_path / "factory").run_once()
    client.close()
    assert all(q["submitted"] == 0 for q in report["queues"].values())
    assert "unknown keys ['python']" in report["queues"]["SITE_A_PROD"]["reason"]


def test_the_factory_needs_a_factory_token_for_its_queues(
    db: Database, server: str, tmp_path: Path, make_token: Callable[..., str],
) -> None:
    for token in (make_token("pilot", "p", QUEUES), make_token("factory", "f", ["SITE_A_PROD"]),
                  None):
        client = FactoryClient(server, token)
        with pytest.raises(ServerError, match="40[13]"):
            Factory(client, server, QUEUES, tmp_path / "factory").run_once()
        client.close()
    token_file = tmp_path / "factory.token"
    token_file.write_text(make_token("factory", "fac", QUEUES))
    token_file.chmod(0o600)
    code = main(["--server", server, "--queue", "SITE_A_PROD", "--queue", "SITE_C_PROD",
                 "--workdir", str(tmp_path / "f2"), "--token-file", str(token_file), "--once"])
    assert code == 0
