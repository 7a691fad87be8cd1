"""``dawms db check``: verify a catalog's invariants (a restored backup, before serving).

Works on the database directly (``DAWMS_DB_URL``), read only. Exit 0 when every
invariant holds; 1 naming each broken one with a few offending rows.
"""

from __future__ import annotations

import argparse

from ..settings import Settings
from ._common import Groups, print_json


def cmd_db_check(args: argparse.Namespace, st: Settings) -> int:
    from dawms.catalog.check import check
    from dawms.catalog.db import Database

    db = Database(st.db_url)
    try:
        with db.session() as s:
            findings = check(s)
    finally:
        db.dispose()
    if args.json:
        print_json({f.invariant: {"ok": f.ok, "count": f.count, "examples": f.examples}
                    for f in findings})
    else:
        for f in findings:
            print(f"{'ok' if f.ok else 'BROKEN'}: {f.invariant}"
                  + ("" if f.ok else f" ({f.count}): " + "; ".join(f.examples)))
    return 0 if all(f.ok for f in findings) else 1


def register(groups: Groups) -> None:
    dc = groups("db", "the catalog database").add_parser(
        "check", help="verify the catalog's invariants (e.g. a restored backup)")
    dc.add_argument("--json", action="store_true")
    dc.set_defaults(fn=cmd_db_check)
