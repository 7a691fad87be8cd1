"""How many pilots to submit to each queue this cycle: the factory's arithmetic, alone.

Kept apart from the loop and its HTTP so the rule can be read and tested as data.
Per queue (Harvester's rule): a pending pilot will take an activated job, so
``activated - pending`` more are wanted, within the queue's ``max_pilots`` (pending
and running together; default its ``max_running``) and ``max_new`` per cycle. When
the factory's own ``max_total`` cannot hold every queue's wish, the room is shared
in proportion to the wishes (largest remainder). A queue that is unknown, offline,
or whose settings are bad gets nothing and a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVED = frozenset({"online", "brokeroff", "test"})  # catalog.states.QUEUE_SERVED
# pilot options a site file may set (never ``python`` or ``env``: those would run
# what the file says on the factory's machine)
PILOT_OPTIONS = frozenset({"max_jobs", "idle_timeout", "poll_interval", "lifetime", "kill_grace",
                           "give_up_after"})
FACTORY_KEYS = frozenset({"max_pilots", "max_new", "token_lifetime_s"})
DEFAULT_MAX_NEW = 10
LIMIT_MAX = 100_000
TOKEN_LIFETIME_S = 6 * 3600


@dataclass(frozen=True)
class QueuePlan:
    queue: str
    backend: str | None
    submit: int = 0
    opts: dict[str, Any] = field(default_factory=dict)  # backend settings for submit()
    token_lifetime_s: int = TOKEN_LIFETIME_S
    reason: str = ""  # why nothing is submitted, when that is so


def _limit(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if type(value) is not int or not 0 <= value <= LIMIT_MAX:
        raise ValueError(f"backend_settings.{key} must be an integer from 0 to {LIMIT_MAX}")
    return value


def split_settings(settings: Mapping[str, Any], backend_keys: frozenset[str]
                   ) -> dict[str, Any]:
    """The submit options in a queue's ``backend_settings`` (pilot options and the
    backend's own keys); ``ValueError`` for any other key."""
    if not isinstance(settings, Mapping):
        raise ValueError("backend_settings must be a table")
    allowed = PILOT_OPTIONS | backend_keys | FACTORY_KEYS
    if unknown := sorted(str(k)[:64] for k in settings if k not in allowed):
        raise ValueError(f"backend_settings: unknown keys {unknown} (allowed: "
                         f"{', '.join(sorted(allowed))})")
    return {k: v for k, v in settings.items() if k not in FACTORY_KEYS}


def plan_queue(queue: str, demand: Mapping[str, Any], pending: int, running: int,
               backend_keys: Mapping[str, frozenset[str]]) -> QueuePlan:
    """What one queue wants, before the factory-wide cap."""
    backend = demand.get("pilot_backend")
    if not demand.get("known"):
        return QueuePlan(queue, None, reason="no such queue on the server")
    if demand.get("status") not in SERVED:
        return QueuePlan(queue, backend, reason=f"queue is {demand.get('status')}")
    if backend not in backend_keys:
        return QueuePlan(queue, backend, reason=f"pilot_backend {backend!r} is not one this "
                         f"factory runs ({', '.join(sorted(backend_keys))})")
    settings = demand.get("backend_settings") or {}
    try:
        opts = split_settings(settings, backend_keys[backend])
        max_pilots = _limit(settings, "max_pilots", int(demand.get("max_running") or 0))
        max_new = _limit(settings, "max_new", DEFAULT_MAX_NEW)
        lifetime = _limit(settings, "token_lifetime_s", TOKEN_LIFETIME_S)
    except ValueError as exc:
        return QueuePlan(queue, backend, reason=str(exc))
    activated = int(demand.get("activated") or 0)
    want = max(0, min(activated - pending, max_pilots - pending - running, max_new))
    reason = "" if want else ("no activated job without a pending pilot"
                              if activated <= pending else "at the queue's limits")
    return QueuePlan(queue, backend, want, opts, max(60, lifetime), reason)


def share(plans: list[QueuePlan], room: int) -> list[QueuePlan]:
    """Cut the plans down to ``room`` pilots in all, in proportion to what each wants."""
    wanted = sum(p.submit for p in plans)
    if wanted <= room:
        return plans
    room = max(0, room)
    exact = [p.submit * room / wanted for p in plans]
    given = [int(x) for x in exact]
    order = sorted(range(len(plans)), key=lambda i: exact[i] - given[i], reverse=True)
    for i in order[:room - sum(given)]:
        given[i] += 1
    return [QueuePlan(p.queue, p.backend, g, p.opts, p.token_lifetime_s,
                      p.reason or ("" if g else "the factory's max_total is reached"))
            for p, g in zip(plans, given, strict=True)]
