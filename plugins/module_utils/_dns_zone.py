# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: a pool's ``dns`` section, its members' addresses, and the error type.

The base the other ``_dns_*`` files build on (it imports none of them):
:class:`DnsError` and the settings read once from the pool model. The
defaults live here and nowhere else, so the ``dns_zone`` module, the
connector and the ``dns_sa`` role's bootstrap zone agree on them. No
dnspython here: the pure member and settings logic works without it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

DEFAULT_TTL = 5
DEFAULT_ZONE_DIR = "/var/lib/bind/multiall"


class DnsError(Exception):
    """A DNS-SA operation failed; the message says what and what to do."""


def settings_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A ``dns`` section (as written in the pool model) with every default filled in."""
    return {
        "zone": str(spec["zone"]).rstrip("."),
        "server": spec.get("server"),
        "mode": spec.get("mode", "update"),
        "ttl": int(spec.get("ttl", DEFAULT_TTL)),
        "record": spec.get("record", "@"),
        "node_records": bool(spec.get("node_records", True)),
        "key_name": spec.get("key_name"),
        "records": [dict(r) for r in spec.get("records") or []],
        "push_dir": spec.get("push_dir"),
        "zone_file": spec.get("zone_file"),
    }


def zone_settings(model: Any, pool: str) -> dict[str, Any]:
    """The pool's ``dns`` section with defaults, or DnsError when it has none."""
    if pool not in model.pools:
        raise DnsError(f"no pool {pool!r} in the pool model; pools: {', '.join(model.pools)}")
    spec = model.pools[pool].get("dns")
    if not spec:
        raise DnsError(f"pool {pool!r} has no dns section in the pool model")
    return settings_from_spec(spec)


def pool_addresses(model: Any, pool: str) -> dict[str, str]:
    """Every declared member of the pool and the address its records carry.

    A member's ``address`` when it is an IP; its ``ip`` when the address is a
    host name (the model requires ``ip`` then), since records need IPs.
    """
    out = {}
    for node in model.members(pool):
        view = model.effective(node)
        try:
            ipaddress.ip_address(view.address)
            out[node] = view.address
        except ValueError:
            out[node] = view.ip or view.address
    return out


def zone_server(settings: dict[str, Any], override: str | None = None) -> str:
    """The DNS server to talk to: the override, else the pool's ``dns.server``."""
    server = override or settings.get("server")
    if not server:
        raise DnsError(f"zone {settings['zone']}: no DNS server; set dns.server in the pool model")
    return str(server)
