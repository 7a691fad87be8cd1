"""Sites, queues and endpoints: the site file applied to the catalog, with its diff."""

from __future__ import annotations

import argparse
import getpass
import sys

from ..settings import Settings
from ._common import Groups, print_json


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
        print_json({"applied": not args.dry_run, "changes": [str(c) for c in changes]})
    else:
        for c in changes:
            print(c)
        verb = "would apply" if args.dry_run else "applied"
        print(f"{verb} {len(changes)} change(s)" if changes else "no changes")
    return 0



def register(groups: Groups) -> None:
    sy = groups("sites", "sites, queues, endpoints").add_parser(
        "sync", help="apply a site TOML file (shows the diff)")
    sy.add_argument("file")
    sy.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    sy.add_argument("--json", action="store_true")
    sy.set_defaults(fn=cmd_sites_sync)
