"""The monitor in a real browser: headless Chromium (Debian's) driven by Playwright.

Log in with a token, open the dashboard, follow the task to its failed job and its
log, filter, page, see a plot render and the dashboard refresh itself; a job
diagnostic and a log line holding ``<script>`` show as text and never run.
Screenshots go to ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from world import XSS, World

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.task import submit

pytestmark = pytest.mark.monitor
TIMEOUT_MS = 20000


@pytest.fixture
def page(browser: Any, live_server: str, make_token: Callable[..., str]) -> Iterator[Any]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(f"{live_server}/monitor/")
    assert tab.locator("#login").is_visible()  # a page without the cookie: the login form
    tab.fill("#token", make_token("reader", "browser"))
    tab.click("#login")
    tab.wait_for_selector("#jobs-by-site")
    cookie = next(c for c in context.cookies() if c["name"] == "dawms_monitor")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "token" not in tab.url and "eyJ" not in tab.url
    yield tab
    context.close()


def test_dashboard_task_failed_job_and_its_log(page: Any, world: World, tmp_path: Path) -> None:
    page.click("text=tasks")
    page.click(f"a[href='/monitor/task/{world.task_id}'] >> nth=1")  # the name's link
    page.wait_for_selector("#task-errors")
    assert page.locator("h1").inner_text().startswith(f"task {world.task_id}: mon<b>task</b>")
    page.click("#task-errors a:text('payload')")  # errors grouped -> the failed jobs
    page.wait_for_selector("table.jobs")
    page.click(f"table.jobs a[href='/monitor/job/{world.failed}']")
    page.wait_for_selector("#error-diag")
    assert page.locator("#error-diag").inner_text() == f"payload exited 3: {XSS}"
    log = page.locator("pre.log[data-member$='payload.stdout']").inner_text()
    assert f"payload said {XSS}" in log
    assert page.evaluate("typeof window.__pwned") == "undefined"  # shown, never run
    assert page.locator("main script").count() == 0
    with page.expect_download() as download:
        page.click("#log-download")
    assert download.value.suggested_filename.endswith(".log.tgz")
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
    assert (tmp_path / "job.png").stat().st_size > 0


def test_filter_and_page(page: Any, live_server: str, world: World) -> None:
    page.goto(f"{live_server}/monitor/jobs")
    page.fill("input[name=state]", "failed")
    page.click("form.filters button")
    page.wait_for_url("**/monitor/jobs?*state=failed*")
    states = page.locator("table.jobs tbody .state").all_inner_texts()
    assert states == ["failed"]
    page.goto(f"{live_server}/monitor/jobs?limit=2")
    first = page.locator("table.jobs tbody tr td:first-child").all_inner_texts()
    page.click("a.next")
    page.wait_for_url("**before=*")
    second = page.locator("table.jobs tbody tr td:first-child").all_inner_texts()
    assert len(first) == 2 and second and int(second[0]) < int(first[-1])
    assert sorted(map(int, first + second), reverse=True) == sorted(world.jobs,
                                                                    reverse=True)[:4]


def test_a_plot_renders(page: Any, live_server: str, world: World, tmp_path: Path) -> None:
    page.goto(f"{live_server}/monitor/stats?site=SITE_A&bin_hours=24")
    page.wait_for_selector("#plots svg.plot")
    plots = page.locator("#plots svg.plot")
    assert plots.count() == 4
    bars = plots.first.locator("rect[fill='#2e7d32'], rect[fill='#c62828']")
    assert bars.count() >= 3  # the legend's two squares and at least one bar
    box = plots.first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50
    plots.first.screenshot(path=str(tmp_path / "plot.png"))


def test_the_dashboard_refreshes_itself(page: Any, db: Database, ddm: LocalDDM,
                                        world: World) -> None:
    assert "registered" not in page.locator("#live").inner_text()
    with db.session() as s:
        submit(s, {"name": "another", "transformation": "true {inputs}",
                   "input_datasets": ["t:raw.A"], "output_dataset": "t:more.{task_id}",
                   "split": {"files_per_job": 2}}, ddm)
    # no reload: monitor.js fetches the page again within its 10 s and swaps #live in
    # (the page's CSP forbids eval, so Playwright's string predicates cannot run there)
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect(page.locator("#live")).to_contain_text("registered", timeout=30000)
    assert page.locator("#refreshed").inner_text().startswith("refreshed")
