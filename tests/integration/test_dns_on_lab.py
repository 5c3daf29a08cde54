"""DNS-SA on a lab with one BIND node and a 4-node pool (inventory/lab-dns/pools.yml).

ns1 runs real BIND 9 (named) set up by the real ``dns_sa`` role through
``ansible-playbook``; n1..n4 run real connectors (Serf + probes) whose pool
leader updates the zone with RFC 2136 signed with TSIG. Every assertion reads
the zone back with real DNS queries to ns1.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import load_key_file
from ansible_collections.takelan.multiall.plugins.module_utils._dns_update import apply_update
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

from connector.ansible_env import ansible_env
from lab.connector import control, start_all, wait_converged, wait_for
from lab.dns import install_dns, served
from lab.failover import revive

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "198.18.0.10"
WEB = "web.pool.example.test"
API = "api.pool.example.test"
HOLD_DOWN = 2.0
ALL_WEB = ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"]
RULES = [
    {
        "events": ["member_failed", "member_recovered", "maintenance_enter", "sbm_changed"],
        "playbook": "dns_reaction.yml",
        "pools": ["web"],
        "scope": "pool",
    }
]


@pytest.fixture(scope="module")
def dns_lab(lab_module):
    lab = lab_module(pools_file=str(ROOT / "inventory" / "lab-dns" / "pools.yml"))
    install_dns(lab)
    start_all(lab, rules=RULES, dns={"hold_down": HOLD_DOWN})
    wait_converged(lab, timeout=90)
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 15, "every web member in the pool record")
    return lab


def settled() -> None:
    """Earlier tests moved members in and out: wait until the whole pool is back."""
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 30, "every web member back in DNS")


def playbook(lab, tasks: list, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a one-play playbook against the lab with the real ansible-playbook."""
    play = [{"name": "dns test", "hosts": "n1", "gather_facts": False, "tasks": tasks}]
    path = lab.state_dir / "dns-test.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(lab.inventory_path), str(path), *args],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


def test_role_serves_pool_zones_with_updates_restricted_to_the_pool_key(dns_lab):
    assert served(NS, WEB) == ALL_WEB
    assert served(NS, WEB, "n3") == ["198.18.0.13"]
    conf = dns_lab.exec("ns1", ["cat", "/etc/bind/multiall/named.conf"]).stdout
    assert f'grant "multiall-web" name {WEB}. A AAAA;' in conf
    assert f'grant "multiall-web" name n4.{WEB}. A;' in conf
    assert "allow-update" not in conf
    # The rebuild-mode zone takes no dynamic updates at all.
    api_stanza = conf.split(f'zone "{API}"')[1].split("\n};\n")[0]
    assert "update-policy" not in api_stanza
    # Pool nodes hold their update-mode pools' keys only, private to root.
    mode = dns_lab.exec("n1", ["stat", "-c", "%a", "/etc/multiall/dns/web.key"]).stdout.strip()
    assert mode == "600"
    assert not (dns_lab.node_root("n1") / "etc/multiall/dns/api.key").exists()
    # rndc works against the lab named.
    assert "server is up" in dns_lab.exec("ns1", ["rndc", "status"]).stdout
    # Second run of the role changes nothing.
    out = install_dns(dns_lab)
    assert "changed=0" in out.split("PLAY RECAP")[1], out[-1500:]


def test_pool_key_cannot_touch_soa_ns_unowned_names_or_other_zones(dns_lab):
    """What a pool node (which holds the key) could try: BIND refuses all of it."""
    settled()
    key = load_key_file(str(dns_lab.node_root("n1") / "etc/multiall/dns/web.key"))
    assert key.name == "multiall-web"

    def change(name: str, rtype: str, *values: str) -> list[dict]:
        return [{"name": name, "type": rtype, "ttl": 5, "values": list(values)}]

    attempts = {
        "an unowned name": (WEB, change("evil", "A", "198.18.0.66")),
        "the zone's NS": (WEB, change("@", "NS", "ns.evil.example.")),
        "the zone's SOA": (WEB, change("@", "SOA", "ns.evil. h.evil. 9 60 30 86400 5")),
        "another type at a member's name": (WEB, change("n1", "TXT", '"x"')),
        "deleting the zone's NS": (WEB, change("@", "NS")),
        "another pool's zone": (API, change("@", "A", "198.18.0.66")),
    }
    for what, (zone, changes) in attempts.items():
        with pytest.raises(DnsError, match="REFUSED") as info:
            apply_update(NS, zone, key, changes, timeout=2.0)
        assert "nothing was changed" in str(info.value), what
    assert served(NS, WEB, "evil") == [] and served(NS, API) != ["198.18.0.66"]
    assert served(NS, WEB, "@", "NS") == [f"ns.{WEB}."]
    # What the leader writes is still allowed: a member's own name, the pool name.
    apply_update(NS, WEB, key, change("n1", "A", "198.18.0.11"), timeout=2.0)
    apply_update(NS, WEB, key, change("@", "A", *ALL_WEB), timeout=2.0)
    assert served(NS, WEB) == ALL_WEB


def test_killed_node_leaves_the_pool_record_and_returns_after_hold_down(dns_lab):
    lab = dns_lab
    lab.kill("n3")
    try:
        # How fast is a goal, measured by benchmarks/failover_dns.py (p50 0.7 s).
        wait_for(lambda: "198.18.0.13" not in served(NS, WEB), 10, "n3 out of the A record")
        assert served(NS, WEB) == ["198.18.0.11", "198.18.0.12", "198.18.0.14"]
        # The node's own name stays: that is where an admin reaches it.
        assert served(NS, WEB, "n3") == ["198.18.0.13"]
        # The leader journals what it did: `multiall events` shows it.
        events = control(lab, "n1", {"op": "events"})["events"]
        assert any(
            e["type"] == "dns_changed" and "- @ IN A 198.18.0.13" in e["changes"] for e in events
        )
    finally:
        revive(lab, "n3")
    revived = time.monotonic()
    wait_for(lambda: "198.18.0.13" in served(NS, WEB), 30, "n3 back in the A record")
    back_after = time.monotonic() - revived
    assert back_after >= HOLD_DOWN, f"n3 came back {back_after:.2f}s after revive"
    wait_converged(lab, timeout=60)


def test_maintenance_enter_returns_only_when_drained(dns_lab):
    settled()
    lab = dns_lab
    reply = control(lab, "n2", {"op": "maintenance", "action": "enter", "reason": "kernel"})
    try:
        assert reply["ok"], reply
        assert reply["dns"]["web"] == "drained"
        hits = sum("198.18.0.12" in served(NS, WEB) for _query in range(200))
        assert hits == 0
    finally:
        control(lab, "n2", {"op": "maintenance", "action": "exit"})
    wait_for(lambda: "198.18.0.12" in served(NS, WEB), 20, "n2 back after maintenance")


def test_sbm_critical_removes_the_member_and_ok_brings_it_back(dns_lab):
    settled()
    lab = dns_lab
    lab.exec("n4", ["touch", "/run/sbm-fail"])
    try:
        wait_for(lambda: "198.18.0.14" not in served(NS, WEB), 15, "n4 out on SBM CRITICAL")
        report = control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]
        assert report["members"]["excluded"]["n4"] == "SBM CRITICAL"
    finally:
        lab.exec("n4", ["rm", "-f", "/run/sbm-fail"])
    wait_for(lambda: "198.18.0.14" in served(NS, WEB), 20, "n4 back on SBM OK")


def test_minority_partition_does_not_change_the_zone(dns_lab):
    settled()
    lab = dns_lab
    # n1 (the leader) keeps the DNS node; the majority n2-n4 cannot reach it.
    lab.partition(["n1", "ns1"], ["n2", "n3", "n4"])
    try:
        wait_for(
            lambda: not control(lab, "n1", {"op": "status"})["pools"]["web"]["quorum"],
            15,
            "n1 to lose quorum",
        )
        report = control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]
        assert not report["acting"] and "quorum" in report["why"]
        # n1 alone would publish only itself; it must not write anything.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert served(NS, WEB) == ALL_WEB
            time.sleep(0.1)
    finally:
        lab.heal()
    wait_converged(lab, timeout=60)
    # Once healed, the majority's leader may drop n1 (it was cut off from
    # them); n1 returns after hold-down either way.
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 20, "every member after heal")


def test_last_member_is_never_removed(dns_lab):
    lab = dns_lab
    nodes = ["n1", "n2", "n3", "n4"]
    for node in nodes:
        lab.exec(node, ["touch", "/run/sbm-fail"])
    try:
        kept = wait_for(
            lambda: control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]["members"][
                "kept_last"
            ],
            15,
            "the leader to report kept_last",
        )
        # All CRITICAL: the ones still served stay (the first to fail had already
        # gone while others were fit), never an empty record; and it is reported.
        time.sleep(1)
        kept = control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]["members"]
        assert kept["kept_last"] and served(NS, WEB) == [
            f"198.18.0.1{n[1]}" for n in kept["kept_last"]
        ]
        text = subprocess.run(
            [
                str(BIN / "multiall"),
                "dns",
                "web",
                "--socket",
                str(lab.ctl_path("n1") / "connector.sock"),
            ],
            capture_output=True,
            text=True,
            env=ansible_env(),
            check=False,
        ).stdout
        assert "WARNING: no member is fit" in text
    finally:
        for node in nodes:
            lab.exec(node, ["rm", "-f", "/run/sbm-fail"])
    wait_for(
        lambda: (
            not control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]["members"][
                "kept_last"
            ]
        ),
        15,
        "kept_last to clear",
    )
    # They were CRITICAL: each returns once fit for the hold-down.
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 20, "every member back after hold-down")


def test_multiall_dns_cli_shows_served_and_wanted(dns_lab):
    settled()
    sock = str(dns_lab.ctl_path("n2") / "connector.sock")
    proc = subprocess.run(
        [str(BIN / "multiall"), "dns", "--json", "--socket", sock],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
    )
    data = json.loads(proc.stdout)
    web = data["pools"]["web"]
    assert web["in_sync"] and proc.returncode in (0, 1)
    assert web["leader"] == "n1" and not web["acting"]
    assert "@ 5 IN A 198.18.0.12" in web["served"]
    assert sorted(web["members"]["members"]) == ["n1", "n2", "n3", "n4"]
    bad = subprocess.run(
        [str(BIN / "multiall"), "dns", "nosuchpool", "--socket", sock],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
    )
    assert bad.returncode == 1 and "nosuchpool" in bad.stderr and "DNS pools here" in bad.stderr


def test_watcher_playbook_reconciles_after_the_in_process_update(dns_lab):
    lab = dns_lab
    # Earlier tests produced member_failed/maintenance events on web: the leader
    # ran dns_reaction.yml for them; the in-process update had done the work.
    runs = wait_for(
        lambda: [
            r
            for r in control(lab, "n1", {"op": "runs"})["runs"]
            if r["playbook"] == "dns_reaction.yml" and r["status"] in ("successful", "failed")
        ],
        60,
        "a finished dns_reaction.yml run on the leader",
    )
    assert all(r["status"] == "successful" for r in runs), runs


def test_dns_zone_check_mode_shows_the_diff_and_changes_nothing(dns_lab):
    settled()
    task = {
        "takelan.multiall.dns_zone": {"pool": "web", "members": ["n1"]},
        "register": "plan",
    }
    proc = playbook(dns_lab, [task], "--check", "--diff")
    # --diff prints the owned records, served then wanted: n2-n4 leave the pool name.
    assert "-@ 5 IN A 198.18.0.12" in proc.stdout, proc.stdout[-2000:]
    assert "+@ 5 IN A 198.18.0.11" not in proc.stdout
    assert "changed=1" in proc.stdout
    assert served(NS, WEB) == ALL_WEB


def test_dns_zone_is_idempotent_and_wrong_keys_change_nothing(dns_lab):
    settled()
    ok = playbook(
        dns_lab,
        [{"takelan.multiall.dns_zone": {"pool": "web", "members": ["n1", "n2", "n3", "n4"]}}],
    )
    assert "changed=0" in ok.stdout
    wrong = {
        "takelan.multiall.dns_zone": {
            "pool": "web",
            "members": ["n1"],
            "key_name": "multiall-web",
            "key_secret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        }
    }
    proc = playbook(dns_lab, [wrong], check=False)
    assert proc.returncode != 0
    assert "BADSIG" in proc.stdout and "nothing was changed" in proc.stdout
    unknown = {
        "takelan.multiall.dns_zone": {
            "pool": "web",
            "members": ["n1"],
            "key_file": "/nonexistent.key",
        }
    }
    proc = playbook(dns_lab, [unknown], check=False)
    assert "/nonexistent.key: cannot read the TSIG key" in proc.stdout
    assert served(NS, WEB) == ALL_WEB


def test_rebuild_mode_installs_checked_zones_and_survives_a_bad_template(dns_lab):
    lab = dns_lab
    rebuild = {
        "takelan.multiall.dns_zone": {
            "pool": "api",
            "members": ["n1", "n2"],
            "pools_file": "/etc/multiall/pools.yml",
        },
        "delegate_to": "ns1",
    }
    lab.exec("ns1", ["mkdir", "-p", "/etc/multiall"])
    (lab.node_root("ns1") / "etc/multiall/pools.yml").write_text(lab.inventory_path.read_text())
    playbook(lab, [rebuild])
    assert served(NS, API) == ["198.18.0.11", "198.18.0.12"]
    assert served(NS, API, "_http._tcp", "SRV") == ["0 0 8080 api.pool.example.test."]
    assert served(NS, API, "@", "TXT") == ['"pool=api"']
    again = playbook(lab, [rebuild])
    assert "changed=0" in again.stdout
    zone_file = lab.node_root("ns1") / "var/lib/bind/multiall" / f"{API}.zone"
    live = zone_file.read_text()
    # A template that renders a broken zone: named-checkzone stops it.
    (lab.node_root("ns1") / "etc/multiall/bad.zone.j2").write_text(
        "$TTL 5\n@ IN SOA ns.{{ zone }}. h.{{ zone }}. ( {{ serial }} 60 30 86400 5 )\n"
        "@ IN NS ns.{{ zone }}.\n@ IN A not-an-address\n"
    )
    bad = dict(rebuild)
    bad["takelan.multiall.dns_zone"] = {
        **rebuild["takelan.multiall.dns_zone"],
        "members": ["n3"],
        "template": "/etc/multiall/bad.zone.j2",
    }
    proc = playbook(lab, [bad], check=False)
    assert proc.returncode != 0 and "named-checkzone rejected" in proc.stdout, proc.stdout[-2000:]
    # A template that does not even render (undefined variable).
    (lab.node_root("ns1") / "etc/multiall/undef.zone.j2").write_text("$TTL {{ no_such_var }}\n")
    bad["takelan.multiall.dns_zone"]["template"] = "/etc/multiall/undef.zone.j2"
    proc = playbook(lab, [bad], check=False)
    assert proc.returncode != 0 and "zone template error" in proc.stdout, proc.stdout[-2000:]
    assert zone_file.read_text() == live
    assert served(NS, API) == ["198.18.0.11", "198.18.0.12"]
    leftovers = [p.name for p in zone_file.parent.iterdir() if p.name.startswith(".multiall-")]
    assert leftovers == []
