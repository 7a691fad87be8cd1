"""Factories for tests: site files, datasets with real bytes, pilots' claims and reports."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Queue, StorageEndpoint
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.report import pilot_update
from dawms.storage.checksum import bytes_adler32


def site_config(root: Path, names: list[str], **queue: object) -> dict:
    """A site file as dict: per site one disk endpoint under ``root`` and one queue."""
    cfg: dict = {"site": [], "endpoint": [], "queue": []}
    for n in names:
        cfg["site"].append({"name": n})
        cfg["endpoint"].append({"name": f"{n}_DISK", "site": n, "kind": "disk",
                                "url": f"file://{root / n / 'disk'}"})
        cfg["queue"].append({"name": f"{n}_PROD", "site": n, "read_endpoints": [f"{n}_DISK"],
                             "write_endpoint": f"{n}_DISK", **queue})
    return cfg


def make_dataset(db: Database, ddm: LocalDDM, did: str, endpoint: str, n: int,
                 tmp: Path, size: int = 2048, seed: int = 0) -> list[Path]:
    """Write ``n`` random files and upload them to ``endpoint`` as dataset ``did``."""
    rnd = random.Random(seed)
    src = tmp / "src" / did.replace(":", "_")
    src.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = src / f"{did.split(':')[1]}._{i:06d}"
        p.write_bytes(rnd.randbytes(size))
        paths.append(p)
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == endpoint))
        ddm.upload(s, did, paths, ep)
    return paths


def claim(db: Database, now: datetime, pilot: str = "pilot-1") -> dict[int, tuple[dict, dict]]:
    """Claim every activated job of SITE_A_PROD: job id -> (report fence, spec)."""
    with db.session() as s:
        qid = s.scalar(select(Queue.id).where(Queue.name == "SITE_A_PROD"))
        rows = claim_jobs(s, qid, 100, pilot, now=now)
    return {j: ({"job_id": j, "attempt": a, "lease_token": t}, spec) for j, a, t, spec in rows}


def report(db: Database, ddm: LocalDDM, fence: dict, state: str, now: datetime,
           **extra: object) -> dict:
    with db.session() as s:
        return pilot_update(s, ddm, {**fence, "state": state, **extra}, now=now)


def write_outputs(spec: dict) -> list[dict]:
    out = []
    for entry in [*spec["outputs"], spec["log"]]:
        path = Path(entry["url"].removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        data = entry["lfn"].encode() * 7
        path.write_bytes(data)
        out.append({"lfn": entry["lfn"], "size": len(data), "adler32": bytes_adler32(data)})
    return out


def finish(db: Database, ddm: LocalDDM, fence: dict, spec: dict, now: datetime) -> None:
    report(db, ddm, fence, "finished", now, exit_code=0, outputs=write_outputs(spec))
