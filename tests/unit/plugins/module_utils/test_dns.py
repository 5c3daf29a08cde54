"""DNS-SA pure logic: who is published, which records, the diff, keys, serials, templates."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.dns import (
    DEFAULT_TEMPLATE,
    DnsError,
    HoldDown,
    RRset,
    choose_members,
    describe,
    diff_rrsets,
    next_serial,
    parse_key,
    render_zone,
    served_members,
    wanted_rrsets,
    zone_settings,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel
from ansible_collections.takelan.multiall.plugins.module_utils.tns import MemberView

ADDR = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
SETTINGS = {
    "zone": "web.pool.example.test",
    "ttl": 5,
    "record": "@",
    "node_records": True,
    "records": [],
    "mode": "update",
}


def view(**states: str) -> dict[str, MemberView]:
    """``n1="alive/0"`` -> MemberView(state alive, sbm 0)."""
    out = {}
    for name, spec in states.items():
        state, _, sbm = spec.partition("/")
        out[name] = MemberView(name, state, sbm)
    return out


def test_only_alive_members_with_sbm_ok_or_warning_are_published():
    members = view(n1="alive/0", n2="alive/1", n3="alive/2")
    members.update(view(n4="failed/0", n5="maintenance/0", n6="alive/3"))
    choice = choose_members(members)
    assert choice.members == ["n1", "n2"]
    assert choice.excluded == {
        "n3": "SBM CRITICAL",
        "n4": "failed",
        "n5": "maintenance",
        "n6": "SBM UNKNOWN",
    }
    assert choice.kept_last == []


def test_never_empty_keeps_the_least_bad_and_prefers_served():
    members = view(n1="failed/0", n2="alive/2", n3="alive/2")
    choice = choose_members(members, served={"n3"})
    assert choice.members == ["n3"] and choice.kept_last == ["n3"]
    # Nobody served: every member of the best rank.
    assert choose_members(members).members == ["n2", "n3"]
    # Everyone down: still never empty.
    assert choose_members(view(n1="failed/0", n2="left/0")).members == ["n1", "n2"]


def test_unknown_sbm_keeps_a_served_member_never_seen_down():
    members = view(n1="alive/0", n2="alive/3")
    assert choose_members(members, served={"n1", "n2"}).members == ["n1", "n2"]
    assert choose_members(members, served={"n1", "n2"}, was_down={"n2"}).members == ["n1"]
    assert choose_members(members, served={"n1"}).members == ["n1"]


def test_hold_down_gates_adding_a_recovered_member_only():
    hold = HoldDown()
    hold.observe(view(n1="alive/0", n2="alive/0"), now=0.0)
    hold.observe(view(n1="alive/0", n2="failed/0"), now=1.0)
    assert hold.was_down == {"n2"}
    hold.observe(view(n1="alive/0", n2="alive/0"), now=2.0)
    served = {"n1"}
    assert hold.held(2.5, 3.0, served) == {"n2": 2.5}
    choice = choose_members(view(n1="alive/0", n2="alive/0"), hold.held(2.5, 3.0, served), served)
    assert choice.members == ["n1"] and choice.held == {"n2": 2.5}
    assert hold.held(5.0, 3.0, served) == {}
    # A member still served is never pulled out by hold-down.
    assert hold.held(2.5, 3.0, {"n1", "n2"}) == {}


def test_left_before_first_report_is_not_evidence_of_trouble():
    hold = HoldDown()
    hold.observe(view(n1="alive/0", n2="left/"), now=0.0)
    assert hold.was_down == set()


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
    assert diff_rrsets(wanted, {k: v for k, v in wanted.items()}) == []


def test_served_members_maps_addresses_back_to_nodes():
    served = {
        ("@", "A"): RRset("@", "A", 5, ("198.18.0.12",)),
        ("n1", "A"): RRset("n1", "A", 5, ("198.18.0.11",)),
    }
    assert served_members(SETTINGS, ADDR, served) == {"n2"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no TSIG key found"),
        ('key "k" { algorithm hmac-sha256; };', "needs both `algorithm` and `secret`"),
        ('key "k" { algorithm hmac-sha256; secret "not base64!"; };', "is not base64"),
        ('key "k" { algorithm rot13; secret "c2VjcmV0"; };', "is not one of hmac-sha256"),
    ],
)
def test_bad_key_files_are_named_with_what_was_expected(text, needle):
    with pytest.raises(DnsError, match=needle) as info:
        parse_key(text, "/etc/multiall/dns.key")
    assert str(info.value).startswith("/etc/multiall/dns.key")


def test_tsig_keygen_output_parses():
    key = parse_key(
        'key "multiall-dns" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0c2VjcmV0";\n};\n', "f"
    )
    assert (key.name, key.algorithm, key.secret) == (
        "multiall-dns",
        "hmac-sha256",
        "c2VjcmV0c2VjcmV0",
    )


def test_serial_is_monotonic():
    assert next_serial(None, now=1000) == 1000
    assert next_serial(999, now=1000) == 1000
    assert next_serial(5000, now=1000) == 5001  # clock behind: still goes up
    assert next_serial((1 << 32) - 1, now=10) == 0  # RFC 1982 wrap


def test_template_errors_name_the_template_and_line():
    with pytest.raises(DnsError, match=r"bad\.j2:2: zone template error"):
        render_zone("$TTL 5\n{{ nope }}\n", {}, "bad.j2")
    text = render_zone(
        DEFAULT_TEMPLATE,
        {
            "zone": "z.test",
            "ttl": 5,
            "serial": 7,
            "ns_name": "ns.z.test",
            "ns_address": "198.18.0.10",
            "rrsets": [RRset("@", "A", 5, ("198.18.0.11",))],
        },
    )
    assert "( 7 60 30 86400 5 )" in text and "@ 5 IN A 198.18.0.11\n" in text


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
