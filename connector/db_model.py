"""Which databases a node syncs, through which pools, with which peers.

A database is declared in a pool's ``databases`` section; every member of
that pool holds a copy, and a node in several pools that declare the same
database syncs it with the union of their members. The receiving side asks
the same questions to confine a peer: the pool whose key the peer used must
declare the database, and the peer must be a member of it.
"""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY = {"mode": "realtime", "interval": 5.0}


def node_databases(model: Any, node: str) -> dict[str, dict[str, Any]]:
    """NODE's effective ``databases`` settings: ``{name: spec}``."""
    return dict(model.effective(node).settings.get("databases") or {})


def db_pools(model: Any, node: str, name: str) -> list[str]:
    """The pools of NODE that declare database NAME (from the model's source map)."""
    view = model.effective(node)
    prefix = f"databases.{name}."
    found = {
        origin
        for key, origins in view.sources.items()
        if key.startswith(prefix) or key == f"databases.{name}"
        for origin in origins
    }
    return [p for p in view.pools if p in found]


def db_peers(model: Any, node: str, name: str) -> list[str]:
    """Every other member of the pools that give NODE database NAME (sorted)."""
    peers = {m for pool in db_pools(model, node, name) for m in model.members(pool)}
    peers.discard(node)
    return sorted(peers)


def policy(spec: dict[str, Any]) -> dict[str, Any]:
    """The database's sync policy with defaults (realtime; interval 5 s)."""
    return {**DEFAULT_POLICY, **(spec.get("policy") or {})}
