"""``dawms explain job|task ID``: what blocks progress now, in which layer, since when,
and what would unblock it; for a task also its progress and estimated completion.
``dawms task submit --dry-run`` (in ``tasks.py``) shows the plan it prints here."""

from __future__ import annotations

import argparse
from typing import Any

from ..settings import Settings
from ._common import Groups, client, print_json, table


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def cmd_explain(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        data = c.explain_job(args.id) if args.what == "job" else c.explain_task(args.id)
    if args.json:
        print_json(data)
        return 0
    if args.what == "job":
        print(f"job {data['job_id']} (task {data['task_id']}, attempt {data['attempt']}): "
              f"{data['state']} since {_when(data['since'])}, held in {data['layer']}")
        print(f"  why:     {data['reason']}")
        print(f"  unblock: {data['unblock']}")
        return 0
    print(f"task {data['task_id']}: {data['summary']}")
    p = data["prediction"]
    print(f"  progress: {p['jobs_done']}/{p['jobs_total']} jobs, {p['files_done']}/"
          f"{p['files_total']} input files ({100 * p['fraction_done']:.1f}%)")
    if p["eta"]:
        print(f"  estimate: {_when(p['eta'])} (between {_when(p['eta_low'])} and "
              f"{_when(p['eta_high'])}; {p['basis']})")
    else:
        print(f"  estimate: none yet ({p['basis']})")
    if data["blockers"]:
        table("what holds its open jobs", [
            {**b, "since": _when(b["since"])} for b in data["blockers"]],
            ["jobs", "layer", "since", "example", "unblock"])
    return 0


def print_plan(plan: dict[str, Any]) -> None:
    """A dry run's plan, for people."""
    print(f"would create {plan['jobs_total']} jobs from {plan['input_files']} input files "
          f"({plan['input_bytes'] / 1e9:.3f} GB); nothing was written")
    print("  jobs by queue: " + (", ".join(f"{q} {n}" for q, n in
                                            sorted(plan["jobs_by_queue"].items())) or "none")
          + (f"; {plan['unplaced_jobs']} would wait (no queue passes)"
             if plan["unplaced_jobs"] else ""))
    print(f"  data to move: {plan['files_to_move']} files, {plan['bytes_to_move'] / 1e9:.3f} GB;"
          f" from tape: {plan['files_from_tape']} files, {plan['bytes_from_tape'] / 1e9:.3f} GB"
          + (f" ({', '.join(plan['tapes'])})" if plan["tapes"] else ""))
    if plan.get("subscription"):
        print(f"  a subscription would be made: {plan['subscription']}")
    refused = {q: why for q, why in plan["queues"].items() if why}
    for q, why in sorted(refused.items()):
        print(f"  {q}: {why}")
    table("jobs", [{**j, "weights": " ".join(
        f"{q}={w}" for q, w in j["weights"].items() if not isinstance(w, str))}
        for j in plan["jobs"]], ["job", "files", "bytes", "from_tape", "queue",
                                 "missing_files", "move_bytes", "weights"])


def register(groups: Groups) -> None:
    ex = groups("explain", "why a job or task is not moving, and what would unblock it")
    for what in ("job", "task"):
        p = ex.add_parser(what, help=f"explain one {what}")
        p.add_argument("id", type=int)
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=cmd_explain, what=what)
