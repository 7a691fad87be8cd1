"""The ``dawms`` command: run the server and scheduler, configure sites, submit and
watch tasks and jobs, issue tokens, and run the demo. Tables for humans,
``--json`` for scripts. Commands that call the server send ``$DAWMS_TOKEN`` (or
``--token``); ``dawms token ...`` works on the catalog directly, like
``dawms sites sync``. The commands live in ``commands/``, a module per group.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import MODULES
from .commands._common import Groups
from .commands.service import is_loopback
from .settings import Settings

__all__ = ["build_parser", "is_loopback", "main"]


def build_parser() -> argparse.ArgumentParser:
    st_server = Settings.from_env().server
    p = argparse.ArgumentParser(prog="dawms", description="data-aware workload management")
    p.add_argument("--server", default=st_server, help="dawms server URL ($DAWMS_SERVER)")
    p.add_argument("--token", default=None,
                   help="bearer token for the server (default $DAWMS_TOKEN)")
    p.add_argument("-v", "--verbose", action="store_true")
    groups = Groups(p.add_subparsers(dest="cmd", required=True))
    for module in MODULES:
        module.register(groups)
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
