"""The ``dawms`` command: run the server and scheduler, configure sites, submit and
watch tasks and jobs, issue tokens, and run the demo. Tables for humans,
``--json`` for scripts. Commands that call the server send ``$DAWMS_TOKEN`` (or
``--token``); ``dawms token ...`` works on the catalog directly, like
``dawms sites sync``.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import logging
import os
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

from .settings import Settings


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=None, default=str))


def _table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
    Console().print(table)


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .client import Client

    return Client(args.server, token=args.token or os.environ.get("DAWMS_TOKEN") or None)


# ------------------------------------------------------------------ commands
def cmd_db_upgrade(args: argparse.Namespace, st: Settings) -> int:
    from dawms.catalog.db import Database

    db = Database(st.db_url)
    db.upgrade()
    print(f"catalog at {st.db_url} is up to date")
    return 0


def is_loopback(host: str) -> bool:
    """True only if every address ``host`` names is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback
                               for i in infos)


def cmd_server(args: argparse.Namespace, st: Settings) -> int:
    import uvicorn
    from pydantic import ValidationError

    from dawms.catalog.db import Database
    from dawms.ddm_bridge import get_ddm
    from dawms.scheduler.config import SchedulerConfig
    from dawms.server.app import create_app
    from dawms.server.settings import ServerSettings

    try:
        server_settings = ServerSettings()
    except ValidationError as exc:
        print(f"error: server settings: {exc}", file=sys.stderr)
        return 2
    if server_settings.auth == "off" and not is_loopback(args.host):
        print(f"error: DAWMS_AUTH=off is for loopback binds only; refusing to serve "
              f"{args.host} without authentication", file=sys.stderr)
        return 2
    db = Database(st.db_url)
    db.upgrade()
    app = create_app(db, get_ddm(st.ddm), SchedulerConfig.from_env(),
                     with_scheduler=args.scheduler, settings=server_settings)
    try:  # with --no-scheduler on PostgreSQL, commits still NOTIFY schedulers elsewhere
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    access_log=False)
    finally:
        db.dispose()
    return 0


def cmd_scheduler(args: argparse.Namespace, st: Settings) -> int:
    import signal
    import threading

    from dawms.catalog.db import Database
    from dawms.ddm_bridge import get_ddm
    from dawms.scheduler.config import SchedulerConfig
    from dawms.scheduler.runner import Scheduler

    db = Database(st.db_url)
    db.upgrade()
    sched = Scheduler(db, get_ddm(st.ddm), SchedulerConfig.from_env())
    if args.once:
        sched.run_all_once()
        db.dispose()
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a clean stop gives the leases back
    sched.start()  # hears the commits of every process on the catalog (LISTEN/NOTIFY on PG)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sched.stop()
        db.dispose()
    return 0


def cmd_sites_sync(args: argparse.Namespace, st: Settings) -> int:
    from dawms.catalog.db import Database
    from dawms.catalog.site_config import ConfigError, load, sync

    try:
        config = load(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = Database(st.db_url)
    db.upgrade()

    class _DryRun(Exception):
        pass

    changes = []
    try:
        with db.session() as s:
            changes = sync(s, config, actor=getpass.getuser(), source=str(args.file))
            if args.dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except ConfigError as exc:
        print(f"error: {exc}; nothing was applied", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"applied": not args.dry_run, "changes": [str(c) for c in changes]})
    else:
        for c in changes:
            print(c)
        verb = "would apply" if args.dry_run else "applied"
        print(f"{verb} {len(changes)} change(s)" if changes else "no changes")
    return 0


def cmd_data_upload(args: argparse.Namespace, st: Settings) -> int:
    from sqlalchemy import select

    from dawms.catalog.db import Database
    from dawms.catalog.models import StorageEndpoint
    from dawms.catalog.names import split_did
    from dawms.ddm_bridge import get_ddm
    from dawms.ddm_bridge.abc import DDMError

    try:
        split_did(args.dataset)
        ddm = get_ddm(st.ddm)  # the configured backend (DAWMS_DDM), never a fixed one
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = Database(st.db_url)
    db.upgrade()
    try:
        with db.session() as s:
            ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == args.endpoint))
            if ep is None:
                print(f"error: no endpoint {args.endpoint}", file=sys.stderr)
                return 2
            files = ddm.upload(s, args.dataset, args.files, ep)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; nothing was registered", file=sys.stderr)
        return 2
    except DDMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(files)} files in {args.dataset} at {args.endpoint}")
    return 0


def _load_spec(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else tomllib.loads(text)


def cmd_task_submit(args: argparse.Namespace, st: Settings) -> int:
    try:
        spec = _load_spec(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    with _client(args) as c:
        data = c.submit_task(spec)
    _print_json(data) if args.json else print(f"task {data['task_id']} {data['state']}")
    return 0


def cmd_task_list(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        tasks = c.tasks(state=args.state, limit=args.limit)
    if args.json:
        _print_json(tasks)
        return 0
    rows = [{**t, "jobs": " ".join(f"{k}:{v}" for k, v in sorted(t["jobs"].items()))}
            for t in tasks]
    _table("tasks", rows, ["id", "name", "owner", "state", "priority", "jobs"])
    return 0


def cmd_task_show(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        t = c.task(args.id)
    if args.json:
        _print_json(t)
        return 0
    for key in ("id", "name", "owner", "state", "priority", "input_datasets", "output_dataset",
                "split", "resources", "jobs", "error"):
        print(f"{key:>15}: {t[key]}")
    _table("history", t["history"], ["at", "from", "to", "actor", "reason"])
    return 0


def cmd_job_list(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        jobs = c.jobs(task_id=args.task, state=args.state, limit=args.limit)
    if args.json:
        _print_json(jobs)
        return 0
    _table("jobs", jobs, ["id", "task_id", "job_index", "attempt", "state", "queue",
                          "error_category"])
    return 0


def cmd_job_show(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        j = c.job(args.id)
    if args.json:
        _print_json(j)
        return 0
    for key in ("id", "task_id", "job_index", "attempt", "state", "queue", "pilot_id",
                "exit_code", "error_category", "error_diag", "metrics"):
        print(f"{key:>15}: {j[key]}")
    _table("files", j["files"], ["type", "lfn", "dataset", "size", "adler32", "registered"])
    _table("history", j["history"], ["at", "from", "to", "attempt", "actor", "reason"])
    return 0


def cmd_job_kill(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        result = c.kill_jobs(args.ids, args.reason)
    if args.json:
        _print_json(result)
    else:
        for job_id, what in result.items():
            print(f"job {job_id}: {what}")
    return 0 if all(v in ("cancelled", "tobekilled") for v in result.values()) else 1


def cmd_task_kill(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        result = c.kill_task(args.id, args.reason)
    if args.json:
        _print_json(result)
    else:
        print(f"task {args.id} aborted; jobs: " + (", ".join(
            f"{k} {v}" for k, v in result["jobs"].items()) or "none open"))
    return 0


def cmd_reassign(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        result = (c.reassign_task(args.id, args.queue) if args.what == "task"
                  else c.reassign_jobs(args.ids, args.queue))
    if args.json:
        _print_json(result)
    else:
        for job_id, what in result.items():
            print(f"job {job_id}: {what}")
    return 0


def cmd_staging_list(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        reqs = c.staging(task_id=args.task, state=args.state, limit=args.limit)
    if args.json:
        _print_json(reqs)
        return 0
    rows = [{**r, "files": f"{r['files_staged']}/{r['files_total']}",
             "progress": f"{100 * r['progress']:.1f}%",
             "GB": f"{r['bytes_staged'] / 1e9:.2f}/{r['bytes_total'] / 1e9:.2f}"} for r in reqs]
    _table("staging requests", rows, ["id", "task_id", "dataset", "source", "destination",
                                      "state", "share", "priority", "files", "files_staging",
                                      "files_lost", "GB", "progress"])
    return 0


def cmd_staging_change(args: argparse.Namespace, st: Settings) -> int:
    with _client(args) as c:
        result = (c.cancel_staging(args.ids, args.reason) if args.what == "cancel"
                  else c.staging_priority(args.ids, args.priority))
    if args.json:
        _print_json(result)
    else:
        for rid, what in result.items():
            print(f"staging request {rid}: {what}")
    good = ("cancelled",) if args.what == "cancel" else ()
    return 0 if all(v in good or " -> " in v for v in result.values()) else 1


def _token_db(st: Settings):  # type: ignore[no-untyped-def]
    from dawms.catalog.db import Database

    db = Database(st.db_url)
    db.upgrade()
    return db


def cmd_token_issue(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server.tokens import TokenRequestError, issue, parse_duration

    try:
        lifetime = parse_duration(args.expires)
        db = _token_db(st)
        token, claims = issue(db, role=args.role, subject=args.subject,
                              queues=args.queue or [], lifetime_s=lifetime)
    except TokenRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"token": token, **claims})
    else:
        print(token)
        print(f"jti {claims['jti']} role {claims['role']} subject {claims['sub']} expires "
              f"{claims['exp']}", file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server.tokens import TokenRequestError, revoke

    try:
        new = revoke(_token_db(st), args.jti, actor=getpass.getuser(), reason=args.reason)
    except TokenRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"token {args.jti} revoked" if new else f"token {args.jti} was revoked already")
    return 0


def cmd_token_rotate(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    kid = keys.rotate(_token_db(st))
    print(f"new signing key {kid}; older keys verify until `dawms token retire-key KID`")
    return 0


def cmd_token_retire(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    if not keys.retire(_token_db(st), args.kid):
        print(f"error: no unretired key {args.kid[:64]!r}", file=sys.stderr)
        return 2
    print(f"key {args.kid} retired: tokens it signed are refused")
    return 0


def cmd_token_keys(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    rows = keys.list_keys(_token_db(st))
    if args.json:
        _print_json(rows)
    else:
        _table("signing keys", rows, ["kid", "algorithm", "created_at", "retired_at"])
    return 0


def cmd_token_hash_secret(args: argparse.Namespace, st: Settings) -> int:
    """Read a secret from stdin (never the command line) and print its scrypt hash."""
    from dawms.server.auth import hash_secret

    secret = (getpass.getpass("secret: ") if sys.stdin.isatty()
              else sys.stdin.readline()).rstrip("\n")
    if not 12 <= len(secret) <= 1024:
        print("error: a secret must be 12 to 1024 characters", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


def cmd_demo(args: argparse.Namespace, st: Settings) -> int:
    from .demo import run_demo

    return run_demo(json_out=args.json, keep=args.keep, workdir=args.workdir)


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    st_server = Settings.from_env().server
    p = argparse.ArgumentParser(prog="dawms", description="data-aware workload management")
    p.add_argument("--server", default=st_server, help="dawms server URL ($DAWMS_SERVER)")
    p.add_argument("--token", default=None,
                   help="bearer token for the server (default $DAWMS_TOKEN)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    db = sub.add_parser("db", help="the catalog database").add_subparsers(dest="sub",
                                                                          required=True)
    db.add_parser("upgrade", help="create or migrate the schema").set_defaults(fn=cmd_db_upgrade)

    s = sub.add_parser("server", help="run the HTTP server (and, by default, the scheduler)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--no-scheduler", dest="scheduler", action="store_false",
                   help="do not run the scheduler's daemons in this process")
    s.add_argument("--log-level", default="warning")
    s.set_defaults(fn=cmd_server)

    sc = sub.add_parser("scheduler", help="run the scheduler's daemons")
    sc.add_argument("--once", action="store_true", help="run every daemon once and exit")
    sc.set_defaults(fn=cmd_scheduler)

    sites = sub.add_parser("sites", help="sites, queues, endpoints").add_subparsers(
        dest="sub", required=True)
    sy = sites.add_parser("sync", help="apply a site TOML file (shows the diff)")
    sy.add_argument("file")
    sy.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    sy.add_argument("--json", action="store_true")
    sy.set_defaults(fn=cmd_sites_sync)

    data = sub.add_parser("data", help="data in the configured DDM (DAWMS_DDM)")
    data = data.add_subparsers(dest="sub", required=True)
    up = data.add_parser("upload", help="copy files to an endpoint and register them")
    up.add_argument("dataset", help="scope:name")
    up.add_argument("files", nargs="+")
    up.add_argument("--endpoint", required=True)
    up.set_defaults(fn=cmd_data_upload)

    task = sub.add_parser("task", help="tasks").add_subparsers(dest="sub", required=True)
    ts = task.add_parser("submit", help="submit a task file (TOML or JSON)")
    ts.add_argument("file")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(fn=cmd_task_submit)
    tl = task.add_parser("list")
    tl.add_argument("--state")
    tl.add_argument("--limit", type=int, default=100)
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(fn=cmd_task_list)
    tsh = task.add_parser("show")
    tsh.add_argument("id", type=int)
    tsh.add_argument("--json", action="store_true")
    tsh.set_defaults(fn=cmd_task_show)

    tk = task.add_parser("kill", help="abort a task and kill its jobs")
    tk.add_argument("id", type=int)
    tk.add_argument("--reason", default="")
    tk.add_argument("--json", action="store_true")
    tk.set_defaults(fn=cmd_task_kill)

    tr = task.add_parser("reassign", help="rebroker the task's queued jobs")
    tr.add_argument("id", type=int)
    tr.add_argument("--queue", help="send them here (default: anywhere but where they are)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(fn=cmd_reassign, what="task")

    job = sub.add_parser("job", help="jobs").add_subparsers(dest="sub", required=True)
    jr = job.add_parser("reassign", help="rebroker queued jobs")
    jr.add_argument("ids", type=int, nargs="+")
    jr.add_argument("--queue", help="send them here (default: anywhere but where they are)")
    jr.add_argument("--json", action="store_true")
    jr.set_defaults(fn=cmd_reassign, what="job")
    jk = job.add_parser("kill", help="kill jobs (queued: cancelled; running: their pilot "
                                     "is told)")
    jk.add_argument("ids", type=int, nargs="+")
    jk.add_argument("--reason", default="")
    jk.add_argument("--json", action="store_true")
    jk.set_defaults(fn=cmd_job_kill)
    jl = job.add_parser("list")
    jl.add_argument("--task", type=int)
    jl.add_argument("--state")
    jl.add_argument("--limit", type=int, default=1000)
    jl.add_argument("--json", action="store_true")
    jl.set_defaults(fn=cmd_job_list)
    js = job.add_parser("show")
    js.add_argument("id", type=int)
    js.add_argument("--json", action="store_true")
    js.set_defaults(fn=cmd_job_show)

    stg = sub.add_parser("staging", help="the tape carousel's staging requests").add_subparsers(
        dest="sub", required=True)
    sl = stg.add_parser("list", help="staging requests with their progress")
    sl.add_argument("--task", type=int)
    sl.add_argument("--state", choices=["queued", "staging", "done", "failed", "cancelled"])
    sl.add_argument("--limit", type=int, default=100)
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(fn=cmd_staging_list)
    sc_ = stg.add_parser("cancel", help="withdraw staging requests")
    sc_.add_argument("ids", type=int, nargs="+")
    sc_.add_argument("--reason", default="")
    sc_.add_argument("--json", action="store_true")
    sc_.set_defaults(fn=cmd_staging_change, what="cancel")
    sp = stg.add_parser("priority", help="change the priority of staging requests")
    sp.add_argument("priority", type=int)
    sp.add_argument("ids", type=int, nargs="+")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_staging_change, what="priority")

    tok = sub.add_parser("token", help="tokens and signing keys (works on the catalog)"
                         ).add_subparsers(dest="sub", required=True)
    ti = tok.add_parser("issue", help="print a new signed token")
    ti.add_argument("--role", required=True,
                    help="admin, production, analyst, reader, pilot, factory or ddm")
    ti.add_argument("--subject", required=True, help="who the token speaks for")
    ti.add_argument("--queue", action="append",
                    help="a queue a pilot or factory token is bound to (repeat)")
    ti.add_argument("--expires", default="12h", help="lifetime: 30m, 12h, 7d (default 12h)")
    ti.add_argument("--json", action="store_true", help="the token and its claims as JSON")
    ti.set_defaults(fn=cmd_token_issue)
    tv = tok.add_parser("revoke", help="refuse a token from now on, by its jti")
    tv.add_argument("jti")
    tv.add_argument("--reason", default="")
    tv.set_defaults(fn=cmd_token_revoke)
    tok.add_parser("rotate-key", help="make a new signing key (old ones still verify)"
                   ).set_defaults(fn=cmd_token_rotate)
    tr_ = tok.add_parser("retire-key", help="stop accepting tokens signed by a key")
    tr_.add_argument("kid")
    tr_.set_defaults(fn=cmd_token_retire)
    tk_ = tok.add_parser("keys", help="list signing keys")
    tk_.add_argument("--json", action="store_true")
    tk_.set_defaults(fn=cmd_token_keys)
    tok.add_parser("hash-secret", help="hash a DDM Basic secret read from stdin, for "
                   "DAWMS_DDM_BASIC_USERS").set_defaults(fn=cmd_token_hash_secret)

    d = sub.add_parser("demo", help="run the whole data-aware flow on one machine")
    d.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    d.add_argument("--keep", action="store_true", help="keep the demo's directory")
    d.add_argument("--workdir", help="use this directory instead of a fresh temp dir")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .client import DawmsError

    try:
        return int(args.fn(args, settings) or 0)
    except DawmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
