"""A pool's dns section: defaults filled in once, missing sections named."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    zone_settings,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel


def test_zone_settings_defaults_and_errors():
    model = PoolModel.from_text(
        "nodes:\n  n1: {address: 198.18.0.11, pools: [web, db]}\n"
        "pools:\n  web:\n    dns: {zone: web.example.test.}\n  db: {}\n"
    )
    settings = zone_settings(model, "web")
    assert settings["zone"] == "web.example.test" and settings["ttl"] == 5
    assert settings["mode"] == "update" and settings["record"] == "@"
    with pytest.raises(DnsError, match="pool 'db' has no dns section"):
        zone_settings(model, "db")
    with pytest.raises(DnsError, match="no pool 'x'"):
        zone_settings(model, "x")
