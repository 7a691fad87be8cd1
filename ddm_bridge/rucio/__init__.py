"""The DDM bridge on a real Rucio (rucio-clients): ``DAWMS_DDM=rucio`` selects it.

``ddm.RucioDDM`` is the backend (registered under the entry-point group
``dawms.ddm``), ``settings`` how it reaches Rucio, ``gate`` its one door with
back-off, ``cache`` the catalog rows that mirror Rucio, ``messages`` hermes'
messages as data events, ``stomp`` their STOMP consumer, ``housekeeping`` the
closing of output datasets and the deletion of rules no job needs. Imports are
lazy so that parsing messages needs neither rucio-clients nor pydantic-settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ddm import RucioDDM

__all__ = ["RucioDDM"]


def __getattr__(name: str) -> Any:
    if name == "RucioDDM":
        from .ddm import RucioDDM

        return RucioDDM
    raise AttributeError(name)
