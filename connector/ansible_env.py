"""The environment of every Ansible command MultiAll starts.

The watcher (ansible-runner), the lab, the tests and the benchmarks all run
``ansible-playbook``/``ansible``/``ansible-doc`` against this collection, and
they must all find it the same way, whether the code runs from a checkout or
from an installed collection:

- checkout: ``<repo>/collection/ansible_collections/takelan/multiall`` links
  back to the repo root, so ``<repo>/collection`` is the collections path;
- installed (``ansible-galaxy collection install``, the ``tns`` role's
  ``/opt/multiall/ansible_collections/takelan/multiall``): the directory that
  holds ``ansible_collections/`` is the collections path.

This module is the one place that knows those layouts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# The collection root: the repo root of a checkout, or .../ansible_collections/takelan/multiall.
COLLECTION_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE, NAME = "takelan", "multiall"


class CollectionNotFoundError(RuntimeError):
    """The code does not sit in a checkout or an installed collection."""


def collections_path(root: Path = COLLECTION_ROOT) -> Path:
    """The directory to put on ANSIBLE_COLLECTIONS_PATH so ``takelan.multiall`` is ``root``."""
    checkout = root / "collection"
    if (checkout / "ansible_collections" / NAMESPACE / NAME).is_dir():
        return checkout
    if (root.name, root.parent.name, root.parent.parent.name) == (
        NAME,
        NAMESPACE,
        "ansible_collections",
    ):
        return root.parents[2]
    raise CollectionNotFoundError(
        f"{root} is neither a checkout (expected {checkout}/ansible_collections/"
        f"{NAMESPACE}/{NAME}) nor an installed collection (expected a path ending in "
        f"ansible_collections/{NAMESPACE}/{NAME})"
    )


def ansible_env(
    extra: Mapping[str, str] | None = None,
    root: Path = COLLECTION_ROOT,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``base`` (default: this process's environment) set up to run Ansible on this collection.

    ANSIBLE_COLLECTIONS_PATH names only this collection's tree, ANSIBLE_CONFIG the
    collection's ``ansible.cfg`` (it enables the ``takelan.multiall.pools`` inventory
    plugin) when the collection has one, and this interpreter's ``bin`` leads PATH so
    ``ansible-playbook`` is the one installed next to the running Python. Colour is off:
    the output is read by programs and logs. ``extra`` is applied last.
    """
    env = dict(os.environ if base is None else base)
    config = root / "ansible.cfg"
    if config.is_file():
        env["ANSIBLE_CONFIG"] = str(config)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_path(root))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH') or '/usr/bin:/bin'}"
    env.update(extra or {})
    return env


def collection_in_use() -> dict[str, str]:
    """Where this process takes the collection from, to log at start-up.

    ``collection`` is what Ansible runs get (playbooks, modules, roles);
    ``module_utils`` is where the daemon imported the shared logic from. They
    must be the same tree: a connector installed from a tarball that silently
    ran a checkout's ``module_utils`` would hide a broken install.
    """
    from ansible_collections.takelan.multiall.plugins.module_utils import tns

    return {
        "collection": str(COLLECTION_ROOT),
        "collections_path": str(collections_path()),
        "module_utils": str(Path(tns.__file__).resolve().parent),
    }
