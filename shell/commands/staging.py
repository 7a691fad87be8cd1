"""The tape carousel's staging requests: list with progress, cancel, change priority."""

from __future__ import annotations

import argparse

from ..settings import Settings
from ._common import Groups, client, print_json, table


def cmd_staging_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        reqs = c.staging(task_id=args.task, state=args.state, limit=args.limit)
    if args.json:
        print_json(reqs)
        return 0
    rows = [{**r, "files": f"{r['files_staged']}/{r['files_total']}",
             "progress": f"{100 * r['progress']:.1f}%",
             "GB": f"{r['bytes_staged'] / 1e9:.2f}/{r['bytes_total'] / 1e9:.2f}"} for r in reqs]
    table("staging requests", rows, ["id", "task_id", "dataset", "source", "destination",
                                      "state", "share", "priority", "files", "files_staging",
                                      "files_lost", "GB", "progress"])
    return 0


def cmd_staging_change(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = (c.cancel_staging(args.ids, args.reason) if args.what == "cancel"
                  else c.staging_priority(args.ids, args.priority))
    if args.json:
        print_json(result)
    else:
        for rid, what in result.items():
            print(f"staging request {rid}: {what}")
    good = ("cancelled",) if args.what == "cancel" else ()
    return 0 if all(v in good or " -> " in v for v in result.values()) else 1



def register(groups: Groups) -> None:
    stg = groups("staging", "the tape carousel's staging requests")
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
