"""`make docs`: a screenshot of the monitor's task page, from a real demo run.

Runs ``dawms demo --serve --json`` in a temporary directory (the whole flow: a
server, pilots, 20 jobs), waits for its JSON result line (the jobs have ended;
the server keeps serving), logs in to the monitor with the demo's token in
headless Chromium (Playwright, Debian's ``/usr/bin/chromium``), screenshots the
task page to ``--out``, then interrupts the demo (its own process group).

    python scripts/monitor_screenshot.py --out docs/monitor-task.png
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where to write the PNG")
    p.add_argument("--chromium", default=os.environ.get("DAWMS_CHROMIUM", "/usr/bin/chromium"))
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dawms-docs-") as tmp:
        port = free_port()
        demo = subprocess.Popen([sys.executable, "-m", "dawms", "demo", "--serve", "--json",
                                 "--port", str(port), "--workdir", tmp],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True, text=True)
        try:
            assert demo.stdout is not None
            result = None
            for line in demo.stdout:  # the JSON line comes when the jobs have ended
                if line.startswith("{"):
                    result = json.loads(line)
                    break
            if result is None:
                print("the demo ended without a result", file=sys.stderr)
                return 1
            token = (Path(tmp) / "token").read_text().strip()
            url = f"http://127.0.0.1:{port}"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/monitor/login")
                page.fill("#token", token)
                page.click("#login")
                page.wait_for_selector("#jobs-by-site")
                page.goto(f"{url}/monitor/task/1")
                page.wait_for_selector("#task-jobs")
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGINT)  # the demo's own group: it stops its server
                try:
                    demo.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(demo.pid, signal.SIGKILL)
    print(f"wrote {out} ({out.stat().st_size} bytes); demo: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
