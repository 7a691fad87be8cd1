"""A task's progress: the bar and ETA of ``dawms task show``, and ``dawms task watch``,
which follows a task until it ends (live on a terminal; one line per change
otherwise, or one JSON document per change with ``--json``).

Exit codes of ``task watch``: 0 the task is done, 1 it ended otherwise (finished
partly, failed, broken, aborted), 3 ``--timeout`` passed first.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..settings import Settings
from ._common import Groups, client, duration, print_json

WATCH_TIMEOUT_EXIT = 3


def bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "-" * (width - filled)


def summary_lines(p: dict[str, Any]) -> list[str]:
    """Plain lines (they fold at any width): state, jobs and files done, ETA."""
    jobs = " ".join(f"{k}:{v}" for k, v in p["jobs"].items()) or "none yet"
    eta = p.get("eta_s")
    eta_text = ("ended" if p["final"] else f"{duration(eta)} (at the finished-job rate)"
                if eta is not None else "unknown until a job finishes")
    return [f"task {p['task_id']}: {p['state']}",
            f"jobs  [{bar(p['progress'])}] {100 * p['progress']:5.1f}%  "
            f"{p['jobs_done']}/{p['jobs_total']} done",
            f"files [{bar(p['files_progress'])}] {100 * p['files_progress']:5.1f}%  "
            f"{p['files_done']}/{p['files_total']} input files done",
            f"by state: {jobs}",
            f"ETA: {eta_text}"]


def _key(p: dict[str, Any]) -> tuple[Any, ...]:
    return (p["state"], tuple(p["jobs"].items()), p["files_done"], p["files_total"])


def cmd_task_watch(args: argparse.Namespace, st: Settings) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    live = None
    if not args.json and sys.stdout.isatty():
        from rich.live import Live
        from rich.text import Text

        from ._common import console

        live = Live(console=console(), refresh_per_second=2, transient=False)
    last: tuple[Any, ...] | None = None
    with client(args) as c:
        if live:
            live.start()
        try:
            while True:
                p = c.task_progress(args.id)
                if _key(p) != last:
                    last = _key(p)
                    if args.json:
                        print_json(p)
                        sys.stdout.flush()
                    elif live:
                        live.update(Text("\n".join(summary_lines(p))))
                    else:
                        jobs = " ".join(f"{k}:{v}" for k, v in p["jobs"].items())
                        eta = f" eta {duration(p['eta_s'])}" if p.get("eta_s") else ""
                        print(f"task {p['task_id']} {p['state']} "
                              f"{100 * p['progress']:.1f}% {jobs}{eta}", flush=True)
                if p["final"]:
                    return 0 if p["state"] == "done" else 1
                if deadline and time.monotonic() > deadline:
                    print(f"task {args.id} still {p['state']} after {args.timeout} s",
                          file=sys.stderr)
                    return WATCH_TIMEOUT_EXIT
                time.sleep(args.interval)
        finally:
            if live:
                live.stop()


def seconds(low: float, high: float) -> Any:
    """An argparse type: a number of seconds from ``low`` to ``high`` (NaN refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also false for NaN
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g} seconds")
        return value
    return parse


def register(groups: Groups) -> None:
    tw = groups("task", "tasks").add_parser(
        "watch", help="follow a task until it ends (exit 0 if done, 1 if it ended "
                      "otherwise, 3 on --timeout)")
    tw.add_argument("id", type=int)
    tw.add_argument("--interval", type=seconds(0.1, 3600), default=2.0,
                    help="seconds between polls")
    tw.add_argument("--timeout", type=seconds(1, 30 * 86400), default=None,
                    help="give up after this long")
    tw.add_argument("--json", action="store_true", help="one JSON line per change")
    tw.set_defaults(fn=cmd_task_watch)
