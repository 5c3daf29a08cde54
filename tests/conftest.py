"""Test set-up shared by every suite: the collection on sys.path, the lab fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# collection/ansible_collections/takelan/multiall links back to the repo root,
# so plugins import as ansible_collections.takelan.multiall.plugins... as in Ansible.
sys.path.insert(0, str(ROOT / "collection"))
sys.path.insert(0, str(ROOT))

pytest_plugins = ["lab.pytest_plugin"]
