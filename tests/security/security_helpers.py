"""Helpers for the security tests: a tree snapshot, running a real pilot process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pilot"))

from pilot_helpers import StubServer  # noqa: E402


def tree(root: Path, *skip: Path) -> dict[str, bytes]:
    """Every file and link under ``root`` (outside the ``skip`` folders) -> its bytes."""
    out = {}
    skipped = [str(p) for p in skip]
    for dirpath, dirnames, filenames in os.walk(root):
        if any(dirpath == s or dirpath.startswith(s + os.sep) for s in skipped):
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            out[path] = (b"link:" + os.readlink(path).encode() if os.path.islink(path)
                         else Path(path).read_bytes())
    return out


def run_pilot(stub: StubServer, workdir: Path, *, timeout: float = 120) -> str:
    """Run a real ``dawms-pilot`` process for one job; its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "dawms.pilot", "--server", stub.url, "--queue", "Q",
         "--workdir", str(workdir), "--max-jobs", "1", "--idle-timeout", "5",
         "--poll-interval", "0.1", "--kill-grace", "1"],
        capture_output=True, text=True, timeout=timeout, cwd=workdir.parent)
    return proc.stderr


def final_report(stub: StubServer) -> dict[str, Any]:
    updates = stub.updates()
    assert updates, "the pilot reported nothing"
    return updates[-1]
