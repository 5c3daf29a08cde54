# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: the record sets MultiAll owns in a pool's zone, and their difference.

Only these sets are ever read or written: the pool name's A and AAAA, one
name per node, and the pool's extra ``records``; everything else in the zone
is left alone. Pure logic (dnspython only to write extra records' values the
way the server does): :func:`wanted_rrsets` from the members,
:func:`compare` with what the server serves, zone-file lines for ``--diff``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

# dnspython: in the connector's venv, and python3-dnspython on managed nodes. Only the
# package here; each function imports the modules it uses. They cost a connector ~40 ms
# of CPU at start (dns.message, dns.query ... pull in much of the standard library), which
# a node without DNS duty never needs and a pool starting at once pays N times.
try:
    import dns  # noqa: F401  # pylint: disable=unused-import

    HAS_DNSPYTHON = True
except ImportError:  # pragma: no cover - reported by require_dnspython() and the module
    HAS_DNSPYTHON = False

MANAGED_TYPES = ("A", "AAAA")


def require_dnspython() -> None:
    """Fail with the package to install, before the first use of dnspython.

    The one availability flag: the other ``_dns_*`` files import dnspython
    only when this one could.
    """
    if not HAS_DNSPYTHON:
        raise DnsError("dnspython is missing (apt-get install python3-dnspython)")


@dataclass(frozen=True)
class RRset:
    """One record set: owner name relative to the zone (``@`` = apex), type, TTL, values."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]

    def lines(self) -> list[str]:
        """Zone-file lines, one per value."""
        return [f"{self.name} {self.ttl} IN {self.rtype} {v}" for v in self.values]


def address_type(node: str, address: str) -> str:
    """``A`` or ``AAAA`` for a node's address (a host name is refused: records need IPs)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DnsError(
            f"node {node}: address {address!r} is not an IP address; pool records need IPs"
        ) from None
    return "A" if ip.version == 4 else "AAAA"


def wanted_rrsets(
    settings: dict[str, Any], addresses: dict[str, str], members: list[str]
) -> dict[tuple[str, str], RRset]:
    """Every record set MultiAll owns in the zone, as it should be.

    ``addresses`` maps every declared member to its address; ``members`` are
    the ones in the pool record. The pool record's A and AAAA sets are always
    listed (empty = must be absent); per-node names list every declared member,
    down or not, as a node's own name is where an admin reaches it.
    """
    ttl = settings["ttl"]
    name = settings["record"]
    out: dict[tuple[str, str], RRset] = {}
    for rtype in MANAGED_TYPES:
        values = sorted(
            (addresses[n] for n in members if address_type(n, addresses[n]) == rtype),
            key=ipaddress.ip_address,
        )
        out[(name, rtype)] = RRset(name, rtype, ttl, tuple(values))
    if settings["node_records"]:
        for node, address in sorted(addresses.items()):
            rtype = address_type(node, address)
            out[(node, rtype)] = RRset(node, rtype, ttl, (address,))
    extra: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for record in settings["records"]:
        key = (record["name"], record["type"].upper())
        extra.setdefault(key, []).append((int(record.get("ttl", ttl)), str(record["value"])))
    for (rname, rtype), items in extra.items():
        values = tuple(sorted(_canonical(rtype, item[1], settings["zone"]) for item in items))
        out[(rname, rtype)] = RRset(rname, rtype, items[0][0], values)
    return out


def owned_keys(settings: dict[str, Any], addresses: dict[str, str]) -> list[tuple[str, str]]:
    """Every (name, type) MultiAll owns in the zone; the same whoever is up."""
    return list(wanted_rrsets(settings, addresses, []))


def update_grants(
    settings: dict[str, Any], addresses: dict[str, str]
) -> list[tuple[str, tuple[str, ...]]]:
    """``(absolute name, types)`` the pool's key may update: exactly :func:`owned_keys`.

    What BIND's ``update-policy`` grants (``grant KEY name NAME TYPES;``), so
    the key the pool nodes hold can rewrite the pool's records and nothing
    else: not SOA or NS, not a name the pool does not own, not a type it does
    not write. Per-node names need the members: refused without them.
    """
    if settings["node_records"] and not addresses:
        raise DnsError(
            f"zone {settings['zone']}: node_records is on but no member is known, so the "
            "per-node names cannot be granted; give the pool members (or node_records: false)"
        )
    types: dict[str, set[str]] = {}
    for name, rtype in owned_keys(settings, addresses):
        types.setdefault(absolute_name(name, settings["zone"]), set()).add(rtype)
    return [(name, tuple(sorted(t))) for name, t in sorted(types.items())]


def absolute_name(name: str, zone: str) -> str:
    """An owner name relative to the zone (``@`` = apex) as an absolute name, in DNS text form."""
    if not HAS_DNSPYTHON:
        return f"{zone}." if name == "@" else f"{name}.{zone}."
    import dns.exception
    import dns.name

    try:
        origin = dns.name.from_text(f"{zone}.")
        return dns.name.from_text(name, origin=origin).to_text()
    except dns.exception.DNSException as exc:
        raise DnsError(f"zone {zone}: record name {name!r}: {exc}") from None


def served_members(
    settings: dict[str, Any], addresses: dict[str, str], served: dict[tuple[str, str], RRset]
) -> set[str]:
    """Members whose address the pool record hands out now."""
    values = {v for key, r in served.items() if key[0] == settings["record"] for v in r.values}
    return {n for n, a in addresses.items() if a in values}


def _canonical(rtype: str, value: str, zone: str) -> str:
    """The server's text form of a value (names absolute), so diffs compare like with like."""
    if not HAS_DNSPYTHON:
        return value
    import dns.exception
    import dns.name
    import dns.rdata

    try:
        origin = dns.name.from_text(f"{zone}.")
        return dns.rdata.from_text("IN", rtype, value, origin=origin, relativize=False).to_text()
    except dns.exception.DNSException as exc:
        raise DnsError(f"record {rtype} {value!r}: {exc}") from None


def value_sort_key(value: str) -> Any:
    """Addresses in numeric order first, then any other value as text."""
    try:
        return (0, ipaddress.ip_address(value))
    except ValueError:
        return (1, value)


def _normalise(rrset: RRset) -> RRset:
    return RRset(
        rrset.name, rrset.rtype, rrset.ttl, tuple(sorted(rrset.values, key=value_sort_key))
    )


def diff_rrsets(
    wanted: dict[tuple[str, str], RRset], served: dict[tuple[str, str], RRset]
) -> list[dict[str, Any]]:
    """Record sets whose values or TTL differ: ``[{name, type, ttl, add, remove}]``."""
    changes = []
    for key, want in sorted(wanted.items()):
        want = _normalise(want)
        have = _normalise(served.get(key) or RRset(key[0], key[1], 0, ()))
        add = [v for v in want.values if v not in have.values]
        remove = [v for v in have.values if v not in want.values]
        ttl_changed = bool(want.values) and bool(have.values) and want.ttl != have.ttl
        if add or remove or ttl_changed:
            changes.append(
                {
                    "name": key[0],
                    "type": key[1],
                    "ttl": want.ttl,
                    "add": add,
                    "remove": remove,
                    "values": list(want.values),
                }
            )
    return changes


def rrset_lines(rrsets: dict[tuple[str, str], RRset]) -> list[str]:
    """Record sets as sorted zone-file lines, one per value."""
    return [line for key in sorted(rrsets) for line in _normalise(rrsets[key]).lines()]


def zone_text(rrsets: dict[tuple[str, str], RRset]) -> str:
    """Owned records as zone-file text (for ``--diff``)."""
    lines = rrset_lines(rrsets)
    return "\n".join(lines) + ("\n" if lines else "")


def describe(changes: list[dict[str, Any]]) -> list[str]:
    """One line per added or removed record: ``+ @ 5 IN A 198.18.0.11``."""
    out = []
    for c in changes:
        out += [f"- {c['name']} IN {c['type']} {v}" for v in c["remove"]]
        out += [f"+ {c['name']} {c['ttl']} IN {c['type']} {v}" for v in c["add"]]
        if not c["add"] and not c["remove"]:
            out.append(f"~ {c['name']} IN {c['type']} ttl -> {c['ttl']}")
    return out


def compare(
    settings: dict[str, Any],
    addresses: dict[str, str],
    members: list[str],
    served: dict[tuple[str, str], RRset],
    server: str,
) -> dict[str, Any]:
    """Wanted vs served for the owned record sets, and the changes between them."""
    unknown = sorted(set(members) - set(addresses))
    if unknown:
        raise DnsError(f"not members of the pool: {', '.join(unknown)}")
    wanted = wanted_rrsets(settings, addresses, members)
    changes = diff_rrsets(wanted, served)
    return {
        "zone": settings["zone"],
        "server": server,
        "members": sorted(members),
        "wanted": wanted,
        "served": served,
        "changes": changes,
        "diff": describe(changes),
        "before": zone_text(served),
        "after": zone_text(wanted),
    }
