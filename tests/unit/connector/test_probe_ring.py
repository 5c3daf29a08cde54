"""Bounded probing of large pools (connector/probe_ring.py) on a simulated network.

Real Prober objects exchange the very datagrams they produce; the test owns
the clock and the wire (who is dead, which links are cut), and asks
``module_utils/tns.py`` for the verdicts each node would publish.
"""

from __future__ import annotations

import pytest

from connector import probe
from connector.probe import Prober
from connector.probe_ring import (
    CHUNK,
    MAINT,
    NORMAL,
    BoundedPool,
    decode_ages,
    encode_ages,
    ring_neighbours,
)
from connector.serf import join_targets
from plugins.module_utils.tns import (
    ALIVE,
    FAILED,
    MAINTENANCE,
    SerfMember,
    pool_topology,
    with_probed,
)

INTERVAL, DEAD_AFTER = 0.2, 0.65


class Wire:
    """Keeps what a prober sends until the test delivers it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr[0]))


class Lab:
    """N probers in one pool, a clock, dead nodes and cut links."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, size: int, pools: dict | None = None):
        self.now = 1000.0
        monkeypatch.setattr(probe.time, "monotonic", lambda: self.now)
        self.names = [f"n{i:02d}" for i in range(size)]
        self.addr = {n: f"198.18.0.{i + 10}" for i, n in enumerate(self.names)}
        self.by_addr = {a: n for n, a in self.addr.items()}
        self.pools = pools or {"big": list(self.names)}
        keys = {p: p.encode() * 32 for p in self.pools}
        self.nodes: dict[str, Prober] = {}
        self.pending: set[str] = set()
        for name in self.names:
            mine = {p: m for p, m in self.pools.items() if name in m}
            peers = {n: self.addr[n] for m in mine.values() for n in m if n != name}
            node = Prober(
                name,
                peers,
                7947,
                {p: keys[p] for p in mine},
                mine,
                INTERVAL,
                DEAD_AFTER,
                lambda: None,
                dict,
                lambda: "0",
                epoch=1,
            )
            node.connection_made(Wire())  # type: ignore[arg-type]
            node.started = self.now - 10  # past the start-up grace
            # _push_soon sends within milliseconds: the test sends before the clock moves.
            node._push_soon = lambda n=name: self.pending.add(n)  # type: ignore[method-assign]
            self.nodes[name] = node
        self.dead: set[str] = set()
        self.cut: set[frozenset[str]] = set()
        self.largest = 0

    def link_up(self, a: str, b: str) -> bool:
        return a not in self.dead and b not in self.dead and frozenset((a, b)) not in self.cut

    def staggered_start(self, per_round: int) -> None:
        """Every node down, then PER_ROUND of them starting each round (a pool starting)."""
        self.dead = set(self.names)
        waiting = list(self.names)
        while waiting:
            for name in waiting[:per_round]:
                self.dead.discard(name)
                self.nodes[name].started = self.now
            waiting = waiting[per_round:]
            self.round()

    def rounds(self, count: int) -> None:
        """COUNT probe intervals."""
        for _round in range(count):
            self.round()

    def round(self) -> None:
        """One probe interval: every live node sends its round, everything is delivered."""
        for name, node in self.nodes.items():
            if name in self.dead:
                continue
            extra = {r.extra_target() for r in node.bounded.values()} - {None}
            node._round([*node.targets, *sorted(p for p in extra if p not in node.targets)])
        self.deliver()  # a LAN delivers in well under a millisecond
        for _half in range(2):
            self.now += INTERVAL / 2
            for name, node in self.nodes.items():
                if name not in self.dead:
                    node._refresh()
            self.deliver()

    def deliver(self) -> None:
        """Deliver everything sent, and what that makes nodes push at once, until quiet."""
        while True:
            for name in sorted(self.pending):
                if name not in self.dead:
                    self.nodes[name]._push()
            self.pending.clear()
            quiet = True
            for name, node in self.nodes.items():
                wire = node.transport
                sent, wire.sent = wire.sent, []  # type: ignore[union-attr]
                for data, to in sent:
                    quiet = False
                    self.largest = max(self.largest, len(data))
                    dest = self.by_addr[to]
                    if self.link_up(name, dest):
                        self.nodes[dest].datagram_received(data, (self.addr[name], 7947))
            if quiet and not self.pending:
                return

    def topology(self, name: str, pool: str = "big"):
        node = self.nodes[name]
        serf = {n: SerfMember(n) for n in self.pools[pool]}
        return pool_topology(
            pool,
            self.pools[pool],
            serf,
            node.observations(pool=pool),
            me=name,
            reach=node.reach(pool),
        )


def test_ring_neighbours_are_symmetric_bounded_and_the_same_on_every_node():
    members = [f"n{i}" for i in range(100)]
    rings = ring_neighbours("big", members, 4)
    assert rings == ring_neighbours("big", list(reversed(members)), 4)
    for member, neighbours in rings.items():
        assert 2 <= len(neighbours) <= 8 and member not in neighbours
        assert all(member in rings[n] for n in neighbours)


def test_ages_round_trip_and_refuse_garbage():
    ages = [0, 1, 65, 0xFFFF]
    assert decode_ages(encode_ages(ages), CHUNK) == ages
    assert decode_ages("not base64!", CHUNK) is None
    assert decode_ages(encode_ages([1] * (CHUNK + 1)), CHUNK) is None


def test_small_pool_stays_all_to_all(monkeypatch):
    lab = Lab(monkeypatch, 12)
    assert not lab.nodes["n00"].bounded and len(lab.nodes["n00"].targets) == 11


def test_large_pool_probes_a_bounded_number_of_peers_in_one_datagram(monkeypatch):
    lab = Lab(monkeypatch, 40)
    lab.rounds(5)
    for name, node in lab.nodes.items():
        assert len(node.targets) <= 8
        topo = lab.topology(name)
        assert topo.quorum and all(m.state == "alive" for m in topo.members.values())
        # Every member is heard (relayed), not only the ring neighbours.
        assert all(node.reach("big").values())
    assert lab.largest < 1400


def test_dead_member_is_failed_on_every_survivor_by_its_observers_majority(monkeypatch):
    lab = Lab(monkeypatch, 40)
    lab.rounds(5)
    lab.dead.add("n07")
    rounds = 0
    while rounds < 10 and any(
        lab.topology(n).members["n07"].state != FAILED for n in lab.names if n not in lab.dead
    ):
        lab.round()
        rounds += 1
    # Observers see it at dead_after, their alerts reach everyone before the next round.
    assert rounds <= 5
    for name in lab.names:
        if name != "n07":
            topo = lab.topology(name)
            assert topo.quorum
            assert [m for m, v in topo.members.items() if v.state == FAILED] == ["n07"]
            assert topo.members["n07"].observers == len(lab.nodes["n07"].targets)


def test_a_staggered_start_converges_a_round_after_the_last_node_is_up(monkeypatch):
    """Nodes coming up a few per round (a pool starting): early nodes accuse the late
    ones, then clear. Every clearance must reach every node at once, not wait out
    the 2 s a stale alert is kept (more records change than a packet holds)."""
    lab = Lab(monkeypatch, 64)
    lab.staggered_start(4)
    lab.rounds(2)
    for name in lab.names:
        assert all(m.state == ALIVE for m in lab.topology(name).members.values()), name


def test_one_broken_link_accuses_nobody(monkeypatch):
    """Indirect evidence: an observer that loses its subject still hears it through others."""
    lab = Lab(monkeypatch, 40)
    subject = lab.nodes["n03"].targets[0]
    lab.cut.add(frozenset(("n03", subject)))
    lab.rounds(20)
    for name in lab.names:
        assert all(m.state == "alive" for m in lab.topology(name).members.values())


def test_minority_of_a_partition_loses_quorum_and_the_majority_fails_it(monkeypatch):
    lab = Lab(monkeypatch, 24)
    lab.rounds(5)
    minority, majority = lab.names[:10], lab.names[10:]
    lab.cut |= {frozenset((a, b)) for a in minority for b in majority}
    lab.rounds(4)  # dead_after has passed
    assert not any(lab.topology(n).quorum for n in minority)
    lab.rounds(8)  # and the minority's last records (2 s) are gone
    for name in majority:
        topo = lab.topology(name)
        assert topo.quorum
        assert sorted(m for m, v in topo.members.items() if v.state == FAILED) == minority
    assert not any(lab.topology(n).quorum for n in minority)
    lab.cut.clear()
    lab.rounds(3)
    for name in lab.names:
        topo = lab.topology(name)
        assert topo.quorum and not [m for m, v in topo.members.items() if v.state == FAILED]


def test_a_record_speaks_only_for_the_observers_own_subjects(monkeypatch):
    lab = Lab(monkeypatch, 20)
    lab.rounds(3)
    ring = lab.nodes["n00"].bounded["big"]
    liar = "n05"
    outsider = next(m for m in lab.names if m not in ring.neighbours[liar] and m != liar)
    ring.accept(liar, {"rec": {liar: [0, [outsider]]}}, lab.now)
    assert ring.records[liar][1] == ()


def test_node_in_two_large_pools_pings_each_shared_peer_once(monkeypatch):
    names = [f"n{i:02d}" for i in range(30)]
    lab = Lab(monkeypatch, 30, {"a": names, "b": names[:20]})
    node = lab.nodes["n00"]
    assert len(node.targets) == len(set(node.targets))
    lab.round()
    sent_to = [to for _d, to in node.transport.sent]  # type: ignore[union-attr]
    assert not sent_to  # delivered
    lab.rounds(3)
    assert lab.topology("n00", "a").quorum and lab.topology("n00", "b").quorum


def test_serf_join_asks_a_few_missing_peers_not_every_peer():
    peers = {f"n{i}": f"198.18.0.{i}" for i in range(1, 129)}
    alive = {f"n{i}" for i in range(1, 120)}
    targets = join_targets(peers, alive)
    assert len(targets) == 4
    assert set(targets) <= {peers[f"n{i}"] for i in range(120, 129)}
    assert join_targets(peers, set(peers)) == []


def probed_view(lab: Lab, name: str):
    """NAME's topology with an empty Serf table: every member alive only by its probes."""
    node = lab.nodes[name]
    members, _promoted = with_probed({name: SerfMember(name)}, node.probed("big"))
    return pool_topology(
        "big",
        lab.pools["big"],
        members,
        node.observations(pool="big"),
        me=name,
        reach=node.reach("big"),
    )


def test_a_pool_whose_serf_has_seen_nobody_converges_by_probes_alone(monkeypatch):
    """Members not in Serf's table count alive by relayed evidence: a pool starting
    converges in the probes' rounds, not in Serf's gossip (seconds per round)."""
    lab = Lab(monkeypatch, 64)
    lab.staggered_start(8)
    lab.rounds(2)
    for name in lab.names:
        assert lab.nodes[name].probed("big") == {n: "0" for n in lab.names if n != name}
        topo = probed_view(lab, name)
        assert topo.quorum and all(m.state == ALIVE for m in topo.members.values()), name
    # A member that dies is failed by its observers' majority at once, and leaves
    # everyone's probed set when its evidence is older than the 2 s observers count for.
    lab.dead.add("n09")
    lab.rounds(5)
    survivors = [n for n in lab.names if n != "n09"]
    assert all(probed_view(lab, n).members["n09"].state == FAILED for n in survivors)
    lab.rounds(8)
    assert all("n09" not in lab.nodes[n].probed("big") for n in survivors)


def test_a_member_entering_maintenance_is_known_everywhere_with_its_evidence(monkeypatch):
    """Its maintenance flag travels with its relayed age: every node, its ring
    neighbours or not, keeps it out of service before Serf gossips the tag."""
    lab = Lab(monkeypatch, 40)
    lab.rounds(3)
    node = lab.nodes["n05"]
    node.maint_seen = lambda: {"n05": "1:kernel"}  # type: ignore[method-assign]
    lab.rounds(3)
    for name in lab.names:
        if name == "n05":
            continue
        # The reason too where it heard n05 itself (a ring neighbour, or the rotation).
        assert lab.nodes[name].probed("big")["n05"] in ("1:kernel", "1:"), name
        assert probed_view(lab, name).members["n05"].state == MAINTENANCE
    node.maint_seen = lambda: {"n05": "0"}  # type: ignore[method-assign]
    lab.rounds(3)
    assert all(lab.nodes[n].probed("big")["n05"] == "0" for n in lab.names if n != "n05")


def test_evidence_relayed_by_an_older_connector_promotes_nobody(monkeypatch):
    """A section without maintenance flags (a connector before them) still refreshes
    ages, but a member whose state it does not say is never counted alive by it."""
    lab = Lab(monkeypatch, 40)
    ring = BoundedPool("big", "n00", lab.names, 3, {}, DEAD_AFTER)
    ages = [0] * len(lab.names)
    ring.accept("n01", {"ages": [0, encode_ages(ages)], "rec": {}}, lab.now)
    ring.refresh(lab.now, grace=False)
    assert all(ring.reach.values()) and ring.probed(lab.now) == {}
    # The same evidence from a connector that says the flags: every member is known.
    section = {"ages": [0, encode_ages(ages)], "rec": {}, "mx": [[3], []], "maint": {"n02": "0"}}
    ring.accept("n02", section, lab.now + 0.05)
    probed = ring.probed(lab.now + 0.05)
    assert probed["n03"] == MAINT and probed["n02"] == NORMAL and len(probed) == 39
