"""``dawms demo``: the whole data-aware flow on one machine, on embedded defaults.

In a fresh directory: three sites with ``file://`` storage, two input datasets of
generated event files spread over two of them, one task whose payload reads
every input event and writes a summary, a real server process (with the
scheduler's daemons) and two pilot processes per site talking to it over HTTP.
Shows live progress, then a summary; exits 0 only when every job finished and
every output is registered with size and adler32 that match the bytes on disk.
Auth stays on: the demo issues its own tokens in its catalog (a production token
for itself, written to ``<dir>/token`` for the CLI, and a factory token with
which it obtains each queue's pilot token from the server, as a factory does).
Data goes through the configured DDM backend (``DAWMS_DDM``, ``local`` unless set)
and every URL comes from its ``pfn()``: the demo knows no backend by name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

N_SITES = 3
FILES_PER_DATASET = 40
FILES_PER_JOB = 2
PILOTS_PER_SITE = 2
TIMEOUT_S = 600

PAYLOAD = '''"""Demo payload: read every input event file, write one summary per job."""
import json, sys, zlib
out, inputs = sys.argv[1], sys.argv[2:]
events, energy, checks = 0, 0.0, {}
for path in inputs:
    data = open(path, "rb").read()
    checks[path] = format(zlib.adler32(data) & 0xffffffff, "08x")
    for line in data.decode().splitlines()[1:]:
        events += 1
        energy += float(line.split(",")[1])
json.dump({"inputs": checks, "events": events, "sum_energy": round(energy, 3)},
          open(out, "w"), indent=1)
print(f"{events} events from {len(inputs)} files")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sites_toml(root: Path) -> str:
    parts = []
    for i in range(N_SITES):
        name = f"SITE_{chr(65 + i)}"
        parts.append(f'''
[[site]]
name = "{name}"

[[endpoint]]
name = "{name}_DISK"
site = "{name}"
kind = "disk"
url = "file://{root / 'storage' / name}"

[[queue]]
name = "{name}_PROD"
site = "{name}"
cores = 4
memory_mb = 8000
read_endpoints = ["{name}_DISK"]
write_endpoint = "{name}_DISK"
movers = {{ read = ["file"], write = ["file"] }}
''')
    return "".join(parts)


def _event_file(path: Path, rnd: random.Random) -> None:
    n = rnd.randint(2000, 6000)
    lines = ["event,energy"] + [f"{i},{rnd.uniform(1, 500):.3f}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def _setup(root: Path, say: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Sites, datasets and the task spec, straight into the embedded catalog."""
    from sqlalchemy import select

    from dawms.catalog.db import Database
    from dawms.catalog.models import StorageEndpoint
    from dawms.catalog.site_config import load, sync
    from dawms.ddm_bridge import get_ddm

    from .settings import Settings

    (root / "sites.toml").write_text(_sites_toml(root))
    db = Database(os.environ["DAWMS_DB_URL"])
    db.upgrade()
    with db.session() as s:
        changes = sync(s, load(root / "sites.toml"), actor="demo", source="sites.toml")
    say(f"sites: {len(changes)} changes applied from {root / 'sites.toml'}")
    rnd = random.Random(42)
    ddm, n_files = get_ddm(Settings.from_env().ddm), 0
    for letter, site in (("A", "SITE_A_DISK"), ("B", "SITE_B_DISK")):
        src = root / "generated" / letter
        src.mkdir(parents=True)
        paths = []
        for i in range(FILES_PER_DATASET):
            p = src / f"raw.{letter}._{i:06d}.csv"
            _event_file(p, rnd)
            paths.append(p)
        with db.session() as s:
            ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == site))
            n_files += len(ddm.upload(s, f"demo:raw.{letter}", paths, ep))
        say(f"dataset demo:raw.{letter}: {len(paths)} files at {site}")
    db.dispose()
    (root / "payload.py").write_text(PAYLOAD)
    spec = {
        "name": "demo.reco",
        "transformation": f"{sys.executable} {root / 'payload.py'} {{output}} {{inputs}}",
        "input_datasets": ["demo:raw.A", "demo:raw.B"],
        "output_dataset": "demo:reco.{task_id}",
        "split": {"files_per_job": FILES_PER_JOB},
        "resources": {"cores": 1, "memory_mb": 1000, "walltime_s": 600},
        "retry": {"max_attempts": 3},
        "priority": 900,
    }
    return spec, n_files


def _tokens(root: Path, queues: list[str]) -> tuple[str, str]:
    """A production token (also written to ``root/token``, mode 600) and a factory token."""
    from dawms.catalog.db import Database
    from dawms.server.tokens import issue

    db = Database(os.environ["DAWMS_DB_URL"])
    user, _ = issue(db, role="production", subject="demo", lifetime_s=2 * 3600)
    factory, _ = issue(db, role="factory", subject="demo-factory", queues=queues,
                       lifetime_s=2 * 3600)
    db.dispose()
    path = root / "token"
    path.touch(mode=0o600)
    path.write_text(user + "\n")
    return user, factory


def _wait_ping(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    from .client import Client, DawmsError

    deadline = time.monotonic() + timeout
    with Client(url, timeout=2) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                c.healthz()
                return
            except DawmsError:
                time.sleep(0.2)
    raise RuntimeError(f"the server at {url} did not answer within {timeout} s")


def _progress_table(summary: dict[str, Any], elapsed: float):  # type: ignore[no-untyped-def]
    """Jobs by site and state, only the states some job is in, so it fits 80 columns
    (``commands._common.make_table`` folds instead of cutting)."""
    from rich.console import Group
    from rich.text import Text

    from .commands._common import make_table

    states = ["defined", "waiting", "assigned", "activated", "sent", "starting", "running",
              "holding", "transferring", "finished", "failed"]
    by_site = summary["jobs_by_site"]
    shown = [st for st in states if any(c.get(st) for c in by_site.values())]
    rows = [{"site": site, **counts} for site, counts in sorted(by_site.items())]
    table = make_table(f"dawms demo: jobs by site and state ({elapsed:.0f} s)", rows,
                       ["site", *shown])
    caption = Text(f"tasks {summary['tasks']} | replicated {summary['files_replicated']} "
                   f"files / {summary['bytes_replicated']} B | outputs registered "
                   f"{summary['outputs_registered']}")
    return Group(table, caption)


def _verify_outputs(db_url: str) -> tuple[int, list[str]]:
    """Every output of a finished job: registered, and its bytes match size and adler32."""
    from sqlalchemy import select

    from dawms.catalog.db import Database
    from dawms.catalog.models import File, Job, JobFile, Replica, StorageEndpoint
    from dawms.ddm_bridge import get_ddm
    from dawms.storage.checksum import url_checksum

    from .settings import Settings

    ddm = get_ddm(Settings.from_env().ddm)
    db = Database(db_url)
    problems, ok = [], 0
    with db.session() as s:
        rows = s.execute(select(JobFile, File, StorageEndpoint)
                         .join(Job, Job.id == JobFile.job_id)
                         .outerjoin(File, File.id == JobFile.file_id)
                         .outerjoin(Replica, Replica.file_id == File.id)
                         .outerjoin(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                         .where(Job.state == "finished", JobFile.type == "out")).all()
        for jf, f, endpoint in rows:
            if f is None or endpoint is None:
                problems.append(f"{jf.lfn}: not registered")
                continue
            size, adler = url_checksum(ddm.pfn(endpoint, f.scope, f.name))
            if (size, adler) != (f.size, f.adler32) or not f.adler32:
                problems.append(f"{jf.lfn}: disk has {size} {adler}, catalog {f.size} "
                                f"{f.adler32}")
            else:
                ok += 1
    db.dispose()
    return ok, problems


def _serve_until_interrupted(console: Any, url: str, root: Path,
                             server: subprocess.Popen[bytes]) -> None:
    """``--serve``: the jobs are done; the server and its monitor stay up until Ctrl-C."""
    console.print(f"[bold]serving[/] {url}/monitor/ until interrupted (Ctrl-C); log in "
                  f"with the token in {root / 'token'}")
    try:
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping the server")


def run_demo(json_out: bool = False, keep: bool = False, workdir: str | None = None,
             serve: bool = False, port: int | None = None) -> int:
    from rich.console import Console
    from rich.live import Live

    from dawms.pilot.factory.local import LocalFactory

    from .client import Client

    console = Console(stderr=json_out)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dawms-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    keep = keep or serve
    os.environ.update({
        "DAWMS_HOME": str(root), "DAWMS_DB_URL": f"sqlite:///{root / 'dawms.db'}",
        "DAWMS_SERVER": url, "DAWMS_HEARTBEAT_S": "5", "DAWMS_INTERVAL_S": "2",
        "DAWMS_TRANSFER_INTERVAL_S": "1", "DAWMS_SENT_TIMEOUT_S": "120",
        "DAWMS_HEARTBEAT_TIMEOUT_S": "120",
    })
    t0 = time.monotonic()
    console.print(f"[bold]dawms demo[/] in {root}")
    spec, n_inputs = _setup(root, console.print)
    queues = [f"SITE_{chr(65 + i)}_PROD" for i in range(N_SITES)]
    user_token, factory_token = _tokens(root, queues)
    server_log = open(root / "server.log", "wb")  # noqa: SIM115 (closed in the finally)
    server = subprocess.Popen([sys.executable, "-m", "dawms", "server", "--port", str(port)],
                              stdout=server_log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    factory, handles = LocalFactory(), []
    summary: dict[str, Any] = {}
    outcome: bool | None = None
    try:
        _wait_ping(url, server)
        console.print(f"server: {url} (log {root / 'server.log'})")
        console.print(f"monitor: {url}/monitor/ (log in with the token in {root / 'token'})")
        console.print(f"tokens: issued; for the CLI: export DAWMS_TOKEN=$(cat {root}/token)")
        client = Client(url, token=user_token)
        task_id = client.submit_task(spec)["task_id"]
        console.print(f"task {task_id}: {n_inputs} input files, {FILES_PER_JOB} per job")
        with Client(url, token=factory_token) as as_factory:
            for queue in queues:
                pilot_token = as_factory.pilot_token([queue], lifetime_s=3600)["token"]
                handles += factory.submit(url, queue, PILOTS_PER_SITE, root / "pilots" / queue,
                                          token=pilot_token, idle_timeout=15,
                                          poll_interval=0.5)
        console.print(f"pilots: {len(handles)} processes, {PILOTS_PER_SITE} per site")
        with Live(console=console, refresh_per_second=4) as live:
            while time.monotonic() - t0 < TIMEOUT_S:
                summary = client.summary(task_id)
                live.update(_progress_table(summary, time.monotonic() - t0))
                if set(summary["tasks"]) & {"done", "finished", "failed", "broken", "aborted"}:
                    break
                time.sleep(0.5)
        client.close()
        for h in handles:
            factory.cancel(h)
        handles = []
        if serve:  # the result first, then the server stays up for the monitor
            outcome = _outcome(console, summary, t0, root, json_out)
            _serve_until_interrupted(console, url, root, server)
    finally:
        for h in handles:
            factory.cancel(h)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
    if outcome is None:
        outcome = _outcome(console, summary, t0, root, json_out)
    if not keep and outcome and not workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if outcome else 1


def _outcome(console: Any, summary: dict[str, Any], t0: float, root: Path,
             json_out: bool) -> bool:
    """Check every output against the bytes on disk, print the result; True if all good."""
    wall = time.monotonic() - t0
    verified, problems = _verify_outputs(os.environ["DAWMS_DB_URL"])
    jobs = summary.get("jobs", {})
    expected = jobs.get("finished", 0)
    result = {"jobs": jobs, "tasks": summary.get("tasks", {}),
              "files_replicated": summary.get("files_replicated", 0),
              "bytes_replicated": summary.get("bytes_replicated", 0),
              "outputs_registered": summary.get("outputs_registered", 0),
              "outputs_verified": verified, "wall_s": round(wall, 1)}
    good = (summary.get("tasks") == {"done": 1} and set(jobs) == {"finished"}
            and expected >= 20 and result["outputs_registered"] == expected == verified
            and not problems)
    _print_summary(console, result, summary, problems, good, root)
    if json_out:
        print(json.dumps(result), flush=True)
    return good


def _print_summary(console: Any, result: dict[str, Any], summary: dict[str, Any],
                   problems: list[str], good: bool, root: Path) -> None:
    from rich.table import Table

    table = Table(title="dawms demo: result")
    table.add_column("site")
    table.add_column("jobs by state")
    for site, counts in sorted(summary.get("jobs_by_site", {}).items()):
        table.add_row(site, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(table)
    console.print(f"tasks {result['tasks']} | replicated {result['files_replicated']} files, "
                  f"{result['bytes_replicated']} bytes | outputs registered "
                  f"{result['outputs_registered']}, verified on disk "
                  f"{result['outputs_verified']} | wall {result['wall_s']} s")
    for p in problems[:20]:
        console.print(f"[red]problem:[/] {p}")
    if good:
        console.print("[green bold]every job finished; every output registered and verified[/]")
    else:
        console.print(f"[red bold]the demo did not complete; logs are in {root}[/]")
