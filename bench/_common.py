"""What every benchmark shares: how it is run, where its database comes from, how
it reports.

Each benchmark runs as ``python -m bench.NAME [--json]`` from the repo root. It
reads the PostgreSQL server the way the tests do (``DAWMS_TEST_PG_URL``, from
``.services/env``), makes its own throwaway database there and drops it at the
end, logs to stderr, and prints its result last: with ``--json`` the last line
of stdout is one JSON object with a ``"backend"`` key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
log = logging.getLogger("bench")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--json``, ``--pg-url``)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on the last line of stdout")
    p.add_argument("--pg-url", default=os.environ.get("DAWMS_TEST_PG_URL", PG_ADMIN_URL),
                   help="PostgreSQL server to make the throwaway database on "
                        "($DAWMS_TEST_PG_URL)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request


@contextlib.contextmanager
def throwaway_pg(admin_url: str, tag: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one run; dropped afterwards, whatever happens."""
    name = f"dawms_bench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def catalog_url(backend: str, admin_url: str, tmp: Path, tag: str) -> Iterator[str]:
    """A fresh catalog on ``backend`` ("sqlite": a file under ``tmp``)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'{tag}.db'}"
    else:
        with throwaway_pg(admin_url, tag) as url:
            yield url


def emit(result: dict[str, Any], as_json: bool) -> None:
    """The result: one JSON line last on stdout, or ``key: value`` lines."""
    if "backend" not in result:
        raise ValueError("a benchmark result names its backend")
    if as_json:
        print(json.dumps(result, default=str), flush=True)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dawms(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m dawms ARGS`` in its own session, output to ``log_path``."""
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dawms", *args],
                                env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until ``GET url`` answers (or the process died, or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
