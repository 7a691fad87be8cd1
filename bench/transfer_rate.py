"""Benchmark: moving bytes, against ``cp`` in the same run.

Writes N files of S MiB of random bytes, then copies them three ways:

- ``cp``: the floor, one ``cp`` process for all files (no verification);
- ``replication``: the local DDM's transfer worker carrying one replication
  request for all files between two ``file://`` endpoints: it streams each file
  computing adler32, then reads the copy back to verify size and adler32, and
  records every replica in the catalog;
- ``stage_in``: the pilot's file mover getting every file into a work dir with
  size and adler32 verified while streaming.

Every copy is checked for identical bytes. The catalog is a SQLite file, or with
``--backend postgresql`` a throwaway PostgreSQL database.

    python -m bench.transfer_rate --json [--files 20] [--mib 50] [--backend postgresql]
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, File, StorageEndpoint
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.storage.movers import get_mover

from ._common import catalog_url, emit, log, parser, setup_logging


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                   help="where the catalog lives")
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--mib", type=int, default=50)
    args = p.parse_args()
    setup_logging(args.verbose)
    total = args.files * args.mib * 2**20
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp, \
            catalog_url(args.backend, args.pg_url, Path(tmp), "transfer") as db_url:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        paths = []
        for i in range(args.files):
            path = src / f"bench._{i:06d}"
            path.write_bytes(os.urandom(args.mib * 2**20))
            paths.append(path)

        log.info("wrote %d files of %d MiB", args.files, args.mib)
        t0 = time.perf_counter()
        (root / "cp").mkdir()
        subprocess.run(["cp", *map(str, paths), str(root / "cp")], check=True)
        cp_s = time.perf_counter() - t0

        db = Database(db_url)
        db.upgrade()
        ddm = LocalDDM()
        cfg = {"site": [{"name": "A"}, {"name": "B"}],
               "endpoint": [{"name": f"{n}_DISK", "site": n, "url": f"file://{root / n}"}
                            for n in ("A", "B")],
               "queue": [{"name": f"{n}_Q", "site": n, "read_endpoints": [f"{n}_DISK"],
                          "write_endpoint": f"{n}_DISK"} for n in ("A", "B")]}
        with db.session() as s:
            sync(s, validate(cfg), actor="bench", source="bench")
            eps = {e.name: e for e in s.scalars(select(StorageEndpoint))}
            files = ddm.upload(s, "bench:data", paths, eps["A_DISK"])
            req_id = ddm.request_replication(s, files, eps["B_DISK"], name="bench_dis").id
            expected = [(ddm.pfn(eps["A_DISK"], f.scope, f.name), f.name, f.size, f.adler32)
                        for f in files]
            b_urls = [ddm.pfn(eps["B_DISK"], "bench", p.name) for p in paths]
        t0 = time.perf_counter()
        while transfer.run_once(db) or _open(db, req_id):
            pass
        repl_s = time.perf_counter() - t0
        with db.session() as s:
            assert s.get(DataRequest, req_id).state == "done"
            assert s.get(DataRequest, req_id).bytes_done == total

        work = root / "work"
        work.mkdir()
        t0 = time.perf_counter()
        for url, name, size, adler in expected:
            get_mover(url).get(url, work / name, size=size, adler32=adler)
        stage_s = time.perf_counter() - t0

        for path, b_url in zip(paths, b_urls, strict=True):
            for copy in (root / "cp" / path.name, work / path.name,
                         Path(b_url.removeprefix("file://"))):
                assert filecmp.cmp(path, copy, shallow=False), copy
        with db.session() as s:
            assert s.scalar(select(File.id).where(File.name == paths[0].name))
        db.dispose()

    mb = total / 1e6
    emit({
        "backend": args.backend, "files": args.files, "mib_each": args.mib,
        "cp_mb_per_s": round(mb / cp_s), "replication_mb_per_s": round(mb / repl_s),
        "stage_in_mb_per_s": round(mb / stage_s),
        "replication_vs_cp": round(cp_s / repl_s, 2), "stage_in_vs_cp": round(cp_s / stage_s, 2),
    }, args.json)


def _open(db: Database, req_id: int) -> bool:
    with db.session() as s:
        return s.get(DataRequest, req_id).state == "requested"


if __name__ == "__main__":
    main()
