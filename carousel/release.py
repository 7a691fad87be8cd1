"""Release: which queued files of a tape to ask for now, in bunches, within the limits.

Per tape endpoint and cycle. The carousel looks ahead at most ``max_files`` files
queued + staging (``max_bytes`` likewise); that lookahead is shared between the
shares with work by their targets (water-filled: a share with less work leaves
its part to the others), each share's part taken in task priority and age
order. Of the lookahead, at most ``max_percent`` may be staging at once, and
nothing is released beyond it. Then, while there is room: first more of the
cartridges that already have files staging (they are in a drive or next in
line, so more of them costs no mount), in tape order; else the share furthest
below its target (delivered bytes over the fair-share window) starts the
cartridge of its first file, or, where the DDM does not say where files sit,
takes the next files of its first request. What does not fit waits for room.

``policy = "fifo"`` releases the oldest requests' files first, in dataset order,
as room allows: what a carousel without shares or locality does (the benchmark
compares the two on the same requests).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .config import CarouselConfig, TapeLimits


@dataclass
class Candidate:
    """A queued file that may be released."""

    id: int  # staging_file id
    request_id: int
    file_id: int
    size: int
    position: int  # in its dataset
    share: str
    priority: int
    created: datetime
    cartridge: str | None = None
    tape_position: int = 0

    def order(self) -> tuple:
        """Within a share: task priority, then age, then dataset order."""
        return (-self.priority, self.created, self.request_id, self.position)


def _water_fill(sizes: dict[str, int], weights: dict[str, float], total: int) -> dict[str, int]:
    """Split ``total`` slots by ``weights``; a share needing less gives the rest away."""
    alloc = {s: 0 for s in sizes}
    left, active = total, {s for s in sizes if sizes[s] > 0}
    while left > 0 and active:
        wsum = sum(weights[s] for s in active)
        grant = {s: max(1, math.floor(left * weights[s] / wsum)) for s in active}
        progressed = 0
        for s in sorted(active, key=lambda x: -weights[x]):
            take = min(grant[s], sizes[s] - alloc[s], left - progressed)
            alloc[s] += take
            progressed += take
        left -= progressed
        active = {s for s in active if alloc[s] < sizes[s]}
        if not progressed:
            break
    return alloc


def lookahead(cands: list[Candidate], limits: TapeLimits, staging_files: int,
              staging_bytes: int, cfg: CarouselConfig) -> dict[str, list[Candidate]]:
    """Each share's part of the ``max_files``/``max_bytes`` lookahead, in its order."""
    by_share: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_share[c.share].append(c)
    for lst in by_share.values():
        lst.sort(key=Candidate.order)
    weights = {s: cfg.target(s) for s in by_share}
    files = _water_fill({s: len(v) for s, v in by_share.items()}, weights,
                        max(0, limits.max_files - staging_files))
    byte_room = math.inf if limits.max_bytes is None else limits.max_bytes - staging_bytes
    wsum = sum(weights[s] for s in by_share if files[s]) or 1.0
    out = {}
    for s, lst in by_share.items():
        part, budget = [], byte_room * weights[s] / wsum
        for c in lst[:files[s]]:
            if budget - c.size < 0 and part:
                break
            part.append(c)
            budget -= c.size
        if part:
            out[s] = part
    return out


def choose(cands: list[Candidate], limits: TapeLimits, staging_files: int, staging_bytes: int,
           delivered: dict[str, float], cfg: CarouselConfig,
           mounted: set[str] | frozenset[str] = frozenset()) -> list[Candidate]:
    """The files to release now. ``delivered``: bytes released per share in the window;
    ``mounted``: cartridges with files staging (in a drive or about to be)."""
    room_f = limits.staging_files - staging_files
    room_b = limits.staging_bytes - staging_bytes
    if room_f <= 0 or room_b <= 0 or not cands:
        return []
    if cfg.policy == "fifo":
        return _fifo(cands, room_f, room_b)
    ahead = lookahead(cands, limits, staging_files, staging_bytes, cfg)
    remaining: dict[str, list[Candidate]] = {s: list(v) for s, v in ahead.items()}
    on_cart: dict[str, dict[int, Candidate]] = defaultdict(dict)
    for lst in remaining.values():
        for c in lst:
            if c.cartridge is not None:
                on_cart[c.cartridge][c.id] = c
    taken: set[int] = set()
    used = defaultdict(float, {s: v for s, v in delivered.items()})
    # cartridges already being read come first: more of them costs no mount
    sticky = [c for c in sorted(mounted) if on_cart.get(c)]
    out: list[Candidate] = []
    while room_f > 0 and room_b > 0:
        for s in remaining:
            remaining[s] = [c for c in remaining[s] if c.id not in taken]
        shares = [s for s, lst in remaining.items() if lst]
        if not shares:
            break
        sticky = [c for c in sticky if on_cart.get(c)]
        if sticky:
            group = sorted(on_cart[sticky[0]].values(), key=lambda c: c.tape_position)
        else:
            wsum = sum(cfg.target(s) for s in shares)
            total = sum(used[s] for s in shares) or 1.0
            s = min(shares, key=lambda s: (used[s] / total - cfg.target(s) / wsum, s))
            head = remaining[s][0]
            if head.cartridge is not None:
                group = sorted(on_cart[head.cartridge].values(), key=lambda c: c.tape_position)
                sticky.append(head.cartridge)  # once started, a cartridge is read through
            else:
                group = [c for c in remaining[s] if c.request_id == head.request_id]
                group = sorted(group, key=lambda c: c.position)[:cfg.bunch_files]
        bunch = _prefix(group, room_f, room_b)
        if not bunch:
            break
        for c in bunch:
            taken.add(c.id)
            used[c.share] += c.size
            if c.cartridge is not None:
                on_cart[c.cartridge].pop(c.id, None)
            room_f -= 1
            room_b -= c.size
        out += bunch
    return out


def _prefix(group: list[Candidate], room_f: int, room_b: float) -> list[Candidate]:
    fit = []
    for c in group:
        if len(fit) + 1 > room_f or c.size > room_b:
            break
        fit.append(c)
        room_b -= c.size
    return fit


def _fifo(cands: list[Candidate], room_f: int, room_b: float) -> list[Candidate]:
    key: Callable[[Candidate], tuple] = lambda c: (c.created, c.request_id, c.position)  # noqa: E731
    return _prefix(sorted(cands, key=key), room_f, room_b)
