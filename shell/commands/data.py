"""Data in the configured DDM: upload and register files."""

from __future__ import annotations

import argparse
import sys

from ..settings import Settings
from ._common import Groups, print_json


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
    if args.json:
        print_json({"dataset": args.dataset, "endpoint": args.endpoint, "files": len(files)})
    else:
        print(f"{len(files)} files in {args.dataset} at {args.endpoint}")
    return 0



def register(groups: Groups) -> None:
    up = groups("data", "data in the configured DDM (DAWMS_DDM)").add_parser(
        "upload", help="copy files to an endpoint and register them")
    up.add_argument("dataset", help="scope:name")
    up.add_argument("files", nargs="+")
    up.add_argument("--endpoint", required=True)
    up.add_argument("--json", action="store_true")
    up.set_defaults(fn=cmd_data_upload)
