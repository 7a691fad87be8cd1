"""The release policy on its own: limits, lookahead, fair share, cartridges, FIFO."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dawms.carousel.config import CarouselConfig, TapeLimits, parse_shares
from dawms.carousel.release import Candidate, _water_fill, choose, lookahead

pytestmark = pytest.mark.carousel
T0 = datetime(2030, 1, 1, tzinfo=UTC)
CFG = CarouselConfig(share_targets={"a": 0.5, "b": 0.3, "c": 0.2})


def cands(share: str, n: int, *, request: int, priority: int = 500, age: int = 0,
          cart: str | None = None, size: int = 10, start_id: int = 0) -> list[Candidate]:
    return [Candidate(start_id + i, request, start_id + i, size, i, share, priority,
                      T0 + timedelta(seconds=age), cart and f"{cart}{i // 10}", i % 10)
            for i in range(n)]


def test_never_more_than_the_limit_staging() -> None:
    limits = TapeLimits(max_files=100, max_bytes=10**6, max_percent=50)
    pool = cands("a", 200, request=1)
    assert len(choose(pool, limits, 0, 0, {}, CFG)) == 50
    assert len(choose(pool, limits, 45, 0, {}, CFG)) == 5
    assert choose(pool, limits, 50, 0, {}, CFG) == []
    by_bytes = TapeLimits(max_files=100, max_bytes=200, max_percent=50)  # 100 bytes staging
    assert sum(c.size for c in choose(pool, by_bytes, 0, 0, {}, CFG)) == 100
    assert choose(pool, by_bytes, 1, 95, {}, CFG) == []


def test_lookahead_is_shared_by_targets_and_given_away_when_unused() -> None:
    assert _water_fill({"a": 100, "b": 100, "c": 100}, {"a": .5, "b": .3, "c": .2}, 100) == \
        {"a": 50, "b": 30, "c": 20}
    assert _water_fill({"a": 100, "b": 5, "c": 100}, {"a": .5, "b": .3, "c": .2}, 100) == \
        {"a": 68, "b": 5, "c": 27}
    pool = cands("a", 100, request=1) + cands("b", 100, request=2, start_id=1000)
    ahead = lookahead(pool, TapeLimits(max_files=40), 0, 0, CFG)
    assert {s: len(v) for s, v in ahead.items()} == {"a": 25, "b": 15}


def test_the_share_furthest_below_its_target_goes_first() -> None:
    limits = TapeLimits(max_files=1000, max_percent=1)  # 10 at a time
    pool = (cands("a", 50, request=1) + cands("b", 50, request=2, start_id=100)
            + cands("c", 50, request=3, start_id=200))
    cfg = CarouselConfig(share_targets=CFG.share_targets, bunch_files=10)
    # a got far more than its half lately: b (0.3) is furthest below
    assert {c.share for c in choose(pool, limits, 0, 0, {"a": 900, "b": 50, "c": 50}, cfg)} \
        == {"b"}
    assert {c.share for c in choose(pool, limits, 0, 0, {"a": 500, "b": 400, "c": 10},
                                    cfg)} == {"c"}


def test_within_a_share_priority_then_age() -> None:
    limits = TapeLimits(max_files=20, max_percent=50)
    old_low = cands("a", 10, request=1, priority=100, age=0)
    new_high = cands("a", 10, request=2, priority=900, age=60, start_id=100)
    old_high = cands("a", 10, request=3, priority=900, age=30, start_id=200)
    got = choose(old_low + new_high + old_high, limits, 0, 0, {},
                 CarouselConfig(bunch_files=10))
    assert {c.request_id for c in got} == {3}


def test_files_of_one_cartridge_go_together_across_requests() -> None:
    limits = TapeLimits(max_files=1000, max_percent=2)  # 20 at a time
    a = cands("a", 20, request=1, cart="X")  # X0, X1
    b = cands("a", 10, request=2, age=5, cart="X", start_id=100)  # X0 too
    got = choose(a + b, limits, 0, 0, {}, CFG)
    assert {c.cartridge for c in got} == {"X0"} and len(got) == 20
    assert [c.tape_position for c in got] == sorted(c.tape_position for c in got)


def test_cartridges_being_read_are_continued_before_new_ones() -> None:
    limits = TapeLimits(max_files=100, max_percent=10)  # 10 at a time
    pool = cands("a", 20, request=1, cart="Y") + cands("b", 20, request=2, cart="Z",
                                                        start_id=100)
    # b is far below its target, but Y1 has files staging: continue it first
    got = choose(pool, limits, 4, 0, {"a": 1000}, CFG, mounted={"Y1"})
    assert {c.cartridge for c in got} == {"Y1"} and len(got) == 6
    fresh = choose(pool, limits, 0, 0, {"a": 1000}, CFG)
    assert {c.cartridge for c in fresh} == {"Z0"}  # the share below its target starts one


def test_fifo_takes_the_oldest_requests_in_dataset_order() -> None:
    limits = TapeLimits(max_files=20, max_percent=50)
    pool = cands("c", 8, request=2, age=10, start_id=100) + cands("a", 8, request=1)
    got = choose(pool, limits, 0, 0, {}, CarouselConfig(policy="fifo"))
    assert [c.request_id for c in got] == [1] * 8 + [2] * 2


def test_share_targets_are_parsed_strictly() -> None:
    assert parse_shares("a=0.5, b=0.3,c=2") == {"a": .5, "b": .3, "c": 2.0}
    for bad in ("a", "a=", "a=-1", "=1", "a=nan", "a=inf"):
        with pytest.raises(ValueError, match="name=<positive number>"):
            parse_shares(bad)
    with pytest.raises(ValueError, match="policy"):
        CarouselConfig(policy="random")
