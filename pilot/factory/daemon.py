"""``dawms-factory``: keeps the queues it serves supplied with pilots (Harvester's role).

Each cycle (``run_once``) it asks the server over HTTP for its queues' demand
(``GET /api/v1/factory/demand``: activated jobs and each queue's ``pilot_backend``
and ``backend_settings`` from the site file), polls the pilots it submitted,
cleans up the ended ones (and their token files), and submits new ones as
``planner`` says, each batch with a fresh pilot token bound to its queue
(``POST /api/v1/factory/pilot_token``) written to a 0600 file: a token is never
on a command line. It needs a ``factory`` token (``--token-file`` or
``$DAWMS_TOKEN``) and nothing of the catalog: it installs with ``dawms[pilot]``.

Per-queue dirs under ``--workdir`` are named from the queue's safe characters and
a hash, so no queue name can put a file outside it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from dawms.pilot.factory import PILOT_ENDED, PilotFactory, PilotHandle, PilotStatus, get_factory
from dawms.pilot.factory.base import write_token_file
from dawms.pilot.factory.planner import QueuePlan, plan_queue, share
from dawms.pilot.main import TokenFileError, load_token

log = logging.getLogger("dawms.factory")
MAX_QUEUES = 100  # what the demand endpoint takes in one call
RESPONSE_MAX = 4 * 1024 * 1024


class ServerError(RuntimeError):
    """The server refused or could not be reached."""


class FactoryClient:
    """The two factory endpoints over HTTP, with a ``factory`` bearer token."""

    def __init__(self, server: str, token: str | None, timeout_s: float = 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=server.rstrip("/"), timeout=timeout_s,
                                  headers=headers)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, f"/api/v1/factory{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self._http.base_url}: {exc}") from None
        if len(resp.content) > RESPONSE_MAX:
            raise ServerError(f"{path}: answer larger than {RESPONSE_MAX} bytes")
        try:
            body = resp.json()
        except ValueError:
            raise ServerError(f"{path}: {resp.status_code} {resp.text[:200]!r}") from None
        if not isinstance(body, dict) or not body.get("success"):
            message = body.get("message") if isinstance(body, dict) else None
            raise ServerError(f"{path}: {resp.status_code} {str(message)[:500]}")
        return body.get("data")

    def demand(self, queues: list[str]) -> dict[str, dict[str, Any]]:
        data = self._call("GET", "/demand", params={"queue": queues})
        if not isinstance(data, dict):
            raise ServerError("/demand: not a table of queues")
        return data

    def pilot_token(self, queue: str, lifetime_s: int) -> str:
        data = self._call("POST", "/pilot_token",
                          json={"queues": [queue], "lifetime_s": lifetime_s})
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            raise ServerError("/pilot_token: no token in the answer")
        return data["token"]


def queue_dir(root: Path, queue: str) -> Path:
    """``root``/<the queue's safe characters>-<hash>: distinct per queue, always under root."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", queue)[:64]
    digest = hashlib.sha256(queue.encode()).hexdigest()[:8]
    path = (root / f"q-{safe}-{digest}").resolve()
    if path.parent != root.resolve():
        raise ValueError(f"queue {queue[:80]!r} would leave the work dir")
    return path


@dataclass
class Tracked:
    handle: PilotHandle
    queue: str
    token_file: Path | None
    status: PilotStatus = PilotStatus.PENDING


class Factory:
    """The factory loop's state: the pilots it submitted, by backend and id."""

    def __init__(self, client: FactoryClient, server_url: str, queues: list[str], workdir: Path,
                 *, max_total: int = 1000,
                 backends: Mapping[str, PilotFactory] | None = None) -> None:
        if not 1 <= len(queues) <= MAX_QUEUES:
            raise ValueError(f"serve 1 to {MAX_QUEUES} queues, not {len(queues)}")
        self.client, self.server_url, self.queues = client, server_url, list(dict.fromkeys(queues))
        self.workdir = Path(workdir).absolute()
        self.max_total = max_total
        self.backends: dict[str, PilotFactory] = dict(backends or {})
        self.pilots: dict[tuple[str, str], Tracked] = {}

    def backend(self, name: str) -> PilotFactory:
        if name not in self.backends:
            self.backends[name] = get_factory(name)
        return self.backends[name]

    def _backend_keys(self) -> dict[str, frozenset[str]]:
        from dawms.pilot.factory import registry

        keys = {}
        for name in registry.names():
            try:
                keys[name] = registry.load(name).settings_keys
            except Exception as exc:  # noqa: BLE001 (a backend whose deps are missing)
                log.debug("backend %s unavailable: %s", name, exc)
        return keys

    def sweep(self) -> dict[str, int]:
        """Poll every tracked pilot; clean up the ended ones. Returns counts by status."""
        counts: dict[str, int] = {}
        for key, t in list(self.pilots.items()):
            backend = self.backend(t.handle.backend)
            try:
                t.status = backend.poll(t.handle)
            except Exception as exc:  # noqa: BLE001 (a batch system hiccup: try next cycle)
                log.warning("cannot poll pilot %s: %s", t.handle.pilot_id, exc)
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
            if t.status in PILOT_ENDED:
                try:
                    backend.cleanup(t.handle)
                except Exception as exc:  # noqa: BLE001
                    log.warning("cannot clean up pilot %s: %s", t.handle.pilot_id, exc)
                    continue
                del self.pilots[key]
                log.info("pilot %s of %s ended %s", t.handle.pilot_id, t.queue, t.status.value)
                if t.token_file and not any(o.token_file == t.token_file
                                            for o in self.pilots.values()):
                    t.token_file.unlink(missing_ok=True)
        return counts

    def live(self, queue: str) -> tuple[int, int]:
        """(pending, running) pilots of ``queue``."""
        mine = [t.status for t in self.pilots.values() if t.queue == queue]
        pending = sum(1 for s in mine if s is PilotStatus.PENDING)
        return pending, len(mine) - pending

    def submit(self, plan: QueuePlan) -> list[PilotHandle]:
        backend = self.backend(str(plan.backend))
        qdir = queue_dir(self.workdir, plan.queue)
        token = self.client.pilot_token(plan.queue, plan.token_lifetime_s)
        token_file = write_token_file(qdir / "tokens", token)
        try:
            handles = backend.submit(self.server_url, plan.queue, plan.submit, qdir / "pilots",
                                     token_file=token_file, **plan.opts)
        except BaseException:
            token_file.unlink(missing_ok=True)
            raise
        for h in handles:
            self.pilots[(h.backend, h.id)] = Tracked(h, plan.queue, token_file)
        return handles

    def run_once(self) -> dict[str, Any]:
        """One cycle; returns what it saw and did, per queue."""
        statuses = self.sweep()
        demand = self.client.demand(self.queues)
        keys = self._backend_keys()
        plans = []
        for q in self.queues:
            pending, running = self.live(q)
            plans.append(plan_queue(q, demand.get(q) or {}, pending, running, keys))
        plans = share(plans, self.max_total - len(self.pilots))
        report: dict[str, Any] = {"pilots": statuses, "queues": {}}
        for plan in plans:
            pending, running = self.live(plan.queue)
            entry = {"activated": (demand.get(plan.queue) or {}).get("activated", 0),
                     "pending": pending, "running": running, "submitted": 0,
                     "backend": plan.backend, "reason": plan.reason}
            if plan.submit:
                try:
                    entry["submitted"] = len(self.submit(plan))
                except Exception as exc:  # noqa: BLE001 (one queue's failure stops no other)
                    entry["reason"] = f"submit failed: {str(exc)[:500]}"
                    log.error("queue %s: %s", plan.queue, entry["reason"])
                else:
                    log.info("queue %s: submitted %d %s pilots", plan.queue, entry["submitted"],
                             plan.backend)
            report["queues"][plan.queue] = entry
        return report

    def run(self, interval_s: float, stop: threading.Event, cycles: int = 0) -> None:
        """Cycle every ``interval_s`` until ``stop`` is set (or ``cycles`` were run)."""
        done = 0
        while not stop.is_set():
            try:
                self.run_once()
            except ServerError as exc:
                log.error("%s", exc)
            done += 1
            if cycles and done >= cycles:
                return
            stop.wait(interval_s)


def add_arguments(p: argparse.ArgumentParser, server_required: bool = True) -> None:
    """The factory's options (``dawms factory`` takes ``--server`` from the shell's own)."""
    if server_required:
        p.add_argument("--server", required=True, help="server base URL, e.g. http://host:8080")
    p.add_argument("--queue", action="append", required=True,
                   help="a queue to supply with pilots (repeat)")
    p.add_argument("--workdir", type=Path, required=True, help="pilot dirs, logs, token files")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the factory token (default: $DAWMS_TOKEN)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between cycles (60)")
    p.add_argument("--max-total", type=int, default=1000,
                   help="live pilots of this factory in all queues together (1000)")
    p.add_argument("--once", action="store_true", help="run one cycle, print it as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dawms-factory", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    add_arguments(p)
    return p


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping (pilots keep running)", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the factory as ``args`` (those of ``add_arguments``) say; the exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.server.startswith(("http://", "https://")):
        log.error("--server must be http(s)://...")
        return 2
    if not 1 <= args.max_total <= 100_000 or not 0.1 <= args.interval <= 86400:
        log.error("--max-total must be 1..100000 and --interval 0.1..86400 s")
        return 2
    try:
        token = load_token(args.token_file)
    except TokenFileError as exc:
        log.error("%s", exc)
        return 2
    client = FactoryClient(args.server, token)
    try:
        factory = Factory(client, args.server, args.queue, args.workdir,
                          max_total=args.max_total)
        if args.once:
            print(json.dumps(factory.run_once()))
            return 0
        stop = threading.Event()
        with _stop_on_signals(stop):
            factory.run(args.interval, stop)
        return 0
    except (ServerError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
