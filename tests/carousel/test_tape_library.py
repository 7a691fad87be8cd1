"""The emulated tape library: mounts, drives, cartridges, order, faults, simulated time."""

from __future__ import annotations

import random
import time

import pytest

from dawms.ddm_bridge.local.tape import ScaledClock, SimClock, TapeConfig, TapeLibrary

pytestmark = pytest.mark.carousel
CFG = TapeConfig(drives=2, mount_s=100, per_file_s=10, seek_s=50, read_bytes_s=None)


def drain(lib: TapeLibrary, clock: SimClock) -> list:
    ended = []
    while (t := lib.next_event()) is not None:
        clock.set(max(t, clock.now()))
        ended += lib.advance()
    return ended


def test_files_of_one_cartridge_asked_together_cost_one_mount() -> None:
    clock = SimClock()
    lib = TapeLibrary(CFG, clock)
    for i in range(10):
        lib.submit(("f", i), "C1", i, 1)
    ended = drain(lib, clock)
    assert [e.key for e in ended] == [("f", i) for i in range(10)]  # position order
    assert lib.stats.mounts == 1 and clock.now() == 100 + 10 * 10
    assert not any(e.error for e in ended)


def test_grouped_order_beats_random_order() -> None:
    """The same 40 files on 4 cartridges, asked in bunches of 5: by cartridge vs at random."""
    files = [(c, p) for c in range(4) for p in range(10)]

    def stage(order: list) -> tuple[float, int]:
        clock = SimClock()
        lib = TapeLibrary(CFG, clock)
        for start in range(0, len(order), 5):  # a window of 5 recalls at a time
            for c, p in order[start:start + 5]:
                lib.submit((c, p), f"C{c}", p, 1)
            drain(lib, clock)
        return clock.now(), lib.stats.mounts

    grouped = stage(files)
    shuffled = list(files)
    random.Random(1).shuffle(shuffled)
    rand = stage(shuffled)
    assert grouped[1] <= 8 < rand[1]
    assert grouped[0] < rand[0]


def test_drives_work_in_parallel_and_a_cartridge_is_in_one_drive() -> None:
    clock = SimClock()
    lib = TapeLibrary(CFG, clock)
    for c in ("A", "B", "C"):
        for p in range(3):
            lib.submit((c, p), c, p, 1)
    drain(lib, clock)
    # two drives: A and B at once (130 s), then C on the first free drive
    assert clock.now() == pytest.approx(130 + 130)
    assert lib.stats.mounts == 3
    assert sum(d.busy_s for d in lib.drives) == pytest.approx(3 * 130)


def test_a_recall_behind_the_head_costs_a_seek() -> None:
    clock = SimClock()
    lib = TapeLibrary(CFG, clock)
    lib.submit("late", "C", 5, 1)
    clock.set(105)  # mounted, reading position 5
    lib.advance()
    lib.submit("early", "C", 1, 1)
    drain(lib, clock)
    assert lib.stats.seeks == 1 and lib.stats.mounts == 1
    assert clock.now() == pytest.approx(100 + 10 + 10 + 50)


def test_injected_faults_end_the_recall_with_an_error() -> None:
    clock = SimClock()
    lib = TapeLibrary(CFG, clock, fail=lambda key: "medium error" if key == 2 else None)
    for i in range(4):
        lib.submit(i, "C", i, 1)
    ended = {e.key: e.error for e in drain(lib, clock)}
    assert ended == {0: "", 1: "", 2: "medium error", 3: ""}
    assert (lib.stats.reads, lib.stats.failures) == (3, 1)


def test_submit_is_idempotent_and_cancel_drops_queued_recalls() -> None:
    clock = SimClock()
    lib = TapeLibrary(CFG, clock)
    assert lib.submit("a", "C", 0, 1) and not lib.submit("a", "C", 0, 1)
    lib.submit("b", "C", 1, 1)
    assert lib.cancel({"b"}) == 1 and lib.pending() == 1
    assert [e.key for e in drain(lib, clock)] == ["a"]


def test_simulated_time_never_sleeps_and_scaled_time_runs_faster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimClock()
    lib = TapeLibrary(TapeConfig(drives=1, mount_s=3600, per_file_s=3600), clock)
    lib.submit("x", "C", 0, 1)

    def no_sleep(_s: float) -> None:
        raise AssertionError("the simulated library slept")

    with monkeypatch.context() as m:  # real time stands still and sleeping is an error:
        m.setattr(time, "sleep", no_sleep)  # two simulated hours pass all the same
        m.setattr(time, "monotonic", lambda: 1000.0)
        m.setattr(time, "time", lambda: 1000.0)
        drain(lib, clock)
    assert clock.now() == pytest.approx(7200) and lib.pending() == 0
    with pytest.raises(ValueError, match="backwards"):
        clock.set(1)
    fast = ScaledClock(1000)
    t1 = fast.now()
    time.sleep(0.01)
    assert fast.now() - t1 >= 10 * 0.9


def test_config_is_validated_and_read_from_the_environment(monkeypatch) -> None:
    with pytest.raises(ValueError, match="at least one drive"):
        TapeConfig(drives=0)
    with pytest.raises(ValueError, match="mount_s"):
        TapeConfig(mount_s=float("nan"))
    monkeypatch.setenv("DAWMS_TAPE_DRIVES", "6")
    monkeypatch.setenv("DAWMS_TAPE_READ_BYTES_S", "0")
    cfg = TapeConfig.from_env()
    assert (cfg.drives, cfg.read_bytes_s, cfg.read_s(10**9)) == (6, None, cfg.per_file_s)
    monkeypatch.setenv("DAWMS_TAPE_MOUNT_S", "soon")
    with pytest.raises(ValueError, match="DAWMS_TAPE_MOUNT_S"):
        TapeConfig.from_env()
