"""An emulated tape library, faithful enough to measure a carousel against.

A library has a number of drives; files live on cartridges at positions (written
in order, so the files written together sit together). A drive that takes a new
cartridge spends ``mount_s`` (unload, load, thread, locate the first file), then
reads the queued files of that cartridge in position order, ``per_file_s`` plus
``size / read_bytes_s`` each; a file queued behind the head costs ``seek_s`` more
(a reposition). Drives take the cartridge whose oldest queued recall is oldest
(CTA's age-first mount policy), and a cartridge is in one drive at a time. So
the order of recalls matters: the files of one cartridge asked together are read
in one mount; the same files asked at random cost a mount each time.

Time comes from an injected clock: ``SimClock`` for simulated time (the
benchmark advances it from event to event, nothing sleeps) or ``ScaledClock``
for real time, optionally sped up (the server's tape worker). The library knows
no database: ``submit`` queues recalls, ``advance`` plays time forward to the
clock's now and returns the recalls that ended, ok or with an error. Faults are
injected through ``fail`` (a callable that may return an error for a recall).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since an arbitrary start."""
        ...


class SimClock:
    """Simulated time: only ``set`` / ``advance`` move it."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        if t < self.t:
            raise ValueError(f"time does not run backwards ({t} < {self.t})")
        self.t = t

    def advance(self, dt: float) -> None:
        self.set(self.t + dt)


class ScaledClock:
    """Real (monotonic) time, ``scale`` times faster: scale 100 makes a 90 s mount 0.9 s."""

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError("the time scale must be positive")
        self.scale, self._t0 = scale, time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale


@dataclass(frozen=True)
class TapeConfig:
    """The library's hardware. Defaults: an LTO-class library (90 s mount, 300 MB/s)."""

    drives: int = 4
    mount_s: float = 90.0
    per_file_s: float = 2.0
    seek_s: float = 30.0
    read_bytes_s: float | None = 300e6
    cartridge_bytes: int = 12 * 10**12
    time_scale: float = 1.0  # for ScaledClock in the server

    def __post_init__(self) -> None:
        if self.drives < 1 or self.cartridge_bytes < 1:
            raise ValueError("a tape library needs at least one drive and a positive capacity")
        for name in ("mount_s", "per_file_s", "seek_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"tape {name} must be a finite number >= 0")
        if self.read_bytes_s is not None and not self.read_bytes_s > 0:
            raise ValueError("tape read_bytes_s must be positive")

    @classmethod
    def from_env(cls) -> TapeConfig:
        """``DAWMS_TAPE_<FIELD>`` over the defaults (``DAWMS_TAPE_READ_BYTES_S=0``: no rate)."""
        values: dict[str, float | int | None] = {}
        for name, kind in (("drives", int), ("mount_s", float), ("per_file_s", float),
                           ("seek_s", float), ("read_bytes_s", float),
                           ("cartridge_bytes", int), ("time_scale", float)):
            env = os.environ.get(f"DAWMS_TAPE_{name.upper()}")
            if env is None:
                continue
            try:
                values[name] = kind(float(env))
            except ValueError:
                raise ValueError(f"DAWMS_TAPE_{name.upper()}={env!r} is not a number") from None
        if values.get("read_bytes_s") == 0:
            values["read_bytes_s"] = None
        return cls(**values)  # type: ignore[arg-type]

    def read_s(self, size: int) -> float:
        return self.per_file_s + (size / self.read_bytes_s if self.read_bytes_s else 0.0)


@dataclass
class Recall:
    key: Hashable
    cartridge: str
    position: int
    size: int
    submitted: float


@dataclass(frozen=True)
class Ended:
    """A recall that ended at ``at`` (library seconds); ``error`` is "" when it was read."""

    key: Hashable
    at: float
    error: str = ""


@dataclass
class Drive:
    name: str
    cartridge: str | None = None
    head: int = -1
    busy_until: float = 0.0
    reading: Recall | None = None
    mounting: bool = False
    busy_s: float = 0.0


@dataclass
class Stats:
    mounts: int = 0
    reads: int = 0
    failures: int = 0
    seeks: int = 0
    mounts_by_cartridge: dict[str, int] = field(default_factory=dict)


class TapeLibrary:
    """Drives, cartridges and the queue of recalls, played forward by ``advance``."""

    def __init__(self, cfg: TapeConfig | None = None, clock: Clock | None = None,
                 fail: Callable[[Hashable], str | None] | None = None) -> None:
        self.cfg = cfg or TapeConfig()
        self.clock = clock or ScaledClock(self.cfg.time_scale)
        self.fail = fail
        self.drives = [Drive(f"drive{i}") for i in range(self.cfg.drives)]
        self.queued: dict[str, dict[Hashable, Recall]] = {}  # cartridge -> recalls
        self.known: set[Hashable] = set()  # queued or being read
        self.stats = Stats()
        self.t = self.clock.now()

    # ------------------------------------------------------------------ requests
    def submit(self, key: Hashable, cartridge: str, position: int, size: int) -> bool:
        """Queue a recall; False if ``key`` is queued or being read already."""
        if key in self.known:
            return False
        self.known.add(key)
        self.queued.setdefault(cartridge, {})[key] = Recall(key, cartridge, position, size,
                                                            self.clock.now())
        return True

    def cancel(self, keys: set[Hashable]) -> int:
        """Drop queued recalls (a read in progress finishes); returns how many."""
        n = 0
        for cart in list(self.queued):
            for key in [k for k in self.queued[cart] if k in keys]:
                del self.queued[cart][key]
                self.known.discard(key)
                n += 1
            if not self.queued[cart]:
                del self.queued[cart]
        return n

    def pending(self) -> int:
        return sum(len(q) for q in self.queued.values()) + sum(
            1 for d in self.drives if d.reading is not None)

    # ------------------------------------------------------------------ time
    def next_event(self) -> float | None:
        """When the next recall ends or mount completes (None: nothing is going on)."""
        busy = [d.busy_until for d in self.drives if d.mounting or d.reading is not None]
        if busy:
            return min(busy)
        return self.t if self._startable() else None

    def advance(self) -> list[Ended]:
        """Play the library forward to the clock's now; the recalls that ended, in order."""
        now = max(self.clock.now(), self.t)
        ended: list[Ended] = []
        self._dispatch(self.t)
        while True:
            active = [d for d in self.drives if d.mounting or d.reading is not None]
            if not active:
                break
            drive = min(active, key=lambda d: (d.busy_until, d.name))
            if drive.busy_until > now:
                break
            self.t = drive.busy_until
            if drive.mounting:
                drive.mounting = False
            else:
                rec = drive.reading
                assert rec is not None
                drive.reading = None
                self.known.discard(rec.key)
                error = self.fail(rec.key) if self.fail else None
                if error:
                    self.stats.failures += 1
                else:
                    self.stats.reads += 1
                ended.append(Ended(rec.key, self.t, error or ""))
            self._next_read(drive, self.t)
            self._dispatch(self.t)
        self.t = now
        self._dispatch(now)
        return ended

    # ------------------------------------------------------------------ scheduling
    def _startable(self) -> bool:
        mounted = {d.cartridge for d in self.drives}
        idle = [d for d in self.drives if not d.mounting and d.reading is None]
        return any(cart in self.queued and (d.cartridge == cart or cart not in mounted)
                   for d in idle for cart in self.queued)

    def _next_read(self, drive: Drive, t: float) -> None:
        """Start the drive's next recall on its cartridge, if one is queued."""
        queue = self.queued.get(drive.cartridge or "")
        if not queue:
            return
        ahead = [r for r in queue.values() if r.position > drive.head]
        rec = min(ahead or queue.values(), key=lambda r: r.position)
        cost = self.cfg.read_s(rec.size)
        if not ahead:  # behind the head: reposition first
            cost += self.cfg.seek_s
            self.stats.seeks += 1
        del queue[rec.key]
        if not queue:
            del self.queued[rec.cartridge]
        drive.reading, drive.head = rec, rec.position
        drive.busy_until = t + cost
        drive.busy_s += cost

    def _dispatch(self, t: float) -> None:
        """Give work to idle drives: more of their own cartridge, or mount the next one."""
        for drive in self.drives:
            if drive.mounting or drive.reading is not None:
                continue
            if drive.cartridge in self.queued:
                self._next_read(drive, t)
                continue
            mounted = {d.cartridge for d in self.drives if d is not drive}
            free = [c for c in self.queued if c not in mounted]
            if not free:
                continue
            cart = min(free, key=lambda c: (min(r.submitted for r in self.queued[c].values()),
                                            -len(self.queued[c]), c))
            drive.cartridge, drive.head, drive.mounting = cart, -1, True
            drive.busy_until = t + self.cfg.mount_s
            drive.busy_s += self.cfg.mount_s
            self.stats.mounts += 1
            self.stats.mounts_by_cartridge[cart] = self.stats.mounts_by_cartridge.get(cart, 0) + 1
