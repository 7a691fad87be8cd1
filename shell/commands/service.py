"""Running dawms: the catalog schema, the server, the scheduler and the demo."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from ..settings import Settings
from ._common import Groups


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


def banner(host: str, port: int, db_url: str, ddm: str, auth: str,
           daemons: list[str] | None) -> str:
    """What ``dawms server`` says on start: where it listens, its database (without
    password), the DDM backend and which daemons run in this process."""
    from sqlalchemy.engine import make_url

    try:
        shown_db = make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL fails later with its own error; show no part of it
        shown_db = "(unparsable URL)"
    url_host = f"[{host}]" if ":" in host else host
    ran = ", ".join(daemons) if daemons else "none here (--no-scheduler)"
    return "\n".join([f"dawms server on http://{url_host}:{port}  (auth {auth}; clients: "
                      f"DAWMS_SERVER=http://{url_host}:{port})",
                      f"  database: {shown_db}", f"  DDM: {ddm}", f"  daemons: {ran}"])
_SCHEDULER_ENV = "DAWMS_SERVER_WITH_SCHEDULER"  # from `dawms server` to its worker processes


def app_factory() -> object:
    """The app of one worker process of ``dawms server --workers N`` (uvicorn imports
    and calls this in each process; the settings come from the environment)."""
    from dawms.catalog.db import Database
    from dawms.ddm_bridge import get_ddm
    from dawms.scheduler.config import SchedulerConfig
    from dawms.server.app import create_app
    from dawms.server.settings import ServerSettings

    st = Settings.from_env()
    return create_app(Database(st.db_url), get_ddm(st.ddm), SchedulerConfig.from_env(),
                      with_scheduler=os.environ.get(_SCHEDULER_ENV) == "1",
                      settings=ServerSettings())


def cmd_server(args: argparse.Namespace, st: Settings) -> int:
    import uvicorn
    from pydantic import ValidationError

    from dawms.catalog.db import Database
    from dawms.ddm_bridge import get_ddm
    from dawms.scheduler.config import SchedulerConfig
    from dawms.scheduler.runner import expected_daemons
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
    if not 1 <= args.workers <= 64:
        print("error: --workers must be from 1 to 64", file=sys.stderr)
        return 2
    db = Database(st.db_url)
    db.upgrade()
    ddm = get_ddm(st.ddm)
    options = {"host": args.host, "port": args.port, "log_level": args.log_level,
               "access_log": False, "http": args.http, "loop": args.loop}
    if args.workers > 1:  # each worker process builds its app over the same catalog
        daemons = list(expected_daemons(ddm, SchedulerConfig.from_env())) if args.scheduler \
            else None
        print(banner(args.host, args.port, st.db_url, st.ddm, server_settings.auth, daemons)
              + f"\n  workers: {args.workers}", flush=True)
        db.dispose()
        os.environ[_SCHEDULER_ENV] = "1" if args.scheduler else "0"
        uvicorn.run("dawms.commands.service:app_factory", factory=True,
                    workers=args.workers, **options)
        return 0
    app = create_app(db, ddm, SchedulerConfig.from_env(),
                     with_scheduler=args.scheduler, settings=server_settings)
    sched = app.state.scheduler
    print(banner(args.host, args.port, st.db_url, st.ddm, server_settings.auth,
                 list(sched.daemons) if sched else None), flush=True)
    try:  # with --no-scheduler on PostgreSQL, commits still NOTIFY schedulers elsewhere
        uvicorn.run(app, **options)
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


def cmd_demo(args: argparse.Namespace, st: Settings) -> int:
    from ..demo import run_demo

    return run_demo(json_out=args.json, keep=args.keep, workdir=args.workdir, serve=args.serve,
                    port=args.port)



def register(groups: Groups) -> None:
    groups("db", "the catalog database").add_parser(
        "upgrade", help="create or migrate the schema").set_defaults(fn=cmd_db_upgrade)

    s = groups.top("server", help="run the HTTP server (and, by default, the scheduler)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--no-scheduler", dest="scheduler", action="store_false",
                   help="do not run the scheduler's daemons in this process")
    s.add_argument("--log-level", default="warning")
    s.add_argument("--workers", type=int, default=1,
                   help="server processes on this port (each with its own connection pool, "
                        "DAWMS_DB_POOL_SIZE + DAWMS_DB_MAX_OVERFLOW; with the scheduler, "
                        "each runs its daemons, which share the work by leases)")
    s.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto",
                   help="HTTP parser (auto: httptools when installed)")
    s.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="event loop (auto: uvloop when installed)")
    s.set_defaults(fn=cmd_server)

    sc = groups.top("scheduler", help="run the scheduler's daemons")
    sc.add_argument("--once", action="store_true", help="run every daemon once and exit")
    sc.set_defaults(fn=cmd_scheduler)

    d = groups.top("demo", help="run the whole data-aware flow on one machine")
    d.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    d.add_argument("--keep", action="store_true", help="keep the demo's directory")
    d.add_argument("--workdir", help="use this directory instead of a fresh temp dir")
    d.add_argument("--serve", action="store_true",
                   help="keep the server (and its web monitor) running after the jobs end, "
                        "until interrupted; keeps the directory")
    d.add_argument("--port", type=int, help="the server's port (default: a free one)")
    d.set_defaults(fn=cmd_demo)
