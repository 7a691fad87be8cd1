"""``python -m dawms.pilot``: the same as the ``dawms-pilot`` command."""

from dawms.pilot.main import main

raise SystemExit(main())
