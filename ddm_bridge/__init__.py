"""Everything that talks to a DDM: the interface, the backends, data events.

``get_ddm(name)`` returns a backend by name: ``local`` (embedded) here; more
(Rucio) register under the entry-point group ``dawms.ddm``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .abc import DDM


def get_ddm(name: str = "local") -> DDM:
    if name == "local":
        import os

        from .local import LocalDDM

        interval = os.environ.get("DAWMS_TRANSFER_INTERVAL_S", "5")
        try:
            return LocalDDM(transfer_interval_s=float(interval))
        except ValueError:
            raise ValueError(f"DAWMS_TRANSFER_INTERVAL_S={interval!r} is not a number") from None
    for ep in entry_points(group="dawms.ddm"):
        if ep.name == name:
            return ep.load()()
    raise ValueError(f"unknown DDM backend {name!r}: built in is 'local'; others register "
                     "under the entry-point group 'dawms.ddm'")
