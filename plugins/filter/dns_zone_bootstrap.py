# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``takelan.multiall.dns_zone_bootstrap``: a pool's first zone file, from the module's template.

The ``dns_sa`` role writes each pool zone once before named starts; rebuild
mode later renders the same zone. Both go through ``_dns_rebuild`` so the
SOA, NS and TTL defaults exist once. Documentation: ``dns_zone_bootstrap.yml``.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.module_utils._dns_rebuild import (
    bootstrap_zone,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError


def dns_zone_bootstrap(spec: Any, server: str) -> str:
    """Zone-file text for the pool ``dns`` section ``spec``, served by ``server``."""
    if not isinstance(spec, dict) or not spec.get("zone"):
        raise AnsibleFilterError(
            f"dns_zone_bootstrap: expected a pool's dns section with a zone, got {spec!r}"
        )
    try:
        return bootstrap_zone(dict(spec), str(server))
    except (DnsError, ValueError, TypeError) as exc:
        raise AnsibleFilterError(f"dns_zone_bootstrap: zone {spec['zone']}: {exc}") from None


class FilterModule:
    """The collection's DNS-SA filters."""

    def filters(self) -> dict[str, Any]:
        """Filter name -> function."""
        return {"dns_zone_bootstrap": dns_zone_bootstrap}
