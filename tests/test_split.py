"""Splitting input files into jobs: files per job, GB per job, both, and the edge cases.

``split_files`` is pure, so these tests need no database: they feed sized stand-ins
for catalog files and check the chunks (order kept, every file exactly once).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dawms.scheduler.split import split_files

GB = 10**9


@dataclass(frozen=True)
class F:
    name: str
    size: int


def files(*sizes: int) -> list[F]:
    return [F(f"f{i}", s) for i, s in enumerate(sizes)]


def names(chunks: list[list[F]]) -> list[list[str]]:
    return [[f.name for f in c] for c in chunks]


def flat(chunks: list[list[F]]) -> list[F]:
    return [f for c in chunks for f in c]


def test_files_per_job_keeps_order_and_every_file_once() -> None:
    fs = files(*[100] * 10)
    chunks = split_files(fs, {"files_per_job": 3})
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert flat(chunks) == fs


def test_files_per_job_exact_multiple_makes_no_empty_tail() -> None:
    chunks = split_files(files(*[1] * 6), {"files_per_job": 2})
    assert names(chunks) == [["f0", "f1"], ["f2", "f3"], ["f4", "f5"]]


def test_gb_per_job_fills_up_to_the_cap_inclusive() -> None:
    # 0.5 GB + 0.5 GB == 1 GB is allowed; a third would pass the cap
    fs = files(GB // 2, GB // 2, GB // 2, GB // 2, GB // 2)
    chunks = split_files(fs, {"gb_per_job": 1})
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(sum(f.size for f in c) <= GB for c in chunks)
    assert flat(chunks) == fs


def test_gb_per_job_accepts_fractions() -> None:
    fs = files(300_000_000, 300_000_000, 300_000_000)
    chunks = split_files(fs, {"gb_per_job": 0.6})
    assert [len(c) for c in chunks] == [2, 1]


def test_both_rules_the_stricter_one_wins() -> None:
    small = files(*[100_000_000] * 7)  # 0.1 GB each: the file count binds
    assert [len(c) for c in split_files(small, {"files_per_job": 3, "gb_per_job": 1})] \
        == [3, 3, 1]
    big = files(*[400_000_000] * 7)  # 0.4 GB each: the size binds
    assert [len(c) for c in split_files(big, {"files_per_job": 3, "gb_per_job": 1})] \
        == [2, 2, 2, 1]


def test_a_file_larger_than_the_cap_gets_a_job_of_its_own() -> None:
    fs = files(100, 5 * GB, 100, 100)
    chunks = split_files(fs, {"gb_per_job": 1})
    assert names(chunks) == [["f0"], ["f1"], ["f2", "f3"]]
    only = split_files(files(3 * GB), {"gb_per_job": 1})
    assert names(only) == [["f0"]]


def test_oversized_files_in_a_row_are_not_merged() -> None:
    chunks = split_files(files(2 * GB, 2 * GB), {"gb_per_job": 1, "files_per_job": 5})
    assert names(chunks) == [["f0"], ["f1"]]


def test_empty_input_gives_no_jobs() -> None:
    assert split_files([], {"files_per_job": 2}) == []
    assert split_files([], {"gb_per_job": 1}) == []


def test_zero_sized_files_count_against_files_per_job_only() -> None:
    chunks = split_files(files(0, 0, 0, 0, 0), {"gb_per_job": 1, "files_per_job": 2})
    assert [len(c) for c in chunks] == [2, 2, 1]


@pytest.mark.parametrize("rule", [
    {},
    {"events_per_job": 100},  # a rule dawms does not have
    {"files_per_job": 0, "gb_per_job": 0},
    {"files_per_job": None},
    {"gb_per_job": "lots"},
    {"files_per_job": -1},
    {"gb_per_job": -1},
], ids=["empty", "unknown-rule", "zeros", "none", "non-number", "negative-files",
        "negative-gb"])
def test_an_invalid_rule_raises(rule: dict) -> None:
    with pytest.raises(ValueError):
        split_files(files(100, 200, 300), rule)
