"""Shared pieces of the ops tests: a two-site world, the real app in process, a real pilot.

SITE_A takes the work; SITE_B's queue is ``brokeroff`` (its disk still serves reads),
so every job is brokered to SITE_A_PROD and a test knows which copy a pilot reads
first. The pilot is the real job runner (``dawms.pilot.job.run_job``) talking HTTP
to the real app through Starlette's in-process transport.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import File, Replica, StorageEndpoint
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM
from dawms.pilot.client import PilotClient
from dawms.pilot.job import JobResult, run_job
from dawms.scheduler.config import SchedulerConfig
from dawms.server.app import create_app
from dawms.storage.paths import lfn2pfn
from factories import site_config

PAYLOAD = (f"{sys.executable} -c \"import sys; "
           "open(sys.argv[1],'wb').write(b''.join(open(p,'rb').read() for p in sys.argv[2:]))\""
           " {output} {inputs}")


def two_sites(db: Database, root: Path) -> None:
    cfg = site_config(root, ["SITE_A", "SITE_B"])
    cfg["queue"][1]["status"] = "brokeroff"
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="ops")


def task_spec(did: str, **extra: Any) -> dict[str, Any]:
    return {"name": "ops", "transformation": PAYLOAD, "input_datasets": [did],
            "output_dataset": "ops:out.{task_id}", "split": {"files_per_job": 1},
            "retry": {"max_attempts": 3}, **extra}


def endpoint(db: Database, name: str) -> StorageEndpoint:
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == name))
        s.expunge(ep)
        return ep


def replica_path(db: Database, scope: str, name: str, endpoint_name: str) -> Path:
    ep = endpoint(db, endpoint_name)
    return Path(lfn2pfn(ep.url_prefix, scope, name).removeprefix("file://"))


def corrupt(path: Path) -> None:
    """Flip one byte in the middle: same size, other adler32."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def replica_state(db: Database, name: str, endpoint_name: str) -> str | None:
    with db.session() as s:
        return s.scalar(select(Replica.state).join(File, File.id == Replica.file_id)
                        .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                        .where(File.name == name, StorageEndpoint.name == endpoint_name))


@contextmanager
def app_client(db: Database, ddm: LocalDDM, headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(db, ddm, SchedulerConfig()),
                    raise_server_exceptions=False) as client:
        client.headers.update(headers)
        yield client


def run_pilot_once(api: TestClient, workdir: Path, queue: str = "SITE_A_PROD") -> JobResult | None:
    """Acquire one job of ``queue`` as a real pilot and run it to its final report."""
    transport = api._transport  # the app in process, over real HTTP semantics
    token = api.headers["Authorization"].removeprefix("Bearer ")
    with PilotClient("http://testserver", token=token, transport=transport,
                     give_up_after_s=10, backoff_initial_s=0.1) as client:
        acquired = client.acquire_jobs(queue, "ops-pilot")
        if not acquired.jobs:
            return None
        spec = acquired.jobs[0]
        return run_job(client, spec, workdir / f"job{spec['job_id']}", kill_grace_s=1)
