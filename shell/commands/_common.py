"""What every command module shares: JSON and table output, the HTTP client, and the
top-level command groups (``task``, ``job``, ...) that several modules add to.

Every value is shown as plain text (never read as rich markup: names come from
users). Tables fit the terminal (``$COLUMNS`` or its real width, 80 when not a terminal):
key columns (ids, states, times, counts) are never cut or folded, the others fold
onto more lines; nothing is ever replaced by an ellipsis. Times are shown in UTC
to the second. ``--json`` prints the server's data unchanged, one document a line.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

# a column is a key column (kept whole) if its name is one of these or ends so
KEY_NAMES = frozenset({"id", "state", "status", "attempt", "task_id", "job_index", "queue",
                       "files", "progress", "eta", "at", "to", "from", "size",
                       "priority", "running", "queued", "version", "kind", "type"})
KEY_SUFFIXES = ("_id", "_at", "_state", "_s")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=None, default=str))


def when(value: Any) -> str:
    """An ISO time from the server as ``YYYY-MM-DD HH:MM:SS`` (UTC); other values as is."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago an ISO time was (``42s``, ``3m``, ``5h``, ``2d``); "" if none."""
    if not value:
        return ""
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    s = ((now or datetime.now(UTC)) - t).total_seconds()
    return duration(max(0.0, s)) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def is_key(col: str) -> bool:
    return col in KEY_NAMES or col.endswith(KEY_SUFFIXES)


def cell(col: str, value: Any) -> str:
    if value is None:
        return ""
    if col == "at" or col.endswith("_at"):
        return when(value)
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


MIN_FOLDED = 8  # the narrowest a folding column gets before rows become records


def make_table(title: str | None, rows: Sequence[dict[str, Any]], cols: Iterable[str],
               headers: dict[str, str] | None = None, width: int | None = None) -> Any:
    """A rich table of ``rows`` that folds instead of cutting: key columns keep their
    widest value whole (``min_width``), the others fold onto more lines. If even that
    does not fit ``width`` (the console's), each row becomes a block of ``key: value``
    lines, so nothing is ever cut."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    cols = list(cols)
    headers = headers or {}
    width = width or console().width
    texts = [[cell(c, r.get(c)) for c in cols] for r in rows]
    heads = [headers.get(c, c) for c in cols]
    widest = [max([len(h)] + [len(row[i]) for row in texts]) for i, h in enumerate(heads)]
    need = sum(w if is_key(c) else min(w, MIN_FOLDED) for c, w in zip(cols, widest, strict=True))
    if need + 2 * (len(cols) - 1) > width and rows:
        blocks: list[Any] = [Text(title)] if title else []
        for row in texts:
            g = Table.grid(padding=(0, 1))
            g.add_column(justify="right", no_wrap=True, style="bold")
            g.add_column(overflow="fold")
            for h, v in zip(heads, row, strict=True):
                g.add_row(Text(f"{h}:"), Text(v))
            blocks += [g, ""]
        return Group(*blocks)
    t = Table(title=Text(title) if title else None, title_justify="left", pad_edge=False,
              box=box.SIMPLE_HEAD, show_edge=False)
    for c, h, w in zip(cols, heads, widest, strict=True):
        if is_key(c):
            t.add_column(Text(h), no_wrap=True, overflow="fold", min_width=w)
        else:
            t.add_column(Text(h), overflow="fold", min_width=min(w, MIN_FOLDED))
    for row in texts:
        t.add_row(*[Text(v) for v in row])
    return t


def table(title: str | None, rows: Sequence[dict[str, Any]], cols: Iterable[str],
          headers: dict[str, str] | None = None) -> None:
    """Print ``rows`` as a table (``title: none`` when there are none)."""
    if not rows:
        print(f"{title or 'rows'}: none")
        return
    console().print(make_table(title, rows, cols, headers))


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """``key: value`` lines, values folded to the terminal's width."""
    from rich.table import Table
    from rich.text import Text

    t = Table.grid(padding=(0, 1))
    t.add_column(justify="right", no_wrap=True, style="bold")
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(Text(f"{k}:"), Text(cell(k, v)))
    console().print(t)


def client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The HTTP client for the server and token that ``dawms`` resolved (flag, then
    ``$DAWMS_SERVER``/``$DAWMS_TOKEN``, then the config file)."""
    from ..client import Client

    return Client(args.server, token=args.token or None)


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


def state_choices(enum: Iterable[Any]) -> list[str]:
    """The values of a state enum, for ``choices=``: argparse refuses any other and
    lists these (exit 2)."""
    return [str(getattr(s, "value", s)) for s in enum]
