# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File trees of the pool model (``files``): what FS-SA syncs, with whom, and checks.

Every reader of trees (``fs_sync``, the peer receiver, the FS-SA live path)
goes through :func:`trees_for` and :func:`tree_peers`, so "which trees does
this node hold, for which pool, shared with whom" has one answer.

A tree belongs to the pools that declare it; a node in several pools syncs a
tree only with members of the pools (of this node) that declare it. The
checks here run at load time (hooked from ``pools.PoolModel._cross_check``):
two trees nested on one node, or one path declared differently by two pools
of one node, are errors naming both.
"""

from __future__ import annotations

import posixpath
from typing import Any

# Defaults of a tree's FS-SA keys (the spec in _pools_spec.FILE_TREE).
TREE_DEFAULTS: dict[str, Any] = {
    "source": None,
    "owner": None,
    "group": None,
    "mode": None,
    "exclude": [],
    "delete": False,
    "live": True,
    "conflict": "keep_both",
}
CONFLICT_POLICIES = ("keep_both", "newest")


def _pool_trees(model: Any, pool: str) -> dict[str, Any]:
    """What ``pool`` declares under ``files`` (its includes folded in)."""
    return dict(model._contribution(pool).get("files") or {})


def declaring_pools(model: Any, node: str, path: str) -> list[str]:
    """The pools of ``node`` that declare tree ``path``, sorted."""
    return [p for p in model.node_pools(node) if path in _pool_trees(model, p)]


def trees_for(model: Any, node: str) -> dict[str, dict[str, Any]]:
    """``{path: {pool, pools, source, owner, group, mode, exclude, delete, live, conflict}}``.

    The settings are the node's effective ones (node overrides and exceptions
    applied, so a tree an exception removes is absent); ``pool`` is the first
    declaring pool (whose key carries the tree), ``pools`` all of them. A path
    only the node itself declares (no pool) is not synced and not listed.
    """
    files = model.effective(node).settings.get("files") or {}
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        pools = declaring_pools(model, node, path)
        if not pools:
            continue
        spec = {**TREE_DEFAULTS, **dict(files[path] or {})}
        spec["exclude"] = list(spec.get("exclude") or [])
        out[path] = {"pool": pools[0], "pools": pools, **spec}
    return out


def tree_peers(model: Any, node: str, path: str) -> list[str]:
    """Members (other than ``node``) that share tree ``path`` with ``node``, sorted.

    Only members of the declaring pools that hold the tree themselves (an
    exception may have removed it from one of them).
    """
    peers: set[str] = set()
    for pool in declaring_pools(model, node, path):
        for member in model.members(pool):
            if member != node and path in trees_for(model, member):
                peers.add(member)
    return sorted(peers)


def peer_pool(model: Any, node: str, peer: str, path: str) -> str:
    """The pool whose key carries tree ``path`` from ``node`` to ``peer``.

    The first pool of ``node`` declaring the tree that ``peer`` is a member of.
    """
    for pool in declaring_pools(model, node, path):
        if peer in model.members(pool):
            return pool
    raise KeyError(f"{peer} shares no pool declaring {path} with {node}")


def tree_of(trees: dict[str, Any], path: str) -> str | None:
    """The declared tree that contains absolute ``path`` (longest match), or None."""
    path = posixpath.normpath(path)
    best = None
    for tree in trees:
        root = tree.rstrip("/") or "/"
        inside = path == root or path.startswith(root.rstrip("/") + "/")
        if inside and (best is None or len(root) > len(best)):
            best = tree
    return best
