"""TakeConnector: the per-node MultiAll daemon and the ``multiall`` CLI.

The daemon and CLI import the same logic the Ansible modules use, from
``ansible_collections.takelan.multiall.plugins.module_utils``. In a checkout that
package lives under ``collection/`` (a symlink back to the repo root); in an
installed collection this directory sits inside ``ansible_collections/takelan/
multiall`` already. Either way the right directory goes on ``sys.path`` here,
once, so no second copy of any logic is ever needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

__version__ = "0.1.0"


def _expose_collection() -> None:
    here = Path(__file__).resolve().parent
    checkout = here.parent / "collection"
    if (checkout / "ansible_collections").is_dir():
        root = checkout
    elif here.parents[2].name == "ansible_collections":
        root = here.parents[3]
    else:
        return
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


_expose_collection()
