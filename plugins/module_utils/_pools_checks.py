# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-checks of a pool model: references between its sections.

Each file validates alone against the schema (``_pools_spec``); what only the
whole model can tell lives here: members and pools that exist, unique
addresses with an IPv4 for TNS, include cycles and disagreements, exceptions
that name real nodes and remove something, then the per-part checks (file
trees, DNS push trees, software). Kept apart from ``pools.py`` so the model
class stays about loading and queries.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ._dns_push import check_push_trees
from ._located_yaml import LocatedDict, LocatedList, SourceError, item_mark, plain
from ._pools_files import check_trees
from ._pools_software import check_software
from ._schema import Validator, render_path


def cross_check(model: Any, v: Validator) -> None:
    """References between sections: members, pools, includes, exceptions."""
    node_pools: dict[str, set[str]] = {n: set() for n in model.nodes}
    for name, node in model.nodes.items():
        listed = node.get("pools") or LocatedList()
        for index, pool in enumerate(listed):
            if pool not in model.pools:
                v.error(
                    undeclared(model, "pool", pool),
                    item_mark(listed, index),
                    ("nodes", name, "pools", index),
                )
            else:
                node_pools[name].add(pool)
    for pname, pool in model.pools.items():
        members = pool.get("members") or LocatedList()
        seen: set[str] = set()
        for index, member in enumerate(members):
            path = ("pools", pname, "members", index)
            if member in seen:
                v.error(f"{member!r} is listed twice", item_mark(members, index), path)
            seen.add(member)
            if member not in model.nodes:
                v.error(
                    undeclared(model, "node", member),
                    item_mark(members, index),
                    path,
                )
            else:
                node_pools[member].add(pname)
    check_addresses(model, v, node_pools)
    check_includes(model, v)
    model.set_membership(node_pools)
    if not v.errors:
        check_include_conflicts(model, v)
        check_exceptions(model, v)
        check_dns_pools(model)
        check_trees(model, v)
        check_push_trees(model, v)
        check_software(model, v)


def check_include_conflicts(model: Any, v: Validator) -> None:
    for pool in model.pools:
        model._contribution(pool)
    for pool, path, values in model._include_conflicts:
        said = "; ".join(f"{origin!r} sets {value!r}" for origin, value in values.items())
        v.error(
            f"included pools disagree on {render_path(path)}: {said}; "
            f"set it in pool {pool!r} itself to choose",
            model.pools[pool].value_mark_of("include"),
            ("pools", pool, "include"),
        )


def undeclared(model: Any, kind: str, name: str) -> str:
    """``'x' is not a declared pool; declared pools: a, b`` (the names help fix typos)."""
    known = model.pools if kind == "pool" else model.nodes
    return f"{name!r} is not a declared {kind}; declared {kind}s: {name_list(known)}"


def check_addresses(model: Any, v: Validator, node_pools: dict[str, set[str]]) -> None:
    """Addresses and IPs are unique; every pool member has an IPv4 ``ip`` for TNS.

    The TNS probe (IPv4 only so far) tells peers apart by the source IP of
    their packets: a pool member known only by host name would be voted
    unreachable by every peer, and two nodes with one IP would speak for
    each other. ``ip`` defaults to ``address`` when that is IPv4.
    """
    seen: dict[str, str] = {}
    seen_ip: dict[str, str] = {}
    for name, node in model.nodes.items():
        address = node.get("address")
        if address in seen:
            v.error(
                f"address {address!r} is already used by node {seen[address]!r}; "
                "each node needs its own address",
                node.value_mark_of("address"),
                ("nodes", name, "address"),
            )
            continue
        seen[address] = name
        key = "ip" if "ip" in node else "address"
        ip = ipv4(node.get(key))
        if ip is None:
            if node_pools[name]:
                v.error(
                    needs_ip(name, sorted(node_pools[name]), address),
                    node.value_mark_of("address"),
                    ("nodes", name, "address"),
                )
            continue
        if ip in seen_ip:
            v.error(
                f"ip {ip!r} is already used by node {seen_ip[ip]!r}; the TNS probe "
                "tells nodes apart by IP, so each node needs its own",
                node.value_mark_of(key),
                ("nodes", name, key),
            )
        seen_ip.setdefault(ip, name)


def check_dns_pools(model: Any) -> None:
    """Warn about DNS pools too small to ever fail a member out of DNS."""
    for pname, pool in model.pools.items():
        members = model._members[pname]
        if "dns" not in pool or len(members) >= 3:
            continue
        count = f"only {len(members)} member{'s' if len(members) != 1 else ''}"
        model.warnings.append(
            SourceError(
                f"pool {pname!r} has a dns section but {count}: a failed member leaves "
                "DNS only by the vote of a strict majority of the pool, which fewer than "
                "3 members never have once one has failed; add members or do not rely "
                "on DNS failover for this pool",
                pool.mark_of("dns"),
                render_path(("pools", pname, "dns")),
            )
        )


def check_includes(model: Any, v: Validator) -> None:
    for pname, pool in model.pools.items():
        includes = pool.get("include") or LocatedList()
        for index, inc in enumerate(includes):
            if inc not in model.pools:
                v.error(
                    undeclared(model, "pool", inc),
                    item_mark(includes, index),
                    ("pools", pname, "include", index),
                )
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        includes = model.pools[name].get("include") or LocatedList()
        for index, inc in enumerate(includes):
            if inc not in model.pools:
                continue
            if state.get(inc) == 1:
                cycle = " -> ".join([*trail[trail.index(inc) :], name, inc])
                v.error(
                    f"pool include cycle: {cycle}",
                    item_mark(includes, index),
                    ("pools", name, "include", index),
                )
            elif state.get(inc) is None:
                visit(inc, [*trail, name])
        state[name] = 2

    for pname in model.pools:
        if pname not in state:
            visit(pname, [])


def check_exceptions(model: Any, v: Validator) -> None:
    for index, exc in enumerate(model.exceptions):
        path = ("exceptions", index)
        mark = getattr(exc, "mark", None)
        if ("node" in exc) == ("nodes" in exc):
            v.error("give exactly one of 'node' or 'nodes'", mark, path)
            continue
        if "remove" not in exc and "override" not in exc:
            v.error("an exception needs 'remove' and/or 'override'", mark, path)
        pool = exc.get("pool")
        if pool is not None and pool not in model.pools:
            v.error(
                undeclared(model, "pool", pool),
                exc.value_mark_of("pool"),
                (*path, "pool"),
            )
            continue
        for node in exception_nodes(exc):
            if node not in model.nodes:
                v.error(
                    undeclared(model, "node", node),
                    exc.value_mark_of("nodes" if "nodes" in exc else "node"),
                    path,
                )
            elif pool is not None and pool not in model._node_pools[node]:
                v.error(
                    f"node {node!r} is not a member of pool {pool!r}; its pools: "
                    f"{', '.join(model._node_pools[node]) or '(none)'}",
                    exc.value_mark_of("pool"),
                    (*path, "pool"),
                )
            else:
                check_removals(model, v, exc, index, node, pool)


def check_removals(
    model: Any, v: Validator, exc: LocatedDict, index: int, node: str, pool: str | None
) -> None:
    """A removal that removes nothing is a typo: say so instead of ignoring it."""
    removals = exc.get("remove") or {}
    pools = [pool] if pool else model._node_pools[node]
    own = plain(model.nodes[node].get("settings") or {})
    for section, items in removals.items():
        for item_index, item in enumerate(items):
            found = any(item in (model._contribution(p).get(section) or {}) for p in pools)
            found = found or (pool is None and item in (own.get(section) or {}))
            if not found:
                scope = f"pool {pool!r}" if pool else f"any pool of node {node!r}"
                v.error(
                    f"{section} item {item!r} is not set by {scope}, so there is nothing to remove",
                    item_mark(items, item_index),
                    ("exceptions", index, "remove", section, item_index),
                )


def needs_ip(node: str, pools: list[str], address: str) -> str:
    """The error for a pool member whose address TNS cannot use, and what to write."""
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return (
            f"node {node!r} is in pool {', '.join(pools)} but its address {address!r} is a "
            "host name; TNS recognises peers by the source IP of their packets, so every "
            "peer would vote it unreachable: add 'ip: <its IPv4 address>' to the node "
            f"(SSH keeps using {address!r})"
        )
    return (
        f"node {node!r} is in pool {', '.join(pools)} but its address {address!r} is IPv6, "
        "which the TNS probe does not support yet: add 'ip: <its IPv4 address>' to the "
        "node (SSH and DNS keep using the IPv6 address)"
    )


def ipv4(value: Any) -> str | None:
    """``value`` when it is an IPv4 address, else None."""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def exception_nodes(exc: dict[str, Any]) -> list[str]:
    if "nodes" in exc:
        return list(exc["nodes"])
    return [exc["node"]] if "node" in exc else []


def name_list(mapping: dict[str, Any], limit: int = 12) -> str:
    names = sorted(mapping)
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
