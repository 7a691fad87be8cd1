"""The README's usage blocks work when pasted: every fenced ``sh`` block whose first
line is ``# test: readme`` runs, in order, as one bash script (``set -euo
pipefail``) in a fresh temporary directory, with ``dawms`` on PATH, against a real
``dawms server`` on a fresh catalog (``DAWMS_SERVER`` and ``DAWMS_DB_URL`` point at
it; no token is given: the blocks get their own).

The markdown file is ``$DAWMS_README`` (default: the repository's README.md), so
a draft can be proven before it is pasted. A file with no marked block fails:
a README that tests nothing must not pass."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dawms.catalog.db import Database

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
MARK = "# test: readme"
FENCE = re.compile(r"^```(?:sh|bash|shell)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def marked_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced sh blocks whose first line is the marker."""
    return [body for body in FENCE.findall(markdown)
            if body.lstrip("\n").splitlines()[:1] == [MARK]]


def test_marked_blocks_are_found_and_only_those() -> None:
    md = ("x\n```sh\n# test: readme\necho one\n```\n\n```sh\necho unmarked\n```\n"
          "```python\n# test: readme\nprint()\n```\n```bash\n# test: readme\necho two\n```\n")
    assert marked_blocks(md) == ["# test: readme\necho one\n", "# test: readme\necho two\n"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bare_server(db: Database, tmp_path: Path) -> Iterator[str]:
    """A real `dawms server` on a catalog with nothing in it (the README adds sites)."""
    port = _free_port()
    env = {**os.environ, "DAWMS_DB_URL": db.url, "DAWMS_AUTH": "on", "DAWMS_INTERVAL_S": "1",
           "DAWMS_HEARTBEAT_S": "1", "DAWMS_TRANSFER_INTERVAL_S": "0.5"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed after the yield)
    proc = subprocess.Popen([sys.executable, "-m", "dawms", "server", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            httpx.get(f"{url}/readyz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def test_readme_usage_blocks_run_against_a_real_server(
        db: Database, bare_server: str, tmp_path: Path) -> None:
    readme = Path(os.environ.get("DAWMS_README") or ROOT / "README.md")
    blocks = marked_blocks(readme.read_text())
    assert blocks, f"{readme} has no ```sh block starting with {MARK!r}"
    work = tmp_path / "fresh"
    work.mkdir()
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if k not in ("DAWMS_TOKEN", "DAWMS_CONFIG")}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "DAWMS_SERVER": bare_server, "DAWMS_DB_URL": db.url, "COLUMNS": "80",
                "HOME": str(tmp_path / "home")})
    proc = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:  # pilots started in the background go with their session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.returncode == 0, f"{readme}'s blocks failed:\n{out}"
    assert "Traceback" not in out, out
