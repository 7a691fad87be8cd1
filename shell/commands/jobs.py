"""Jobs: list, show, kill, and reassignment (of jobs or of a task's queued jobs)."""

from __future__ import annotations

import argparse

from dawms.catalog.states import JobState

from ..settings import Settings
from ._common import Groups, client, fields, print_json, state_choices, table


def cmd_job_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        jobs = c.jobs(task_id=args.task, state=args.state, limit=args.limit, queue=args.queue,
                      site=args.site)
    if args.json:
        print_json(jobs)
        return 0
    table("jobs", jobs, ["id", "task_id", "job_index", "attempt", "state", "queue",
                          "error_category"],
          {"task_id": "task", "job_index": "index", "error_category": "error"})
    return 0


def cmd_job_show(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        j = c.job(args.id)
    if args.json:
        print_json(j)
        return 0
    fields((k, j[k]) for k in ("id", "task_id", "job_index", "attempt", "state", "queue",
                               "pilot_id", "exit_code", "error_category", "error_diag",
                               "metrics", "created_at", "started_at", "ended_at"))
    table("files", j["files"], ["type", "lfn", "dataset", "size", "adler32", "registered"])
    table("history", j["history"], ["at", "from", "to", "attempt", "actor", "reason"])
    return 0


def cmd_job_kill(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = c.kill_jobs(args.ids, args.reason)
    if args.json:
        print_json(result)
    else:
        for job_id, what in result.items():
            print(f"job {job_id}: {what}")
    return 0 if all(v in ("cancelled", "tobekilled") for v in result.values()) else 1


def cmd_reassign(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        result = (c.reassign_task(args.id, args.queue) if args.what == "task"
                  else c.reassign_jobs(args.ids, args.queue))
    if args.json:
        print_json(result)
    else:
        for job_id, what in result.items():
            print(f"job {job_id}: {what}")
    return 0



def register(groups: Groups) -> None:
    tr = groups("task", "tasks").add_parser("reassign", help="rebroker the task's queued jobs")
    tr.add_argument("id", type=int)
    tr.add_argument("--queue", help="send them here (default: anywhere but where they are)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(fn=cmd_reassign, what="task")

    job = groups("job", "jobs")
    jr = job.add_parser("reassign", help="rebroker queued jobs")
    jr.add_argument("ids", type=int, nargs="+")
    jr.add_argument("--queue", help="send them here (default: anywhere but where they are)")
    jr.add_argument("--json", action="store_true")
    jr.set_defaults(fn=cmd_reassign, what="job")
    jk = job.add_parser("kill", help="kill jobs (queued: cancelled; running: their pilot "
                                     "is told)")
    jk.add_argument("ids", type=int, nargs="+")
    jk.add_argument("--reason", default="")
    jk.add_argument("--json", action="store_true")
    jk.set_defaults(fn=cmd_job_kill)
    jl = job.add_parser("list")
    jl.add_argument("--task", type=int)
    jl.add_argument("--state", choices=state_choices(JobState))
    jl.add_argument("--limit", type=int, default=1000)
    jl.add_argument("--queue")
    jl.add_argument("--site")
    jl.add_argument("--json", action="store_true")
    jl.set_defaults(fn=cmd_job_list)
    js = job.add_parser("show")
    js.add_argument("id", type=int)
    js.add_argument("--json", action="store_true")
    js.set_defaults(fn=cmd_job_show)
