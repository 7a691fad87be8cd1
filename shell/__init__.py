"""dawms: a data-aware workload management system.

Kept import-light on purpose: a pilot imports ``dawms.pilot`` next to an
experiment's software and must not pay for the server's dependencies.

The packages live at the repository root (``catalog/``, ``scheduler/``, ...) and
install as ``dawms.catalog``, ``dawms.scheduler``, ...; this folder, ``shell/``
(the user's shell: CLI, client, demo), is ``dawms`` itself. No folder named
``dawms`` sits at the root, so running from a checkout (``python -m dawms``,
``python -m bench.NAME``) never shadows the installed mapping. All of it goes through
``[tool.setuptools.package-dir]``; a checkout is used through
``pip install -e . --config-settings editable_mode=strict`` (``make venv``), so
code runs against the same mapping a user's install has.
"""

__version__ = "0.1.0"
