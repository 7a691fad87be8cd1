"""``python -m dawms`` is the ``dawms`` command."""

import sys

from dawms.cli import main

sys.exit(main())
