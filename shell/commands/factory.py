"""``dawms factory``: the pilot factory (``dawms-factory``) from the dawms command.

The factory itself lives in the pilot package (``dawms.pilot.factory.daemon``) so
that it installs with ``dawms[pilot]`` and talks to the server over HTTP only; this
module only gives it the shell's ``--server`` and token.
"""

from __future__ import annotations

import argparse
import os

from ..settings import Settings
from ._common import Groups


def cmd_factory(args: argparse.Namespace, st: Settings) -> int:
    from dawms.pilot.factory.daemon import run

    if args.token and args.token_file is None:
        os.environ["DAWMS_TOKEN"] = args.token  # read (and removed) as the pilot reads it
    return run(args)


def register(groups: Groups) -> None:
    from dawms.pilot.factory.daemon import add_arguments

    f = groups.top("factory", help="keep queues supplied with pilots (needs a factory token)")
    add_arguments(f, server_required=False)
    f.set_defaults(fn=cmd_factory)
