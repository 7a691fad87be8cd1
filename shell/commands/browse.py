"""Browsing what the catalog holds: datasets (files, replicas per endpoint, open
requests), data and staging requests with their progress, sites and queues (status,
config version, running and queued jobs, last pilot seen). Read-only; ``--json``
prints the server's data."""

from __future__ import annotations

import argparse

from dawms.catalog.states import QueueStatus, RequestState, StagingState

from ..settings import Settings
from ._common import Groups, ago, client, fields, print_json, state_choices, table


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _replicas(reps: dict[str, dict[str, int]]) -> str:
    return " ".join(f"{ep}:" + ",".join(f"{st}={n}" for st, n in sorted(states.items()))
                    for ep, states in reps.items())


def cmd_dataset_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        rows = c.datasets(scope=args.scope, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    table("datasets", [{**r, "open": "open" if r["open"] else "closed",
                        "replicas": _replicas(r["replicas"])} for r in rows],
          ["did", "open", "files", "bytes", "replicas", "created_at"],
          {"open": "state", "created_at": "created"})
    return 0


def cmd_dataset_show(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        d = c.dataset(args.did, files=args.files)
    if args.json:
        print_json(d)
        return 0
    fields([("dataset", d["did"]), ("state", "open" if d["open"] else "closed"),
            ("files", d["files"]), ("bytes", d["bytes"]), ("created_at", d["created_at"])])
    table("replicas per endpoint",
          [{"endpoint": ep, **states} for ep, states in d["replicas"].items()],
          ["endpoint", "available", "copying", "unavailable", "bad"])
    table(f"files (first {len(d['file_list'])} of {d['files']})", d["file_list"],
          ["name", "size", "adler32", "replicas"])
    table("open data requests", [_request(r) for r in d["requests"]],
          ["id", "kind", "endpoint", "state", "files", "progress"])
    table("staging requests", [{**r, "files": f"{r['files_staged']}/{r['files_total']}",
                                "progress": _pct(r["progress"])} for r in d["staging"]],
          ["id", "task_id", "state", "files", "files_lost", "progress"])
    return 0


def _request(r: dict[str, object]) -> dict[str, object]:
    return {**r, "files": f"{r['files_done']}/{r['files_total']}",
            "progress": _pct(float(r["progress"]))}  # type: ignore[arg-type]


def cmd_request_list(args: argparse.Namespace, st: Settings) -> int:
    """Data requests made of the DDM and the carousel's staging requests."""
    with client(args) as c:
        data = c.requests(state=args.state, kind=args.kind, limit=args.limit) \
            if args.staging_state is None else []
        staging = c.staging(state=args.staging_state, limit=args.limit) \
            if args.state is None and args.kind is None else []
    if args.json:
        print_json({"data": data, "staging": staging})
        return 0
    table("data requests", [_request(r) for r in data],
          ["id", "kind", "name", "endpoint", "state", "files", "progress", "updated_at"],
          {"updated_at": "updated"})
    table("staging requests", [{**r, "files": f"{r['files_staged']}/{r['files_total']}",
                                "progress": _pct(r["progress"])} for r in staging],
          ["id", "task_id", "dataset", "source", "destination", "state", "files",
           "files_lost", "progress"], {"task_id": "task", "files_lost": "lost"})
    return 0


def _queue_row(q: dict[str, object]) -> dict[str, object]:
    return {**q, "version": q["config_version"] or "", "pilot_seen": ago(q["last_pilot_at"]),
            "running": f"{q['running']}/{q['max_running']}",
            "queued": f"{q['queued']}/{q['max_queued']}"}


def cmd_site_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        rows = c.sites()
    if args.json:
        print_json(rows)
        return 0
    table("sites", [{**r, "queues": " ".join(f"{q}:{s}" for q, s in r["queues"].items()),
                     "pilot_seen": ago(r["last_pilot_at"])} for r in rows],
          ["name", "queues", "endpoints", "running", "queued", "pilot_seen"],
          {"pilot_seen": "last pilot"})
    if not rows:
        print("no sites (apply a site file with `dawms sites sync FILE`)")
    return 0


def cmd_site_show(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        site = c.site(args.name)
    if args.json:
        print_json(site)
        return 0
    fields([("site", site["name"]), ("description", site["description"])])
    table("queues", [_queue_row(q) for q in site["queues"]],
          ["name", "status", "version", "running", "queued", "pilot_seen"],
          {"pilot_seen": "last pilot"})
    table("endpoints", site["endpoints"],
          ["name", "kind", "url_prefix", "files", "bytes", "quota_bytes"],
          {"url_prefix": "url", "quota_bytes": "quota"})
    return 0


def cmd_queue_list(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        rows = c.queues(site=args.site, status=args.status)
    if args.json:
        print_json(rows)
        return 0
    table("queues", [_queue_row(q) for q in rows],
          ["name", "site", "status", "version", "running", "queued", "pilot_seen"],
          {"pilot_seen": "last pilot"})
    return 0


def cmd_queue_show(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        q = c.queue(args.name)
    if args.json:
        print_json(q)
        return 0
    row = _queue_row(q)
    fields([("queue", q["name"]), ("site", q["site"]), ("status", q["status"]),
            ("config version", f"{q['config_version']} ({q['config_changed_at'] or '-'})"),
            ("running", row["running"]), ("queued", row["queued"]),
            ("last pilot seen", f"{q['last_pilot_at'] or 'never'} {row['pilot_seen']}"),
            ("jobs", q["jobs"])] + [(k, q[k]) for k in (
                "cores", "memory_mb", "max_walltime_s", "max_disk_mb", "pilot_backend",
                "read_endpoints", "write_endpoint", "movers", "direct_access")])
    table("config changes", [{**c, "diff": "; ".join(c["diff"])} for c in q["changes"]],
          ["id", "at", "actor", "source", "diff"])
    return 0


def register(groups: Groups) -> None:
    ds = groups("dataset", "datasets: files, replicas, open requests")
    dl = ds.add_parser("list", help="datasets with files, bytes and replicas per endpoint")
    dl.add_argument("--scope")
    dl.add_argument("--limit", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(fn=cmd_dataset_list)
    dsh = ds.add_parser("show", help="a dataset's files, replicas and open requests")
    dsh.add_argument("did", help="scope:name")
    dsh.add_argument("--files", type=int, default=100, help="list at most this many files")
    dsh.add_argument("--json", action="store_true")
    dsh.set_defaults(fn=cmd_dataset_show)

    rl = groups("request", "data and staging requests").add_parser(
        "list", help="data requests made of the DDM and staging requests, with progress")
    rl.add_argument("--state", choices=state_choices(RequestState),
                    help="data requests in this state (staging requests are left out)")
    rl.add_argument("--kind", choices=["replicate", "stage"])
    rl.add_argument("--staging-state", choices=state_choices(StagingState),
                    help="staging requests in this state (data requests are left out)")
    rl.add_argument("--limit", type=int, default=100)
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(fn=cmd_request_list)

    site = groups("site", "sites: queues, endpoints, load")
    sl = site.add_parser("list", help="sites with their queues, endpoints and load")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(fn=cmd_site_list)
    ss = site.add_parser("show", help="a site's queues and endpoints")
    ss.add_argument("name")
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(fn=cmd_site_show)

    queue = groups("queue", "queues: status, config version, load, last pilot seen")
    ql = queue.add_parser("list", help="queues with status, config version, load, last pilot")
    ql.add_argument("--site")
    ql.add_argument("--status", choices=state_choices(QueueStatus))
    ql.add_argument("--json", action="store_true")
    ql.set_defaults(fn=cmd_queue_list)
    qs = queue.add_parser("show", help="a queue's configuration, load and config history")
    qs.add_argument("name")
    qs.add_argument("--json", action="store_true")
    qs.set_defaults(fn=cmd_queue_show)
