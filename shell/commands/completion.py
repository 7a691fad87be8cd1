"""``dawms completion SHELL``: the shell code that completes ``dawms`` commands, flags
and their choices (states, keys), through argcomplete. Add to ``~/.bashrc``:
``eval "$(dawms completion bash)"`` (zsh: ``eval "$(dawms completion zsh)"``; fish:
``dawms completion fish | source``)."""

from __future__ import annotations

import argparse
import sys

from ..settings import Settings
from ._common import Groups

SHELLS = ["bash", "zsh", "fish", "tcsh", "powershell"]


def cmd_completion(args: argparse.Namespace, st: Settings | None) -> int:
    try:
        import argcomplete
    except ImportError:
        print("error: completion needs argcomplete: pip install 'dawms[server]' "
              "(or pip install argcomplete)", file=sys.stderr)
        return 2
    sys.stdout.write(argcomplete.shellcode(["dawms"], shell=args.shell))
    return 0


def register(groups: Groups) -> None:
    c = groups.top("completion", help="print shell code completing dawms "
                                      "(eval \"$(dawms completion bash)\")")
    c.add_argument("shell", choices=SHELLS, nargs="?", default="bash")
    c.set_defaults(fn=cmd_completion, repairs_config=True)
