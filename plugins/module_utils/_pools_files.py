# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File trees of the pool model (``files``): what FS-SA syncs, with whom, and checks.

Every reader of trees (``fs_sync``, the peer receiver, the FS-SA live path)
goes through :func:`trees_for` and :func:`tree_peers`, so "which trees does
this node hold, for which pool, shared with whom" has one answer.

A tree belongs to the pools that declare it; a node in several pools syncs a
tree only with members of the pools (of this node) that declare it. The
checks here run at load time (hooked from ``_pools_checks.cross_check``):
two trees nested on one node, or one path declared differently by two pools
of one node, are errors naming both.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ._schema import render_path

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
# Keys two pools must not set differently for one tree; ``exclude`` lists are
# merged (union), as every list of the model is, and an unset key agrees with
# any value (like an unpinned package version).
_SCALAR_KEYS = ("source", "owner", "group", "mode", "delete", "live", "conflict")


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


def _inside(inner: str, outer: str) -> bool:
    outer = outer.rstrip("/")
    return inner != outer and inner.startswith(outer + "/")


def check_trees(model: Any, v: Any) -> None:
    """Load-time checks of every node's trees, as file:line errors on validator ``v``.

    - Two pools of one node declaring the same tree differently: the merge
      would leave the key unset (a conflict); for a tree that means two
      pools syncing one directory with different rules, so it is an error
      naming both pools, the key and where each sets it. A node override or
      exception that settles the key settles it here too.
    - A tree inside another tree on one node: the inner files would belong to
      two syncs (possibly with different peers); an error naming both.
    """
    seen: set[tuple[Any, ...]] = set()
    for node in model.node_names():
        view = model.effective(node)
        for path in sorted(view.settings.get("files") or {}):
            pools = declaring_pools(model, node, path)
            for key in _SCALAR_KEYS if len(pools) > 1 else ():
                values = {
                    p: spec[key]
                    for p in pools
                    if key in (spec := _pool_trees(model, p).get(path) or {})
                }
                if len({repr(x) for x in values.values()}) < 2:
                    continue
                origins = view.sources.get(render_path(("files", path, key)), [])
                if any(o not in pools for o in origins):
                    continue  # a node override or exception settles it
                ident = ("differ", path, key, tuple(pools))
                if ident in seen:
                    continue
                seen.add(ident)
                last = sorted(values)[-1]
                marks = {p: model._value_mark(p, ("files", path, key)) for p in values}
                said = " and ".join(
                    f"{values[p]!r} in pool {p!r} ({marks[p] or '?'})" for p in values
                )
                v.error(
                    f"tree {path} is declared differently by pools "
                    f"{' and '.join(map(repr, values))} of node {node!r}: {key} is {said}; "
                    "a tree has one definition on a node",
                    marks[last],
                    ("pools", last, "files", path, key),
                )
        trees = trees_for(model, node)
        for outer in trees:
            for inner in trees:
                if not _inside(inner, outer) or ("nested", outer, inner) in seen:
                    continue
                seen.add(("nested", outer, inner))
                ipool, opool = trees[inner]["pool"], trees[outer]["pool"]
                omark = model._value_mark(opool, ("files", outer))
                v.error(
                    f"tree {inner} (pool {ipool!r}) is inside tree {outer} (pool {opool!r}, "
                    f"{omark or '?'}) on node {node!r}; its files would be synced twice: "
                    "declare only one of them (or use 'exclude' in the outer one)",
                    _key_mark(model, ipool, inner),
                    ("pools", ipool, "files", inner),
                )


def _key_mark(model: Any, pool: str, path: str) -> Any:
    """Where ``pool`` (or a pool it includes) names tree ``path``."""
    files = model.pools[pool].get("files")
    if files is not None and hasattr(files, "mark_of") and files.mark_of(path):
        return files.mark_of(path)
    return model._value_mark(pool, ("files", path))
