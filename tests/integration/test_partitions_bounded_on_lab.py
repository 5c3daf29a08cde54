"""The partition guarantees at a size probed in the bounded mode (20 members, split 8|12).

The quorum side of ``test_partitions_on_lab.py`` on a pool above
``probe.bounded_above``: each node pings its ring neighbours only and learns of
the rest through relayed ages and alerts (connector/probe_ring.py). The pool is
split 8|12 with the leader n1 on the minority side, held until each side marks
the other failed, then healed. What DNS-SA relies on is checked on every node:
the minority loses quorum (counted on the members it has fresh evidence of,
the same evidence as the fresh-majority guard), the majority keeps it and fails the minority, and after the heal everyone is back. BIND is left
out (its playbook over 20 nodes is what would make this file slow); the DNS
story itself is ``test_partitions_on_lab.py``'s.
"""

from __future__ import annotations

import time

import pytest

from lab.connector import control, start_all, wait_converged, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
SIZE = 20
ADDRESS = {f"n{i}": f"198.18.0.{20 + i}" for i in range(1, SIZE + 1)}
MINORITY = [f"n{i}" for i in range(1, 9)]
MAJORITY = [f"n{i}" for i in range(9, SIZE + 1)]
MODEL = f"""\
plugin: takelan.multiall.pools
defaults:
  ssh_user: root
  python: /usr/bin/python3
nodes:
{"".join(f"  {n}: {{address: {a}, pools: [web]}}{chr(10)}" for n, a in ADDRESS.items())}\
pools:
  web:
    description: Twenty web servers, probed in the bounded mode
"""


@pytest.fixture(scope="module")
def big_lab(lab_module, tmp_path_factory):
    path = tmp_path_factory.mktemp("partitions-bounded") / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    start_all(lab)
    wait_converged(lab, timeout=180)
    return lab


def web(lab, node: str) -> dict:
    return control(lab, node, {"op": "status"})["pools"]["web"]


def events(lab, node: str, kind: str, since: float, until: float) -> list[dict]:
    found = control(lab, node, {"op": "events", "limit": 1000})["events"]
    return [e for e in found if e["type"] == kind and since <= e["ts"] <= until]


def test_pool_above_the_threshold_is_probed_in_the_bounded_mode(big_lab):
    traffic = control(big_lab, "n5", {"op": "status"})["probe_traffic"]
    assert traffic["bounded"] == ["web"]
    assert traffic["targets"] < SIZE - 1  # ring neighbours, not every peer


def test_bounded_minority_loses_quorum_majority_keeps_it_and_heal_restores_all(big_lab):
    lab = big_lab
    split = time.time()
    lab.partition(MINORITY, MAJORITY)
    try:
        for node in MINORITY:
            wait_for(lambda node=node: not web(lab, node)["quorum"], 30, f"{node} to lose quorum")
        # Every majority node reaches the verdict, each in its own round (its view of the
        # minority's observers expires on its own clock): wait for each, not only one.
        for node in MAJORITY:
            wait_for(
                lambda node=node: all(
                    web(lab, node)["members"][m]["state"] == "failed" for m in MINORITY
                ),
                60,
                f"{node} to mark the minority failed",
            )
        for node in MAJORITY:
            status = web(lab, node)
            assert status["quorum"], (node, status)
            assert all(status["members"][m]["state"] == "failed" for m in MINORITY), node
        for node in MINORITY:
            assert not web(lab, node)["quorum"], node
    finally:
        healed = time.time()
        lab.heal()
    # The majority never lost quorum; the minority lost it and said so.
    for node in MAJORITY:
        assert events(lab, node, "quorum_lost", split, healed) == [], node
    for node in MINORITY:
        assert events(lab, node, "quorum_lost", split, healed), node
    wait_converged(lab, timeout=120)
    for node in ADDRESS:
        assert web(lab, node)["quorum"], node
