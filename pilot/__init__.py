"""The dawms pilot: runs at a site, pulls jobs over HTTP and runs them.

Kept light on purpose (standard library, fsspec and httpx only): it is
installed next to an experiment's software with ``pip install dawms[pilot]``.
Entry points: ``dawms.pilot.main.main`` (the ``dawms-pilot`` command),
``dawms.pilot.job.run_job`` (one job), ``dawms.pilot.factory`` (submit pilots).
"""
