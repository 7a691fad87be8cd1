"""Managing tasks and paging through big listings: ``dawms task priority``,
``dawms task pages`` and ``dawms job pages``.

``pages`` walks the server's keyset paging (``X-Next-After``) to the end, one
page at a time, and prints one JSON line per row: for scripts that read every
job of a 100,000-job task without holding it all in one reply.
"""

from __future__ import annotations

import argparse

from ..settings import Settings
from ._common import Groups, client, print_json


def cmd_task_priority(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = c.set_task_priority(args.id, args.priority)
    if args.json:
        print_json(result)
    else:
        print(f"task {args.id}: priority {result['was']} -> {result['priority']} "
              f"({result['jobs']} queued job(s) moved with it)")
    return 0


def cmd_task_pages(args: argparse.Namespace, st: Settings) -> int:
    after = args.after
    with client(args) as c:
        while True:
            rows, after = c.tasks_page(args.state, args.page, owner=args.owner,
                                       name=args.name, after=after)
            for row in rows:
                print_json(row)
            if after is None:
                return 0


def cmd_job_pages(args: argparse.Namespace, st: Settings) -> int:
    after = args.after
    with client(args) as c:
        while True:
            rows, after = c.jobs_page(args.task, args.state, args.page, queue=args.queue,
                                      site=args.site, error_category=args.error_category,
                                      after=after)
            for row in rows:
                print_json(row)
            if after is None:
                return 0


def register(groups: Groups) -> None:
    task = groups("task", "tasks")
    tp = task.add_parser("priority", help="change a task's priority (and its queued jobs')")
    tp.add_argument("id", type=int)
    tp.add_argument("priority", type=int)
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(fn=cmd_task_priority)
    tg = task.add_parser("pages", help="every matching task, one JSON line each, newest first")
    tg.add_argument("--state", action="append", help="repeat for several")
    tg.add_argument("--owner")
    tg.add_argument("--name", help="a name prefix")
    tg.add_argument("--after", type=int, help="start below this task id")
    tg.add_argument("--page", type=int, default=1000, help="rows per request")
    tg.set_defaults(fn=cmd_task_pages)

    job = groups("job", "jobs")
    jg = job.add_parser("pages", help="every matching job, one JSON line each, oldest first")
    jg.add_argument("--task", type=int)
    jg.add_argument("--state", action="append", help="repeat for several")
    jg.add_argument("--queue")
    jg.add_argument("--site")
    jg.add_argument("--error-category")
    jg.add_argument("--after", type=int, help="start above this job id")
    jg.add_argument("--page", type=int, default=5000, help="rows per request")
    jg.set_defaults(fn=cmd_job_pages)
