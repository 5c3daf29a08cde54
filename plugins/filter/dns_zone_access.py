# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``takelan.multiall.dns_zone_access``: which key may update which records of a pool's zone.

The ``dns_sa`` role writes BIND ``update-policy`` grants from it, so the
names and types a pool's key may change are exactly the record sets the
leader writes (``_dns_records.owned_keys``), computed by the same code.
Documentation: ``dns_zone_access.yml``.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import update_grants
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import pool_key_name
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    settings_from_spec,
)


def dns_zone_access(spec: Any, pool: str, addresses: Any) -> dict[str, Any]:
    """Key name, members and update grants of pool ``pool`` whose ``dns`` section is ``spec``."""
    if not isinstance(spec, dict) or not spec.get("zone"):
        raise AnsibleFilterError(
            f"dns_zone_access: pool {pool}: expected a pool's dns section with a zone, got {spec!r}"
        )
    if not isinstance(addresses, dict):
        raise AnsibleFilterError(
            f"dns_zone_access: pool {pool}: members must be a mapping of node name to "
            f"address, got {addresses!r}"
        )
    addresses = {str(k): str(v) for k, v in addresses.items()}
    try:
        settings = settings_from_spec(dict(spec))
        grants = update_grants(settings, addresses) if settings["mode"] == "update" else []
    except (DnsError, ValueError, TypeError) as exc:
        raise AnsibleFilterError(f"dns_zone_access: pool {pool}: {exc}") from None
    return {
        "pool": str(pool),
        "zone": settings["zone"],
        "mode": settings["mode"],
        "key_name": pool_key_name(str(pool), settings),
        "members": sorted(addresses),
        "grants": [{"name": name, "types": list(types)} for name, types in grants],
    }


class FilterModule:
    """The collection's DNS-SA access filter."""

    def filters(self) -> dict[str, Any]:
        """Filter name -> function."""
        return {"dns_zone_access": dns_zone_access}
