"""dawms: a data-aware workload management system.

Kept import-light on purpose: a pilot imports ``dawms.pilot`` next to an
experiment's software and must not pay for the server's dependencies.

The packages live at the repository root (``catalog/``, ``scheduler/``, ...) and
install as ``dawms.catalog``, ``dawms.scheduler``, ... When Python runs from a
source checkout, the folder ``dawms/`` found on the path is this one and its
siblings are not inside it; the two lines below let ``dawms.catalog`` resolve to
``../catalog`` then, exactly as the installed mapping does.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_here = _Path(__file__).resolve().parent
_root = _here.parent
if not (_here / "catalog").is_dir() and (_root / "catalog" / "states.py").is_file():
    __path__.append(str(_root))  # type: ignore[name-defined]
