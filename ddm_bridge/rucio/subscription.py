"""Rucio subscriptions from a task's ``[subscription]``: new matching data flows by itself.

A task may ask that new datasets of a scope whose names match a pattern be
copied to chosen endpoints as they appear (e.g. raw data of a run still being
taken). dawms creates the Rucio subscription once, at submit; Rucio's
transmogrifier then makes a rule for every new matching dataset, one rule per
chosen endpoint's RSE, with the task's activity and lifetime. Nothing of it is
cached in the catalog: the rules are Rucio's; the creation is kept as a data
event (``rucio:subscription:<id>``) naming the task and what was asked.
"""

from __future__ import annotations

from typing import Any

from dawms.ddm_bridge.abc import DDMError, Subscription

from .gate import RucioGate, RucioUnavailable


def rules(sub: Subscription) -> list[dict[str, Any]]:
    """One rule per endpoint (each chosen site gets a copy), grouped by dataset."""
    return [{"copies": 1, "rse_expression": ep.rse_name, "grouping": "DATASET",
             "activity": sub.activity, "lifetime": sub.lifetime_s}
            for ep in sub.endpoints]


def add(gate: RucioGate, sub: Subscription) -> str:
    """Create ``sub`` in Rucio for the client's account; returns the subscription id."""
    filter_ = {"scope": [sub.scope], "pattern": sub.pattern, "did_type": ["DATASET"]}

    def make(c: Any) -> str:
        return c.add_subscription(name=sub.name, account=c.account, filter_=filter_,
                                  replication_rules=rules(sub), comments=sub.comment[:250],
                                  lifetime=False, retroactive=False, dry_run=False)

    try:
        return str(gate.call(f"the subscription {sub.name}", make))
    except RucioUnavailable:
        raise
    except Exception as exc:  # Rucio refused (duplicate name, unknown RSE, bad filter)
        raise DDMError(f"Rucio refused the subscription {sub.name} "
                       f"({sub.scope}:{sub.pattern}): {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
