"""The shared tables keep ids, states and times whole at any width: key columns
never fold, other columns fold, and when even that cannot fit each row becomes a
block of ``key: value`` lines. Values are plain text, never rich markup."""

from __future__ import annotations

import re

import pytest

from dawms.commands._common import table

pytestmark = pytest.mark.cli

ROWS = [{"id": 9_000_000_000 + i, "task_id": 123456, "state": "transferring",
         "queue": "CERN-PROD_UCORE_LONG_QUEUE", "started_at": "2026-11-24T08:15:03.123456+00:00",
         "actor": "pilot:worker-node-0042.cluster.example.org:12345:abcdef",
         "reason": "stage-out to the write endpoint took longer than its deadline " * 2,
         "diag": "[red]not markup[/red] [/nope]"} for i in range(3)]
COLS = ["id", "task_id", "state", "queue", "started_at", "actor", "reason", "diag"]


@pytest.mark.parametrize("width", [40, 80, 200])
def test_keys_stay_whole_and_nothing_is_cut(width: int, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    table("jobs", ROWS, COLS)
    out = capsys.readouterr().out
    assert "…" not in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width, out
    for r in ROWS:
        assert re.search(rf"(?<!\d){r['id']}(?!\d)", out), out
    assert out.count("transferring") == 3 and out.count("2026-11-24 08:15:03") == 3
    if width >= 80:  # a table at 80: the queue name fits whole as well
        assert out.count("CERN-PROD_UCORE_LONG_QUEUE") == 3
    assert out.count("[red]not markup[/red] [/nope]") == 3 or width < 80


def test_no_rows_say_none(capsys: pytest.CaptureFixture[str]) -> None:
    table("jobs", [], COLS)
    assert capsys.readouterr().out == "jobs: none\n"
