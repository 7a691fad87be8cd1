"""The ``dawms`` subcommands, one module per thing they act on. Each module has
``register(groups)``; a new module is added to ``MODULES`` (its order is the order of
``dawms --help``)."""

from __future__ import annotations

from . import (
    browse,
    completion,
    config,
    data,
    dbcheck,
    explain,
    factory,
    joblog,
    jobs,
    manage,
    progress,
    replica,
    service,
    sites,
    staging,
    tasks,
    tokens,
)

MODULES = [service, dbcheck, sites, data, browse, tasks, progress, jobs, joblog, manage,
           staging, explain, replica, tokens, config, factory, completion]
