"""DNS-SA push mode on a 3-node lab: the leader's zone file travels by FS-SA to BIND.

n1 is a pool member and the pool's DNS server (real BIND 9 set up by the real
``dns_sa`` role); the leader (n1, lowest alive name) writes the rendered zone
into the live FS-SA tree ``/var/lib/multiall/dns-push``; FS-SA carries it to
n2 and n3; n1's connector sees the file change, runs ``named-checkzone`` and
``rndc reload``. Assertions read the pushed file on every node and ask BIND.
No timing assertions (benchmarks/ measure speed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.connector import start_all, wait_converged, wait_for
from lab.dns import install_dns, served
from lab.failover import revive

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "198.18.0.41"
ZONE = "web.pool.example.test"
PUSHED = f"/var/lib/multiall/dns-push/{ZONE}.zone"
ALL = ["198.18.0.41", "198.18.0.42", "198.18.0.43"]
MODEL = f"""\
plugin: takelan.multiall.pools
defaults:
  ssh_user: root
  python: /usr/bin/python3
nodes:
  n1: {{address: 198.18.0.41, pools: [web, dns]}}
  n2: {{address: 198.18.0.42, pools: [web]}}
  n3: {{address: 198.18.0.43, pools: [web]}}
pools:
  dns:
    description: the name server (role dns_sa), also a web member
  web:
    description: push mode - the zone file goes to BIND through FS-SA
    dns: {{zone: {ZONE}, server: {NS}, mode: push, ttl: 5}}
    files:
      /var/lib/multiall/dns-push: {{}}
"""


@pytest.fixture(scope="module")
def lab(lab_module, tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("dnspush")) / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    install_dns(lab)
    start_all(lab, dns={"hold_down": 1.0})
    wait_converged(lab, timeout=90)
    return lab


def pushed(lab, node: str) -> str:
    return lab.exec(node, ["sh", "-c", f"cat {PUSHED} 2>/dev/null || true"]).stdout


def test_killed_member_leaves_the_pushed_zone_and_bind_then_returns(lab):
    wait_for(lambda: served(NS, ZONE) == ALL, 60, "every member served from the pushed zone")
    # FS-SA carried the leader's file to the other members.
    wait_for(lambda: "@ 5 IN A 198.18.0.43" in pushed(lab, "n3"), 30, "pushed zone on n3")
    lab.kill("n3")
    try:
        wait_for(
            lambda: "@ 5 IN A 198.18.0.43" not in pushed(lab, "n1"), 30, "n3 out of pushed zone"
        )
        wait_for(lambda: served(NS, ZONE) == ALL[:2], 30, "BIND no longer hands out n3")
        assert "@ 5 IN A 198.18.0.43" not in pushed(lab, "n2")  # carried to n2 as well
        assert served(NS, ZONE, "n3") == ["198.18.0.43"]  # its own name stays
    finally:
        revive(lab, "n3")
    wait_converged(lab, timeout=90)
    wait_for(lambda: served(NS, ZONE) == ALL, 60, "n3 back in BIND through the pushed zone")
    assert "@ 5 IN A 198.18.0.43" in pushed(lab, "n2")
