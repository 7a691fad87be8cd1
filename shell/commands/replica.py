"""Replicas, for operators: declare copies bad (``dawms replica declare-bad``).

A bad copy is never handed to a pilot again; the DDM repairs it from an intact
copy (local) or is told through ``declare_bad_file_replicas`` (Rucio). Needs a
``production`` (or admin) token.
"""

from __future__ import annotations

import argparse

from ..settings import Settings
from ._common import Groups, client, print_json


def cmd_declare_bad(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = c.declare_bad([(did, args.endpoint) for did in args.dids], args.reason)
    if args.json:
        print_json(result)
    else:
        for key, what in result["replicas"].items():
            print(f"{key}: {what}")
        print(f"repairs asked: {result['repairing']}; activated jobs given other copies: "
              f"{result['jobs_respecced']}; failed for want of a good copy: "
              f"{result['jobs_failed']}")
    return 0 if all(v in ("bad", "already bad") for v in result["replicas"].values()) else 1


def register(groups: Groups) -> None:
    rep = groups("replica", "file replicas at storage endpoints")
    db_ = rep.add_parser("declare-bad", help="mark replicas bad: never dispatched again, "
                                             "repaired from an intact copy")
    db_.add_argument("dids", nargs="+", metavar="SCOPE:NAME", help="files")
    db_.add_argument("--endpoint", required=True, help="the storage endpoint holding them")
    db_.add_argument("--reason", required=True)
    db_.add_argument("--json", action="store_true")
    db_.set_defaults(fn=cmd_declare_bad)
