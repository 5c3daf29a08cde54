"""Test set-up shared by every suite: the lab fixtures.

The collection is importable as ``ansible_collections.takelan.multiall`` through the
venv's ``multiall-collection.pth`` (written by ``make deps``; see docs/connector.md),
and ``connector``/``lab`` through the editable install: nothing here touches sys.path.
"""

from __future__ import annotations

pytest_plugins = ["lab.pytest_plugin"]
