"""The ``dawms`` command: run the server and scheduler, configure sites, submit and
watch tasks and jobs, browse datasets, sites, queues and requests, issue tokens, and
run the demo. Tables for humans, ``--json`` for scripts. Commands that call the
server use ``--server``/``--token``, else ``$DAWMS_SERVER``/``$DAWMS_TOKEN``, else
the config file (``dawms config``); ``dawms token ...`` works on the catalog
directly, like ``dawms sites sync``. The commands live in ``commands/``, a module
per group.

Exit codes: 0 done, 1 the server refused or failed (its message is printed), 2 bad
input (a flag, a file, a setting), 130 interrupted. A user's mistake never prints a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import MODULES
from .commands._common import Groups
from .commands.service import is_loopback
from .settings import Settings, config_path

__all__ = ["build_parser", "is_loopback", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dawms", description="data-aware workload management",
        epilog=f"settings: flags, then DAWMS_SERVER / DAWMS_TOKEN / DAWMS_DB_URL ..., then "
               f"{config_path()} (see `dawms config`). Completion: "
               f"eval \"$(dawms completion bash)\"")
    p.add_argument("--server", default=None,
                   help="dawms server URL (default $DAWMS_SERVER, the config file, "
                        "http://127.0.0.1:8080)")
    p.add_argument("--token", default=None,
                   help="bearer token for the server (default $DAWMS_TOKEN, the config file)")
    p.add_argument("-v", "--verbose", action="store_true")
    groups = Groups(p.add_subparsers(dest="cmd", required=True, metavar="COMMAND"))
    for module in MODULES:
        module.register(groups)
    return p


def hint(exc: Exception) -> str:
    """What to set when the server cannot be reached or refuses the caller."""
    status = getattr(exc, "status", None)
    if status == 0:
        return ("is the server running? point the client at it with --server URL, "
                "DAWMS_SERVER=URL or `dawms config set server URL`")
    if status == 401:
        return ("give a token with --token, DAWMS_TOKEN or `dawms config set token -` "
                "(an operator issues one with `dawms token issue`)")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        import argcomplete
    except ImportError:  # completion is an extra nicety; the CLI works without it
        pass
    else:
        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.flag_server, args.flag_token = args.server, args.token
    settings: Settings | None
    try:
        settings = Settings.from_env(server=args.server, token=args.token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not getattr(args, "repairs_config", False):
            return 2
        settings = None  # `dawms config set/unset` may fix what is wrong
    if settings is not None:
        args.server, args.token = settings.server, settings.token
    from .client import DawmsError

    try:
        return int(args.fn(args, settings) or 0)
    except DawmsError as exc:
        more = hint(exc)
        print(f"error: {exc}" + (f"\n  hint: {more}" if more else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dawms job list | head`: the reader left, not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
