"""Tasks: submit, list, show (with progress and ETA), kill.

A task file is refused before it is sent if it does not parse, is not a table, or
holds a value JSON cannot carry (NaN, infinity), naming the key."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from typing import Any

from dawms.catalog.states import TaskState

from ..settings import Settings
from ._common import Groups, client, fields, print_json, state_choices, table
from .progress import summary_lines

MAX_SPEC_BYTES = 1024 * 1024


def _load_spec(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise ValueError(f"over {MAX_SPEC_BYTES} bytes; a task file is smaller")
    text = raw.decode()
    spec = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    if not isinstance(spec, dict):
        raise ValueError("a task file is a table (TOML) or an object (JSON)")
    _check_finite(spec, "")
    return spec


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'a value'} is {value}; use a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def cmd_task_submit(args: argparse.Namespace, st: Settings) -> int:
    try:
        spec = _load_spec(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    with client(args) as c:
        if args.dry_run:
            from .explain import print_plan

            plan = c.dry_run(spec)
            print_json(plan) if args.json else print_plan(plan)
            return 0
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
            print_json({**t, "progress": c.task_progress(args.id)})
            return 0
    with client(args) as c:
        p = c.task_progress(args.id)
    fields((k, t[k]) for k in ("id", "name", "owner", "state", "priority", "input_datasets",
                               "output_dataset", "split", "resources", "error",
                               "created_at", "updated_at"))
    print("\n".join(summary_lines(p)))
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
    ts.add_argument("--dry-run", action="store_true",
                    help="show how it would split, where jobs would go and what data would "
                         "move; write nothing")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(fn=cmd_task_submit)
    tl = task.add_parser("list")
    tl.add_argument("--state", choices=state_choices(TaskState))
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
