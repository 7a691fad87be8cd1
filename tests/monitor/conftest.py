"""Fixtures of the monitor tests: the world, a real HTTP server over it, a headless browser.

The server is uvicorn serving ``create_app`` (auth on) on a free loopback port in a
thread of the test process; the browser is Debian's ``chromium`` driven by
Playwright (never ``playwright install``). Screenshots go to ``tmp_path`` only.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from world import World, build

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM

CHROMIUM = os.environ.get("DAWMS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]


@pytest.fixture
def world(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> World:
    return build(db, ddm, tmp_path)


@pytest.fixture
def live_server(db: Database, ddm: LocalDDM, world: World) -> Iterator[str]:
    import uvicorn

    from dawms.server.app import create_app
    from dawms.server.settings import ServerSettings

    app = create_app(db, ddm, settings=ServerSettings(auth="on"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/readyz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(20)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}; run `make services`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()
