"""Partitions on a 5-node DNS pool: only a quorum acts, and healing flaps nobody out of DNS.

ns1 runs real BIND 9 (the ``dns_sa`` role through ``ansible-playbook``); n1..n5
run real connectors (Serf + probes) with a pool-wide watcher rule. The pool is
split 2|3 with the leader n1 on the minority side and BIND reachable by the
majority only, held until each side's view marks the other failed, then
healed. BIND is read every 50 ms across the whole sequence.

Each test starts from an explicit settled state (every member in DNS, every
connector converged) on a lab of its own module, so no earlier test's events
matter; nothing here asserts how fast anything happens (see
``benchmarks/failover_dns.py`` for that).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

from lab.connector import control, start_all, wait_converged, wait_for
from lab.dns import install_dns, served

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "198.18.0.10"
WEB = "web.pool.example.test"
MINORITY = ["n1", "n2"]
MAJORITY = ["n3", "n4", "n5"]
ADDRESS = {f"n{i}": f"198.18.0.2{i}" for i in range(1, 6)}
ALL_WEB = sorted(ADDRESS.values())
RULES = [
    {
        "events": ["member_failed", "member_recovered", "quorum_lost", "quorum_regained"],
        "playbook": "dns_reaction.yml",
        "pools": ["web"],
        "scope": "pool",
    }
]
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
    description: Five web servers; DNS follows the topology by dynamic update
    dns: {{zone: {WEB}, server: {NS}, ttl: 5}}
"""


@pytest.fixture(scope="module")
def split_lab(lab_module, tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("partitions")) / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    install_dns(lab)
    start_all(lab, rules=RULES, dns={"hold_down": 2.0})
    return lab


def settled(lab) -> None:
    """The state every test starts from: healed, converged, the whole pool in DNS, n1 leading."""
    lab.heal()
    wait_converged(lab, timeout=90)
    wait_for(lambda: served(NS, WEB) == ALL_WEB, 30, "every web member in the pool record")
    for node in ADDRESS:
        wait_for(
            lambda node=node: (
                control(lab, node, {"op": "status"})["pools"]["web"]["leader"] == "n1"
            ),
            30,
            f"{node} to see n1 as the leader",
        )


class BindWatch:
    """Reads the pool record every 50 ms in a thread; keeps every distinct answer."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, tuple[str, ...]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = tuple(served(NS, WEB))
            except (DnsError, OSError):  # a lost query is no answer, not a verdict
                self.errors += 1
            else:
                if not self.seen or self.seen[-1][1] != now:
                    self.seen.append((time.time(), now))
            self._stop.wait(0.05)

    def __enter__(self) -> BindWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def dns_changes(lab, node: str, since: float, until: float) -> list[dict]:
    events = control(lab, node, {"op": "events"})["events"]
    return [e for e in events if e["type"] == "dns_changed" and since <= e["ts"] <= until]


def runs_started(lab, node: str, since: float, until: float) -> list[dict]:
    """Runs that began an attempt in the window (a run only queued then, or skipped, did not)."""
    runs = control(lab, node, {"op": "runs"})["runs"]
    return [r for r in runs if since <= (r["started"] or 0) <= until]


def quorum_lost_at(lab, node: str, since: float) -> float:
    """When ``node`` journaled losing the pool's quorum (the first time after ``since``)."""
    events = control(lab, node, {"op": "events"})["events"]
    lost = [e["ts"] for e in events if e["type"] == "quorum_lost" and e["ts"] >= since]
    assert lost, f"{node} never journaled quorum_lost"
    return lost[0]


def sees_failed(lab, observer: str, members: list[str]) -> bool:
    """Whether ``observer``'s TNS view marks every one of ``members`` failed."""
    view = control(lab, observer, {"op": "status"})["pools"]["web"]["members"]
    return all(view[m]["state"] == "failed" for m in members)


def check_split(
    lab,
    watch: BindWatch,
    window: tuple[float, float],
    minority: list[str],
    majority: list[str],
    address: dict[str, str],
) -> None:
    """What a split and heal must never break (also used at the bounded size)."""
    split, healed = window
    # No member on the majority side ever left DNS: not during the split, not at the heal.
    answers = [set(values) for _ts, values in watch.seen]
    assert answers, "BIND never answered"
    for (ts, values), got in zip(watch.seen, answers, strict=True):
        missing = [n for n in majority if address[n] not in got]
        assert not missing, f"{missing} out of DNS at {ts - split:+.2f} s: {values}; {watch.seen}"
    # The minority never wrote DNS and never ran a pool-wide playbook while split.
    for node in minority:
        assert dns_changes(lab, node, split, healed) == []
        # Nor did it start a pool-wide run once it knew it was the minority (a
        # run may start in the first dead_after, before anyone can know; its
        # dns_zone then finds no quorum and changes nothing, as checked above).
        lost = quorum_lost_at(lab, node, split)
        assert runs_started(lab, node, lost, healed) == [], control(lab, node, {"op": "runs"})
    # The majority's leader (the lowest name there) did both.
    assert dns_changes(lab, min(majority), split, healed)


# The heal races packets against stale verdicts: three independent rounds.
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_minority_never_acts_and_majority_members_never_leave_dns_across_split_and_heal(
    split_lab, round_
):
    lab = split_lab
    settled(lab)
    with BindWatch() as watch:
        split = time.time()
        lab.partition(MINORITY, [*MAJORITY, "ns1"])
        try:
            # The majority fails the far side out of DNS and keeps serving.
            wait_for(
                lambda: served(NS, WEB) == [ADDRESS[n] for n in MAJORITY],
                30,
                "the majority's leader to drain n1 and n2",
            )
            # The minority loses quorum too (its own dead_after may end a moment
            # after the majority's leader acted: wait for it, do not race it).
            for node in MINORITY:
                wait_for(
                    lambda node=node: (
                        not control(lab, node, {"op": "status"})["pools"]["web"]["quorum"]
                    ),
                    15,
                    f"{node} to lose quorum",
                )
                status = control(lab, node, {"op": "status"})["pools"]["web"]
                assert status["leader"] == "n1" and not status["quorum"], status
            report = control(lab, "n1", {"op": "dns", "pool": "web"})["pools"]["web"]
            assert not report["acting"] and "quorum" in report["why"], report
            # Hold the split until each side's view marks the other side failed: at
            # the heal the old minority leader then holds verdicts gone stale.
            wait_for(lambda: sees_failed(lab, "n1", MAJORITY), 60, "n1 to mark n3-n5 failed")
            wait_for(lambda: sees_failed(lab, "n3", MINORITY), 60, "n3 to mark n1, n2 failed")
        finally:
            healed = time.time()
            lab.heal()
        wait_converged(lab, timeout=90)
        wait_for(lambda: served(NS, WEB) == ALL_WEB, 60, "every member back in DNS after heal")

    check_split(lab, watch, (split, healed), MINORITY, MAJORITY, ADDRESS)
    ran = wait_for(
        lambda: [
            r
            for r in runs_started(lab, "n3", split, healed)
            if r["status"] in ("successful", "failed")
        ],
        120,
        "the majority leader's dns_reaction.yml run to finish",
    )
    assert all(r["status"] == "successful" for r in ran), ran
