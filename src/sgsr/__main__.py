"""``python -m sgsr``: the ``sgsr`` command."""

import sys

from sgsr.cli import main

sys.exit(main())
