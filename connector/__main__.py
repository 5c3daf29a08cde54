"""``python -m connector`` is the ``multiall`` CLI."""

import sys

from .cli import main

sys.exit(main())
