"""The ``dawms`` subcommands, one module per thing they act on. Each module has
``register(groups)``; a new module is added to ``MODULES`` (its order is the order of
``dawms --help``)."""

from __future__ import annotations

from . import data, jobs, manage, service, sites, staging, tasks, tokens

MODULES = [service, sites, data, tasks, jobs, manage, staging, tokens]
