"""Benchmark: each mover against its backend's native tool, in and out, same run.

For every backend a file of ``--mib`` MiB (default 256) of random bytes is
copied in (storage -> local work dir, ``get``) and out (local -> storage,
``put``) by the dawms mover and by the native tool, alternating, best of
``--repeat`` (3) each:

- ``file``: ``cp --reflink=never`` (no checksum; the mover verifies adler32);
- ``root``: ``xrdcp --cksum adler32`` (the same end-to-end check as the mover)
  against a real XRootD server;
- ``s3`` (moto), ``gs`` (fake-gcs-server), ``davs`` (wsgidav over TLS): the
  fsspec backend's own ``put_file``/``get_file`` (no checksum).

The servers are the ones the test suite starts (tests/storage/servers.py).
Every copy is checked: the mover's adler32 against the source's, the native
tool's output by size and adler32. Logs go to stderr; with ``--json`` the
last line of stdout is::

    {"file": {"mover_MBps": x, "native_MBps": x, "ratio": x, "in": {...},
     "out": {...}}, "root": {...}, "s3": {...}, "gs": {...}, "davs": {...}}

where ``ratio`` is the smaller of the in and out ratios (mover / native) and
``mover_MBps``/``native_MBps`` are the rates in that direction (MB = 10^6 bytes).

    python -m bench.movers --json [--mib 256] [--repeat 3] [--backends file,root]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dawms.storage.checksum import file_adler32
from dawms.storage.movers import Mover, get_mover

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "storage"))
from servers import SERVERS, Server  # noqa: E402

log = logging.getLogger("bench.movers")
BACKENDS = ("file", "root", "s3", "gs", "davs")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Bench:
    """One backend: where its files live, and its native in/out copies."""

    def __init__(self, name: str, work: Path, server: Server | None) -> None:
        self.name = name
        self.work = work
        self.server = server
        if server is None:
            store = work / "storage"
            store.mkdir()
            self.base = store.as_uri()
            self.options: dict[str, Any] = {}
        else:
            self.base = f"{server.url_base}/bench"
            self.options = server.options
        self.mover: Mover = get_mover(self.base, **self.options)

    def native_in(self, url: str, dst: Path) -> None:
        if self.name == "file":
            subprocess.run(["cp", "--reflink=never", url.removeprefix("file://"), str(dst)],
                           check=True)
        elif self.name == "root":
            subprocess.run(["xrdcp", "-s", "-f", "--cksum", "adler32", url, str(dst)],
                           check=True)
        else:
            fs, path = self.mover.fs_for(url)  # type: ignore[attr-defined]
            fs.get_file(path, str(dst))

    def native_out(self, src: Path, url: str) -> None:
        if self.name == "file":
            subprocess.run(["cp", "--reflink=never", str(src), url.removeprefix("file://")],
                           check=True)
        elif self.name == "root":
            subprocess.run(["xrdcp", "-s", "-f", "--cksum", "adler32", str(src), url],
                           check=True)
        else:
            fs, path = self.mover.fs_for(url)  # type: ignore[attr-defined]
            fs.put_file(str(src), path)

    def stored(self, url: str) -> tuple[int, str]:
        """(size, adler32) of what the storage holds at ``url``, read back with the mover."""
        check = self.work / "check.bin"
        got = self.mover.get(url, check)
        check.unlink()
        return got.size, got.adler32


def make_copy(bench: Bench, who: str, direction: str, src: Path, local: Path, url_out: str,
              expected: tuple[int, str]) -> Callable[[], None]:
    """The copy to time: ``who`` (mover or native) moving the file ``direction``."""
    source = f"{bench.base}/source.bin"
    size, adler = expected

    def mover_in() -> None:
        got = bench.mover.get(source, local, size=size, adler32=adler)
        assert (got.size, got.adler32) == expected

    def mover_out() -> None:
        sent = bench.mover.put(src, url_out)
        assert (sent.size, sent.adler32) == expected

    return {("mover", "in"): mover_in,
            ("mover", "out"): mover_out,
            ("native", "in"): lambda: bench.native_in(source, local),
            ("native", "out"): lambda: bench.native_out(src, url_out)}[(who, direction)]


def run_backend(bench: Bench, src: Path, expected: tuple[int, str], repeat: int
                ) -> dict[str, Any]:
    size, adler = expected
    base = bench.base
    if bench.name == "file":
        Path(base.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    # the source of the "in" copies, put there once by the mover and checked
    bench.mover.put(src, f"{base}/source.bin")
    best: dict[str, float] = {}
    for round_no in range(1, repeat + 1):
        for direction in ("in", "out"):
            for who in ("native", "mover"):
                local = bench.work / f"{who}-in.bin"
                local.unlink(missing_ok=True)
                url_out = f"{base}/{who}-out.bin"
                copy = make_copy(bench, who, direction, src, local, url_out, expected)
                seconds = timed(copy)
                if direction == "in":
                    got = file_adler32(local)
                    local.unlink()
                else:
                    got = bench.stored(url_out)
                if got != expected:
                    raise SystemExit(f"{bench.name} {who} {direction}: copied {got}, "
                                     f"expected {expected}")
                key = f"{who}_{direction}"
                best[key] = min(best.get(key, float("inf")), seconds)
                log.info("%s round %d %s %s: %.1f MB/s", bench.name, round_no, who,
                         direction, size / seconds / 1e6)
    result: dict[str, Any] = {}
    for direction in ("in", "out"):
        mover = size / best[f"mover_{direction}"] / 1e6
        native = size / best[f"native_{direction}"] / 1e6
        result[direction] = {"mover_MBps": round(mover, 1), "native_MBps": round(native, 1),
                             "ratio": round(mover / native, 3)}
    worst = min(("in", "out"), key=lambda d: result[d]["ratio"])
    return {"mover_MBps": result[worst]["mover_MBps"],
            "native_MBps": result[worst]["native_MBps"],
            "ratio": result[worst]["ratio"], **result}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each copy; the best counts")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown or not names:
        p.error(f"unknown backends {sorted(unknown)}; choose from {','.join(BACKENDS)}")
    if not 1 <= args.mib <= 8192 or not 1 <= args.repeat <= 10:
        p.error("--mib must be 1..8192 and --repeat 1..10")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dawms-bench-movers-",
                                     dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        src = root / "source.bin"
        with open(src, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(2**20))
        expected = file_adler32(src)
        log.info("source: %d bytes, adler32 %s", *expected)
        for name in names:
            work = root / name
            work.mkdir()
            server = SERVERS[name]().start() if name in SERVERS else None
            try:
                results[name] = run_backend(Bench(name, work, server), src, expected,
                                            args.repeat)
            finally:
                if server is not None:
                    server.stop()
                shutil.rmtree(work, ignore_errors=True)
            log.info("%s: %s", name, results[name])
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{name:5} ratio {r['ratio']:.2f}  in {r['in']}  out {r['out']}")


if __name__ == "__main__":
    main()
