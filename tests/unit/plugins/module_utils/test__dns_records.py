"""The owned record sets: what is wanted, how it differs from what is served."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
    RRset,
    describe,
    diff_rrsets,
    served_members,
    update_grants,
    wanted_rrsets,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

ADDR = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
SETTINGS = {
    "zone": "web.pool.example.test",
    "ttl": 5,
    "record": "@",
    "node_records": True,
    "records": [],
    "mode": "update",
}


def test_wanted_records_pool_name_node_names_and_extras():
    settings = {
        **SETTINGS,
        "records": [
            {"name": "_http._tcp", "type": "SRV", "value": "0 0 8080 @"},
            {"name": "@", "type": "TXT", "value": '"v=1"', "ttl": 60},
        ],
    }
    wanted = wanted_rrsets(settings, {**ADDR, "n4": "2001:db8::4"}, ["n1", "n3", "n4"])
    assert wanted[("@", "A")] == RRset("@", "A", 5, ("198.18.0.11", "198.18.0.13"))
    assert wanted[("@", "AAAA")].values == ("2001:db8::4",)
    assert wanted[("n2", "A")].values == ("198.18.0.12",)  # down or not, its own name stays
    assert wanted[("_http._tcp", "SRV")].values == ("0 0 8080 web.pool.example.test.",)
    assert wanted[("@", "TXT")].ttl == 60


def test_hostname_addresses_are_refused_for_pool_records():
    with pytest.raises(DnsError, match=r"n1: address 'web1\.example\.test' is not an IP"):
        wanted_rrsets(SETTINGS, {"n1": "web1.example.test"}, ["n1"])


def test_diff_lists_added_removed_and_ttl_changes_only():
    wanted = wanted_rrsets(SETTINGS, ADDR, ["n1", "n2"])
    served = {
        ("@", "A"): RRset("@", "A", 5, ("198.18.0.13", "198.18.0.11")),
        ("@", "AAAA"): RRset("@", "AAAA", 0, ()),
        ("n1", "A"): RRset("n1", "A", 300, ("198.18.0.11",)),
        ("n2", "A"): RRset("n2", "A", 5, ("198.18.0.12",)),
        ("n3", "A"): RRset("n3", "A", 5, ("198.18.0.13",)),
    }
    changes = diff_rrsets(wanted, served)
    assert [(c["name"], c["add"], c["remove"]) for c in changes] == [
        ("@", ["198.18.0.12"], ["198.18.0.13"]),
        ("n1", [], []),
    ]
    assert describe(changes) == [
        "- @ IN A 198.18.0.13",
        "+ @ 5 IN A 198.18.0.12",
        "~ n1 IN A ttl -> 5",
    ]
    assert diff_rrsets(wanted, dict(wanted)) == []


def test_served_members_maps_addresses_back_to_nodes():
    served = {
        ("@", "A"): RRset("@", "A", 5, ("198.18.0.12",)),
        ("n1", "A"): RRset("n1", "A", 5, ("198.18.0.11",)),
    }
    assert served_members(SETTINGS, ADDR, served) == {"n2"}


def test_update_grants_are_exactly_the_owned_names_and_types():
    settings = dict(
        SETTINGS,
        records=[
            {"name": "_http._tcp", "type": "srv", "value": "0 0 8080 @"},
            {"name": "@", "type": "TXT", "value": '"pool=web"'},
        ],
    )
    grants = update_grants(settings, {"n1": "198.18.0.11", "n2": "2001:db8::2"})
    assert grants == [
        ("_http._tcp.web.pool.example.test.", ("SRV",)),
        ("n1.web.pool.example.test.", ("A",)),
        ("n2.web.pool.example.test.", ("AAAA",)),
        ("web.pool.example.test.", ("A", "AAAA", "TXT")),
    ]
    # No SOA or NS anywhere: the key cannot take the zone over.
    assert not {t for _n, types in grants for t in types} & {"SOA", "NS"}
    www = update_grants(dict(SETTINGS, record="www", node_records=False), {})
    assert www == [("www.web.pool.example.test.", ("A", "AAAA"))]
    with pytest.raises(DnsError, match="node_records is on but no member is known"):
        update_grants(SETTINGS, {})
