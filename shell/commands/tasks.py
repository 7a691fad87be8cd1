"""Tasks: submit, list, show, kill."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from ..settings import Settings
from ._common import Groups, client, print_json, table


def _load_spec(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else tomllib.loads(text)


def cmd_task_submit(args: argparse.Namespace, st: Settings) -> int:
    try:
        spec = _load_spec(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    with client(args) as c:
        data = c.submit_task(spec)
    print_json(data) if args.json else print(f"task {data['task_id']} {data['state']}")
    return 0


def cmd_task_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        tasks = c.tasks(state=args.state, limit=args.limit, owner=args.owner, name=args.name)
    if args.json:
        print_json(tasks)
        return 0
    rows = [{**t, "jobs": " ".join(f"{k}:{v}" for k, v in sorted(t["jobs"].items()))}
            for t in tasks]
    table("tasks", rows, ["id", "name", "owner", "state", "priority", "jobs"])
    return 0


def cmd_task_show(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        t = c.task(args.id)
    if args.json:
        print_json(t)
        return 0
    for key in ("id", "name", "owner", "state", "priority", "input_datasets", "output_dataset",
                "split", "resources", "jobs", "error"):
        print(f"{key:>15}: {t[key]}")
    table("history", t["history"], ["at", "from", "to", "actor", "reason"])
    return 0


def cmd_task_kill(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = c.kill_task(args.id, args.reason)
    if args.json:
        print_json(result)
    else:
        print(f"task {args.id} aborted; jobs: " + (", ".join(
            f"{k} {v}" for k, v in result["jobs"].items()) or "none open"))
    return 0



def register(groups: Groups) -> None:
    task = groups("task", "tasks")
    ts = task.add_parser("submit", help="submit a task file (TOML or JSON)")
    ts.add_argument("file")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(fn=cmd_task_submit)
    tl = task.add_parser("list")
    tl.add_argument("--state")
    tl.add_argument("--limit", type=int, default=100)
    tl.add_argument("--owner")
    tl.add_argument("--name", help="a name prefix")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(fn=cmd_task_list)
    tsh = task.add_parser("show")
    tsh.add_argument("id", type=int)
    tsh.add_argument("--json", action="store_true")
    tsh.set_defaults(fn=cmd_task_show)
    tk = task.add_parser("kill", help="abort a task and kill its jobs")
    tk.add_argument("id", type=int)
    tk.add_argument("--reason", default="")
    tk.add_argument("--json", action="store_true")
    tk.set_defaults(fn=cmd_task_kill)
