"""Tape staging (the data carousel): inputs that live only on tape, staged in bunches.

The refiner asks ``plan.plan_staging`` which inputs of a task are only on tape
and turns each (dataset, tape) into a staging request (``queued -> staging ->
done``, + ``failed``, ``cancelled``; ``catalog.states``). ``daemon.run_once``
releases their files in bunches within each tape's limits in share, priority and
age order with fair share between shares (``release``), watches them arrive,
retries failed recalls, lets the jobs whose own files are on disk go on while the
rest wait (``progress``), and keeps the staged copies exactly while a task needs
them (``pins``). Users list, cancel and reprioritize requests (``manage``).
It talks to the DDM only through ``ddm_bridge.abc.DDM`` (``request_staging``,
``tape_locality``, ``extend_staging``, ``release_staging``), so the local DDM's
emulated tape and Rucio plug in alike. Layers: scheduler -> carousel ->
ddm_bridge -> catalog.
"""

from .config import CarouselConfig
from .daemon import run_once

__all__ = ["CarouselConfig", "run_once"]
