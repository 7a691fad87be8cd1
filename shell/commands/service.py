"""Running dawms: the catalog schema, the server, the scheduler and the demo."""

from __future__ import annotations

import argparse
import ipaddress
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
