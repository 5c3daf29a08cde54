"""``python -m lab`` is the ``lab`` CLI."""

import sys

from .cli import main

sys.exit(main())
