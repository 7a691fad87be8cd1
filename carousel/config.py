"""The carousel's knobs: share targets, retries, pin lifetimes, per-tape limits.

Per tape endpoint the limits come from the sites file (``staging_max_files``,
``staging_max_bytes``, ``staging_max_percent``) with PanDA's defaults: at most
10,000 files queued + staging from one tape, at most 50 % of that staging at
once. Share targets are operator policy: ``DAWMS_CAROUSEL_SHARES`` as
``name=target,...`` (fractions; normalized over the shares that have work).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields

from dawms.catalog.models import StorageEndpoint

DEFAULT_MAX_FILES = 10000  # PanDA: files queued + staging from one tape
DEFAULT_MAX_PERCENT = 50  # PanDA: at most this much of it staging at once
MAX_SHARES = 100


@dataclass(frozen=True)
class TapeLimits:
    """What the carousel may hold of one tape at once."""

    max_files: int = DEFAULT_MAX_FILES  # queued + staging: how far ahead it looks
    max_bytes: int | None = None
    max_percent: int = DEFAULT_MAX_PERCENT  # of max_files / max_bytes, staging at once

    @classmethod
    def of(cls, endpoint: StorageEndpoint) -> TapeLimits:
        return cls(max_files=endpoint.staging_max_files or DEFAULT_MAX_FILES,
                   max_bytes=endpoint.staging_max_bytes,
                   max_percent=endpoint.staging_max_percent or DEFAULT_MAX_PERCENT)

    @property
    def staging_files(self) -> int:
        """The most files released to the tape and not yet on disk."""
        return max(1, self.max_files * self.max_percent // 100)

    @property
    def staging_bytes(self) -> float:
        return math.inf if self.max_bytes is None else self.max_bytes * self.max_percent / 100


def parse_shares(text: str) -> dict[str, float]:
    """``"reprocessing=0.5,mc=0.3,analysis=0.2"`` -> targets; ValueError naming the problem."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            target = float(value)
        except ValueError:
            target = math.nan
        if not sep or not name or len(name) > 64 or not (math.isfinite(target) and target > 0):
            raise ValueError(f"share target {part!r} must be name=<positive number>")
        out[name] = target
    if len(out) > MAX_SHARES:
        raise ValueError(f"at most {MAX_SHARES} share targets")
    return out


@dataclass(frozen=True)
class CarouselConfig:
    share_targets: dict[str, float] = field(default_factory=dict)
    default_target: float = 0.1  # a share without a target weighs this much
    fair_window_s: int = 86400  # delivered bytes count towards fair share this long
    bunch_files: int = 500  # without tape locality: files of one request per bunch
    max_attempts: int = 3  # recalls of one file before it is lost
    backoff_s: int = 600  # before the first retry; doubles with each attempt
    pin_staging_s: int = 15 * 86400  # PanDA: rules live 15 d while staging
    pin_done_s: int = 30 * 86400  # ... and 30 d once staged
    policy: str = "fair"  # fair | fifo (first in, first out: for comparison only)
    interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.policy not in ("fair", "fifo"):
            raise ValueError("carousel policy must be 'fair' or 'fifo'")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"carousel {f.name} must be positive")

    @classmethod
    def from_env(cls, **overrides: object) -> CarouselConfig:
        """``DAWMS_CAROUSEL_SHARES`` and ``DAWMS_CAROUSEL_<FIELD>`` over the defaults."""
        values: dict[str, object] = {}
        if shares := os.environ.get("DAWMS_CAROUSEL_SHARES"):
            values["share_targets"] = parse_shares(shares)
        for f in fields(cls):
            env = os.environ.get(f"DAWMS_CAROUSEL_{f.name.upper()}")
            if env is None or f.name == "share_targets":
                continue
            if f.name == "policy":
                values[f.name] = env
                continue
            try:
                values[f.name] = type(f.default)(float(env))  # type: ignore[call-arg]
            except ValueError:
                raise ValueError(f"DAWMS_CAROUSEL_{f.name.upper()}={env!r} is not a number") \
                    from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def target(self, share: str) -> float:
        return self.share_targets.get(share, self.default_target)
