"""Helpers of the Rucio bridge tests: the world a run makes in Rucio, datasets, waiting."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the Rucio server `make services` installs (its venv, rucio.cfg, logs)
RUCIO_DIR = Path(os.environ.get("DAWMS_RUCIO_SERVER_DIR", ROOT / ".services" / "rucio"))
# the HTTP Basic user hermes posts as (Basic is the only auth hermes has for elastic)
HERMES_USER, HERMES_SECRET = "hermes", "hermes-test-secret"


@dataclass(frozen=True)
class World:
    """What this run made in Rucio: a scope and RSEs, each a directory."""

    tag: str
    scope: str
    rses: dict[str, str]  # site name -> RSE name
    dirs: dict[str, Path]  # RSE name -> its storage root

    def rse(self, site: str) -> str:
        return self.rses[site]


def site_file(world: World, **queue: object) -> dict:
    """SITE_A and SITE_B, each a disk endpoint mapped to its RSE (``rse = ...``) and a queue."""
    cfg: dict = {"site": [], "endpoint": [], "queue": []}
    for site in ("SITE_A", "SITE_B"):
        rse = world.rse(site)
        cfg["site"].append({"name": site})
        cfg["endpoint"].append({"name": f"{site}_DISK", "site": site, "kind": "disk",
                                "url": f"file://{world.dirs[rse]}", "rse": rse})
        cfg["queue"].append({"name": f"{site}_PROD", "site": site,
                             "read_endpoints": [f"{site}_DISK"],
                             "write_endpoint": f"{site}_DISK", **queue})
    return cfg


def make_rucio_dataset(client, world: World, did: str, site: str, n: int, tmp: Path,  # type: ignore[no-untyped-def]
                       size: int = 3000, seed: int = 0) -> list[Path]:
    """Write ``n`` random files and upload them with Rucio's upload client to ``site``'s RSE."""
    from rucio.client.uploadclient import UploadClient

    scope, name = did.split(":")
    rnd = random.Random(seed)
    src = tmp / "src" / name
    src.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = src / f"{name}._{i:06d}"
        p.write_bytes(rnd.randbytes(size))
        paths.append(p)
    client.add_did(scope, name, "DATASET")
    UploadClient(_client=client).upload([
        {"path": str(p), "rse": world.rse(site), "did_scope": scope, "did_name": p.name,
         "dataset_scope": scope, "dataset_name": name} for p in paths])
    return paths


def unique(world: World, stem: str) -> str:
    """A dataset name no other test of this run (or any earlier run) used."""
    return f"{world.scope}:{stem}.{uuid.uuid4().hex[:8]}"


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)



class Forwarder:
    """A TCP forwarder in front of the Rucio server, to take Rucio away and bring it back.

    ``down()`` closes the listening port (connections are refused, as from a
    server that is gone); ``up()`` listens on the same port again.
    """

    def __init__(self, target_url: str) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = 0
        self.connections = 0
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Forwarder:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self.port = srv.getsockname()[1]
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the established ones (keep-alive included)."""
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._open.clear()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
