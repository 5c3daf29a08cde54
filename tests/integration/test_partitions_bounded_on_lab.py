"""The partition guarantees at a size probed in the bounded mode (20 members, split 8|12).

The same story as ``test_partitions_on_lab.py`` (real BIND 9 through the
``dns_sa`` role, real connectors, a pool-wide watcher rule), on a pool above
``probe.bounded_above``: each node pings its ring neighbours only and learns of
the rest through relayed ages and alerts (connector/probe_ring.py). The pool
is split with the leader n1 on the 8-node minority side and BIND reachable by
the 12-node majority only, held until each side marks the other failed, then
healed. One round (the 5-node test runs three): this file must stay lean.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_partitions_on_lab import (
    NS,
    RULES,
    WEB,
    BindWatch,
    check_split,
)

from lab.connector import control, start_all, wait_converged, wait_for
from lab.dns import install_dns, served

pytestmark = [pytest.mark.lab, pytest.mark.slow]
SIZE = 20
ADDRESS = {f"n{i}": f"198.18.0.{20 + i}" for i in range(1, SIZE + 1)}
MINORITY = [f"n{i}" for i in range(1, 9)]
MAJORITY = [f"n{i}" for i in range(9, SIZE + 1)]
MAJORITY_LEADER = min(MAJORITY)  # names sort as text: n10
ALL_WEB = sorted(ADDRESS.values())
MODEL = f"""\
plugin: takelan.multiall.pools
defaults:
  ssh_user: root
  python: /usr/bin/python3
nodes:
  ns1: {{address: {NS}, pools: [dns]}}
{"".join(f"  {n}: {{address: {a}, pools: [web]}}{chr(10)}" for n, a in ADDRESS.items())}\
pools:
  dns:
    description: Name server (BIND 9, role dns_sa)
  web:
    description: Twenty web servers, probed in the bounded mode
    dns: {{zone: {WEB}, server: {NS}, ttl: 5}}
"""


@pytest.fixture(scope="module")
def big_lab(lab_module, tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("partitions-bounded")) / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    install_dns(lab)
    start_all(lab, rules=RULES, dns={"hold_down": 2.0})
    wait_converged(lab, timeout=120)
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 60, "every web member in the pool record")
    return lab


def states(lab, observer: str) -> dict[str, str]:
    view = control(lab, observer, {"op": "status"})["pools"]["web"]["members"]
    return {m: v["state"] for m, v in view.items()}


def test_pool_above_the_threshold_is_probed_in_the_bounded_mode(big_lab):
    traffic = control(big_lab, "n5", {"op": "status"})["probe_traffic"]
    assert traffic["bounded"] == ["web"]
    assert traffic["targets"] < SIZE - 1  # ring neighbours, not every peer


def test_bounded_minority_never_acts_and_majority_never_leaves_dns(big_lab):
    lab = big_lab
    with BindWatch() as watch:
        split = time.time()
        lab.partition(MINORITY, [*MAJORITY, "ns1"])
        try:
            wait_for(
                lambda: served(NS, WEB) == sorted(ADDRESS[n] for n in MAJORITY),
                60,
                "the majority's leader to drain the minority",
            )
            for node in MINORITY:
                status = control(lab, node, {"op": "status"})["pools"]["web"]
                assert not status["quorum"], status
            report = control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]
            assert not report["acting"] and "quorum" in report["why"], report
            wait_for(
                lambda: all(states(lab, "n1")[m] == "failed" for m in MAJORITY),
                60,
                "n1 to mark the majority failed",
            )
            wait_for(
                lambda: all(states(lab, MAJORITY_LEADER)[m] == "failed" for m in MINORITY),
                60,
                "the majority to mark the minority failed",
            )
        finally:
            healed = time.time()
            lab.heal()
        wait_converged(lab, timeout=120)
        wait_for(lambda: served(NS, WEB) == ALL_WEB, 60, "every member back in DNS after heal")

    check_split(lab, watch, (split, healed), MINORITY, MAJORITY, ADDRESS)
