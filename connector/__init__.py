"""TakeConnector: the per-node MultiAll daemon and the ``multiall`` CLI.

The daemon and CLI import the same logic the Ansible modules use, from
``ansible_collections.takelan.multiall.plugins.module_utils``: one copy of every
piece of logic, never a second one here.

How that package is found is decided once, by the Python environment, not by
code: a ``multiall-collection.pth`` file in the environment's site-packages
names the directory that holds ``ansible_collections/`` (``<checkout>/collection``,
written by ``make deps``; on a managed node the ``tns`` role writes it into the
connector's venv). See docs/connector.md, "Finding the collection".
"""

from __future__ import annotations

__version__ = "0.1.0"

try:
    import ansible_collections.takelan.multiall.plugins.module_utils  # noqa: F401
except ImportError as exc:  # pragma: no cover - a broken environment, said plainly
    raise ImportError(
        "TakeConnector cannot import ansible_collections.takelan.multiall: this Python "
        "environment has no multiall-collection.pth naming the directory that holds "
        "ansible_collections/ (run `make deps` in a checkout; on a node, apply the "
        "takelan.multiall.tns role; see docs/connector.md)"
    ) from exc
