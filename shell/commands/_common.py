"""What every command module shares: JSON and table output, the HTTP client, and the
top-level command groups (``task``, ``job``, ...) that several modules add to."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=None, default=str))


def table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
    Console().print(t)


def client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..client import Client

    return Client(args.server, token=args.token or os.environ.get("DAWMS_TOKEN") or None)


class Groups:
    """The ``dawms GROUP SUB`` subparsers, made on first use so that several modules can
    add commands to one group (``task reassign`` lives with the jobs it moves)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub
        self._groups: dict[str, Any] = {}

    def top(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        """A top-level command with no subcommands (``dawms server``)."""
        return self._sub.add_parser(name, **kw)

    def __call__(self, name: str, help: str = "") -> Any:
        """The subparsers of group ``name``, made on first use."""
        if name not in self._groups:
            self._groups[name] = self._sub.add_parser(name, help=help).add_subparsers(
                dest="sub", required=True)
        return self._groups[name]
