"""Factories for tests: site files, datasets with real bytes."""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import StorageEndpoint
from dawms.ddm_bridge.local import LocalDDM


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
