"""Benchmark: the real carousel against the local DDM's emulated tape, in simulated time.

A site with one tape endpoint (its disk buffer, a queue) holds ``--files`` files
on ``--tapes`` cartridges, written the way data taking writes them: several
datasets open at once, in chunks, so a dataset spreads over a few cartridges
and a cartridge holds pieces of several datasets. Tasks of three shares with
targets (and backlogs that are *not* in proportion to them) read those
datasets; the refiner (real) turns them into staging requests; then, tick by
tick of a simulated clock (nothing sleeps), the tape worker (real, bytes copied
and verified), the carousel (real), the broker (real) and one pilot's claim
and report (real) run until every request ended. The tape library's limit
(``staging_max_files`` x ``staging_max_percent``) is well below the backlog.

The same requests are then staged again with ``policy = fifo`` (oldest request
first, dataset order, no shares, no locality) for comparison.

    python -m bench.carousel --json     # JSON on the last line of stdout, logs on stderr

Measured: drive utilisation (busy = mounting or reading) over the staging time
(first release to last file read), quota violations (a cycle that found more
files or bytes staging than the limit, in the catalog or in the library),
the lower bound ``(tapes x mount_s + files x per_file_s) / drives``, when the
first job ran, and the share error: the largest gap between a share's target
and its fraction of the bytes staged until the first share ran out of work.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from dawms import carousel
from dawms.carousel.config import CarouselConfig, TapeLimits
from dawms.carousel.daemon import in_flight
from dawms.catalog.db import Database
from dawms.catalog.models import (
    Queue,
    StagingFile,
    StagingRequest,
    StorageEndpoint,
)
from dawms.catalog.site_config import sync, validate
from dawms.catalog.states import STAGING_OPEN, JobState
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.staging import run_tape
from dawms.ddm_bridge.local.tape import Ended, SimClock, TapeConfig, TapeLibrary
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.report import pilot_update
from dawms.scheduler.task import submit

log = logging.getLogger("bench.carousel")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
SHARES = {"reprocessing": 0.5, "mc": 0.3, "analysis": 0.2}
BACKLOG = {"reprocessing": 0.40, "mc": 0.35, "analysis": 0.25}  # of the files, not the targets
FILE_BYTES = 1024  # real bytes per file; the library's time model is per file


def _sites(root: Path, max_files: int, percent: int) -> dict:
    return {"site": [{"name": "TAPESITE"}],
            "endpoint": [{"name": "TS_DISK", "site": "TAPESITE", "kind": "disk",
                          "url": f"file://{root / 'disk'}"},
                         {"name": "TS_TAPE", "site": "TAPESITE", "kind": "tape",
                          "url": f"file://{root / 'tape'}", "staging_buffer": "TS_DISK",
                          "staging_max_files": max_files, "staging_max_percent": percent}],
            "queue": [{"name": "TS_PROD", "site": "TAPESITE", "read_endpoints": ["TS_DISK"],
                       "write_endpoint": "TS_DISK", "max_queued": 100000}]}


def _layout(n_files: int, rnd: random.Random) -> list[tuple[str, str, list[int]]]:
    """Datasets (share, name, file indices) and the order their files reach tape."""
    datasets: list[tuple[str, str, int]] = []
    for share, frac in BACKLOG.items():
        left, k = round(n_files * frac), 0
        while left > 0:
            size = min(left, rnd.randint(40, 160))
            datasets.append((share, f"{share}.ds{k:03d}", size))
            left -= size
            k += 1
    rnd.shuffle(datasets)
    return [(share, name, list(range(size))) for share, name, size in datasets]


def _write(db: Database, ddm: LocalDDM, root: Path, datasets: list, rnd: random.Random,
           streams: int = 3, chunk: int = 20) -> None:
    """Upload the files to tape in data-taking order: ``streams`` datasets open at once,
    written ``chunk`` files at a time."""
    src = root / "src"
    src.mkdir()
    pending = [(share, name, list(idx)) for share, name, idx in datasets]
    open_: list[tuple[str, str, list[int]]] = []
    with db.session() as s:
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "TS_TAPE"))
        while pending or open_:
            while len(open_) < streams and pending:
                open_.append(pending.pop(0))
            stream = open_[rnd.randrange(len(open_))]
            _share, name, idx = stream
            part, stream[2][:] = idx[:chunk], idx[chunk:]
            paths = []
            for i in part:
                p = src / f"{name}._{i:06d}"
                p.write_bytes(rnd.randbytes(FILE_BYTES))
                paths.append(p)
            ddm.upload(s, f"bench:{name}", paths, tape)
            if not stream[2]:
                open_.remove(stream)


def _submit(db: Database, ddm: LocalDDM, datasets: list, rnd: random.Random) -> None:
    order = list(datasets)
    rnd.shuffle(order)
    with db.session() as s:
        for k, (share, name, _) in enumerate(order):
            submit(s, {"name": f"bench.{name}", "transformation": "true {inputs}",
                              "input_datasets": [f"bench:{name}"], "share": share,
                              "priority": rnd.choice([400, 500, 600]),
                              "output_dataset": "bench:out.{task_id}",
                              "split": {"files_per_job": 2}}, ddm,
                          now=T0 + timedelta(seconds=k))


def run(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = Database(f"sqlite:///{root / 'catalog.db'}")
        db.upgrade()
        with db.session() as s:
            sync(s, validate(_sites(root, args.max_files, args.max_percent)), actor="bench",
                 source="bench")
        clock = SimClock()
        cfg = TapeConfig(drives=args.drives, mount_s=args.mount_s, per_file_s=args.per_file_s,
                         seek_s=args.seek_s, read_bytes_s=None,
                         cartridge_bytes=args.files // args.tapes * FILE_BYTES)
        ended: list[Ended] = []
        ddm = LocalDDM()
        ddm.library = TapeLibrary(cfg, clock=clock)
        datasets = _layout(args.files, rnd)
        t_setup = time.perf_counter()
        _write(db, ddm, root, datasets, rnd)
        _submit(db, ddm, datasets, rnd)
        refiner.run_once(db, ddm, T0, limit=10**6)
        log.info("%s: %d files on tape, %d tasks refined in %.1f s", policy, args.files,
                 len(datasets), time.perf_counter() - t_setup)
        ccfg = CarouselConfig(share_targets=SHARES, policy=policy)
        scfg = SchedulerConfig()
        with db.session() as s:
            tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "TS_TAPE"))
            tape_id, limits = tape.id, TapeLimits.of(tape)
            queue_id = s.scalar(select(Queue.id).where(Queue.name == "TS_PROD"))
            share_of = dict(s.execute(  # file id -> share (each file is in one dataset)
                select(StagingFile.file_id, StagingRequest.share)
                .join(StagingRequest, StagingRequest.id == StagingFile.request_id)).all())
            n_requests = s.scalar(select(func.count()).select_from(StagingRequest))
        violations, first_running, ticks = 0, None, 0
        t_wall = time.perf_counter()
        orig_advance = ddm.library.advance

        def advance() -> list[Ended]:
            out = orig_advance()
            ended.extend(out)
            return out

        ddm.library.advance = advance  # type: ignore[method-assign]
        while True:
            now = T0 + timedelta(seconds=clock.now())
            run_tape(db, ddm, now)
            carousel.run_once(db, ddm, now, ccfg)
            run_tape(db, ddm, now)
            with db.session() as s:
                n, b = in_flight(s, tape_id)
                still = s.scalar(select(func.count()).select_from(StagingRequest)
                                 .where(StagingRequest.state.in_(list(STAGING_OPEN))))
            if n > limits.staging_files or b > limits.staging_bytes \
                    or ddm.library.pending() > limits.staging_files:
                violations += 1
            if first_running is None and broker.run_once(db, ddm, scfg, now):
                with db.session() as s:
                    for job_id, attempt, token, _ in claim_jobs(s, queue_id, 1, "bench",
                                                                now=now):
                        pilot_update(s, ddm, {"job_id": job_id, "attempt": attempt,
                                              "lease_token": token,
                                              "state": JobState.RUNNING.value}, now=now)
                        first_running = clock.now()
            ticks += 1
            if not still:
                break
            clock.advance(args.tick_s)
        lib = ddm.library
        staging_s = max(e.at for e in ended)
        busy = sum(d.busy_s for d in lib.drives)
        tapes = len({c for c in lib.stats.mounts_by_cartridge})
        result = {"policy": policy, "staging_s": staging_s, "mounts": lib.stats.mounts,
                  "tapes": tapes, "seeks": lib.stats.seeks, "requests": n_requests,
                  "drive_utilisation": busy / (args.drives * staging_s),
                  "quota_violations": violations, "first_job_running_s": first_running,
                  "ticks": ticks, "wall_s": time.perf_counter() - t_wall,
                  "share_error": _share_error(ended, share_of)}
        log.info("%s: %s", policy, json.dumps(result))
        db.dispose()
        return result


def _share_error(ended: list[Ended], share_of: dict) -> float:
    """Largest |target - delivered fraction of staged bytes| while every share had work."""
    total_files: dict[str, int] = defaultdict(int)
    for share in share_of.values():
        total_files[share] += 1
    done: dict[str, int] = defaultdict(int)
    staged: dict[str, float] = defaultdict(float)
    wsum = sum(SHARES[s] for s in total_files)
    for e in sorted((e for e in ended if not e.error), key=lambda e: e.at):
        share = share_of[e.key[1]]  # a recall's key: (data request id, file id)
        done[share] += 1
        staged[share] += FILE_BYTES
        if done[share] == total_files[share]:  # the first share out of work: the window ends
            break
    total = sum(staged.values())
    return max(abs(staged[s] / total - SHARES[s] / wsum) for s in total_files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    p.add_argument("--drives", type=int, default=4)
    p.add_argument("--files", type=int, default=2400)
    p.add_argument("--tapes", type=int, default=24)
    p.add_argument("--mount-s", type=float, default=120.0)
    p.add_argument("--per-file-s", type=float, default=20.0)
    p.add_argument("--seek-s", type=float, default=30.0)
    p.add_argument("--max-files", type=int, default=1000, help="staging_max_files of the tape")
    p.add_argument("--max-percent", type=int, default=40, help="staging_max_percent")
    p.add_argument("--tick-s", type=float, default=60.0, help="simulated seconds per cycle")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dawms").setLevel(logging.WARNING)
    fair = run("fair", args)
    fifo = run("fifo", args)
    lower = (fair["tapes"] * args.mount_s + args.files * args.per_file_s) / args.drives
    out = {"drives": args.drives, "files": args.files, "tapes": fair["tapes"],
           "mount_s": args.mount_s, "per_file_s": args.per_file_s,
           "drive_utilisation": round(fair["drive_utilisation"], 4),
           "quota_violations": fair["quota_violations"] + fifo["quota_violations"],
           "staging_s": fair["staging_s"], "lower_bound_s": lower,
           "first_job_running_s": fair["first_job_running_s"],
           "fifo_staging_s": fifo["staging_s"], "share_error": round(fair["share_error"], 4)}
    log.info("fair: %d mounts, fifo: %d mounts; staging %.0f s vs lower bound %.0f s (x%.3f)",
             fair["mounts"], fifo["mounts"], fair["staging_s"], lower, fair["staging_s"] / lower)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
