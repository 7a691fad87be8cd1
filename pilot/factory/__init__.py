"""Pilot factories by name: ``local``, ``slurm``, ``htcondor`` and ``kubernetes`` (the last two
need ``dawms[factory]``) built in.

``get_factory("local")`` returns a ``PilotFactory``. Backends are imported on
first use; third parties register through the ``dawms.pilot_factories``
entry-point group (name = backend, value = ``module:Class``).
"""

from __future__ import annotations

from typing import Any

from dawms.pilot.factory.base import (
    PILOT_ENDED,
    PilotFactory,
    PilotHandle,
    PilotStatus,
    SubmitError,
    check_submit,
    pilot_argv,
)
from dawms.storage.plugins import Entry, PluginRegistry

__all__ = ["PILOT_ENDED", "PilotFactory", "PilotHandle", "PilotStatus", "SubmitError",
           "check_submit", "get_factory", "pilot_argv", "registry"]

ENTRY_POINT_GROUP = "dawms.pilot_factories"

registry: PluginRegistry[PilotFactory] = PluginRegistry(
    "pilot factory", ENTRY_POINT_GROUP, PilotFactory,
    {"local": Entry("dawms.pilot.factory.local:LocalFactory"),
     "slurm": Entry("dawms.pilot.factory.slurm:SlurmFactory"),
     "htcondor": Entry("dawms.pilot.factory.htcondor:HTCondorFactory", "factory"),
     "kubernetes": Entry("dawms.pilot.factory.kubernetes:KubernetesFactory", "factory")})


def get_factory(name: str, **settings: Any) -> PilotFactory:
    """An instance of the factory registered as ``name`` (``LookupError`` if none)."""
    return registry.load(name)(**settings)
