"""The connector's in-process DNS reconciler: who writes, when, and what it sends.

The DNS server is replaced by recording stand-ins for ``plan``/``reconcile``
(pure decision logic under test); the real server is exercised in
tests/integration/test_dns_on_lab.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import RRset
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel
from ansible_collections.takelan.multiall.plugins.module_utils.tns import SerfMember, pool_topology

from connector import dns_reconciler
from connector.dns_reconciler import DnsReconciler

MODEL = PoolModel.from_text(
    "nodes:\n"
    "  n1: {address: 198.18.0.11, pools: [web]}\n"
    "  n2: {address: 198.18.0.12, pools: [web]}\n"
    "  n3: {address: 198.18.0.13, pools: [web]}\n"
    "pools:\n  web:\n    dns: {zone: web.example.test, server: 198.18.0.10}\n"
)
NODES = ["n1", "n2", "n3"]


def topology(*failed: str, sbm: dict[str, str] | None = None):
    sbm = sbm or {}
    serf = {
        n: SerfMember(n, status="failed" if n in failed else "alive", tags={"sbm": sbm.get(n, "0")})
        for n in NODES
    }
    return pool_topology("web", NODES, serf, {})


class FakeServer:
    """Stands in for BIND: serves a set of members, records what is sent."""

    def __init__(self, members: list[str]) -> None:
        self.members = list(members)
        self.sent: list[list[str]] = []
        self.fail: str | None = None

    def served_rrsets(self, server, zone, keys, port=53, timeout=2.0):
        addresses = {n: f"198.18.0.1{n[1]}" for n in NODES}
        out = {key: RRset(key[0], key[1], 0, ()) for key in keys}
        out.update({(n, "A"): RRset(n, "A", 5, (a,)) for n, a in addresses.items()})
        out[("@", "A")] = RRset("@", "A", 5, tuple(addresses[m] for m in self.members))
        return out

    def reconcile(self, settings, addresses, members, server, key=None, timeout=2.0, **_):
        if self.fail:
            raise DnsError(self.fail)
        changed = sorted(members) != sorted(self.members)
        self.sent.append(list(members))
        self.members = list(members)
        return {"changed": changed, "diff": [], "zone": settings["zone"], "members": members}


@pytest.fixture
def server(monkeypatch):
    fake = FakeServer(NODES)
    monkeypatch.setattr(dns_reconciler, "served_rrsets", fake.served_rrsets)
    monkeypatch.setattr(dns_reconciler, "reconcile", fake.reconcile)
    monkeypatch.setattr(dns_reconciler, "load_key_file", lambda path: object())
    return fake


def reconciler(
    node: str = "n1",
    heard: float = 0.0,
    hold_down: float = 3.0,
    settled: bool = True,
    on_change=None,
) -> DnsReconciler:
    """A reconciler whose probes hear every member its view does not mark down.

    ``settled``: its view has been backed by quorum for longer than ``dead_after``
    (the usual state of a running leader), so removals are not held back.
    """
    r: DnsReconciler

    def last_heard(pool: str):
        topo = r.topology.get("web")
        down = {n for n, m in topo.members.items() if m.state in ("failed", "left")} if topo else ()
        return {n: time.monotonic() - (60.0 if n in down else heard) for n in NODES}

    r = DnsReconciler(
        node, MODEL, ["web"], {"hold_down": hold_down}, last_heard, fresh=0.65, on_change=on_change
    )
    if settled:
        observe = r.observe

        def observe_settled(pool, topo):
            observe(pool, topo)
            if r.settled_since[pool] is not None:
                r.settled_since[pool] = min(r.settled_since[pool], time.monotonic() - 1.0)

        r.observe = observe_settled
    return r


def test_only_the_leader_with_quorum_and_fresh_contact_writes():
    r = reconciler("n1")
    r.observe("web", topology())
    assert r.acting("web") == (True, "leader with quorum")
    other = reconciler("n2")
    other.observe("web", topology())
    assert other.acting("web")[0] is False and "n1 is" in other.acting("web")[1]
    r.observe("web", topology("n2", "n3"))
    assert r.acting("web")[0] is False and "quorum" in r.acting("web")[1]
    stale = reconciler("n1", heard=5.0)
    stale.observe("web", topology())
    assert stale.acting("web") == (
        False,
        "no fresh contact with a majority of the pool (partitioned?)",
    )


def test_failed_member_is_removed_once_and_not_resent(server):
    r = reconciler("n1")
    r.observe("web", topology())
    asyncio.run(r._step("web"))
    assert server.sent == [["n1", "n2", "n3"]]
    asyncio.run(r._step("web"))  # nothing changed: nothing sent
    assert len(server.sent) == 1
    r.observe("web", topology("n3"))
    asyncio.run(r._step("web"))
    assert server.sent[-1] == ["n1", "n2"]


def test_recovered_member_waits_for_hold_down(server):
    r = reconciler("n1", hold_down=0.3)
    r.observe("web", topology())
    asyncio.run(r._step("web"))
    r.observe("web", topology("n3"))
    asyncio.run(r._step("web"))
    r.observe("web", topology())
    asyncio.run(r._step("web"))
    assert server.sent[-1] == ["n1", "n2"]  # n3 is held
    assert "n3" in r.choice("web").held
    time.sleep(0.35)
    asyncio.run(r._step("web"))
    assert server.sent[-1] == ["n1", "n2", "n3"]


def test_sbm_critical_removes_and_errors_are_kept_and_retried(server):
    r = reconciler("n1")
    r.observe("web", topology(sbm={"n2": "2"}))
    server.fail = "DNS server 198.18.0.10:53 unreachable for the update: timeout"
    asyncio.run(r._step("web"))
    assert r.state["web"]["error"].startswith("DNS server 198.18.0.10:53 unreachable")
    server.fail = None
    r.state["web"]["retry_at"] = 0.0  # the backoff has passed
    asyncio.run(r._step("web"))
    assert server.sent[-1] == ["n1", "n3"] and r.state["web"]["error"] is None


def test_each_change_is_published_as_a_dns_changed_event(server):
    events = []

    async def collect(event):
        events.append(event)

    r = reconciler("n1", on_change=collect)
    r.observe("web", topology())
    asyncio.run(r._step("web"))
    assert events == []  # the server already served everyone: no change, no event
    r.observe("web", topology("n2"))
    asyncio.run(r._step("web"))
    assert [(e["type"], e["pool"], e["members"]) for e in events] == [
        ("dns_changed", "web", ["n1", "n3"])
    ]


def test_a_non_leader_writes_nothing_but_reports_the_difference(server):
    r = reconciler("n2")
    r.observe("web", topology("n3"))
    asyncio.run(r._step("web"))
    assert server.sent == []
    report = asyncio.run(r.report("web"))["pools"]["web"]
    assert not report["acting"] and not report["in_sync"]
    assert report["diff"] == ["- @ IN A 198.18.0.13"]
    assert report["members"]["excluded"] == {"n3": "failed"}


def test_each_pool_is_updated_with_its_own_key_file(server, monkeypatch):
    loaded: list[str] = []
    monkeypatch.setattr(
        dns_reconciler, "load_key_file", lambda path: loaded.append(path) or f"key<{path}>"
    )
    seen: list[object] = []
    real = server.reconcile
    monkeypatch.setattr(
        dns_reconciler,
        "reconcile",
        lambda *a, key=None, **kw: seen.append(key) or real(*a, key=key, **kw),
    )
    default = reconciler("n1")
    default.observe("web", topology())
    asyncio.run(default._step("web"))
    # The default is the dns_sa role's per-pool file, read once and kept.
    assert loaded == ["/etc/multiall/dns/web.key"] and seen == ["key</etc/multiall/dns/web.key>"]


def test_leader_that_just_regained_quorum_removes_nobody_it_has_not_heard(server):
    # A healed partition: n1 regains quorum while its verdict on n3 is still the
    # one from the split (failed) and n3's first packets have not arrived yet.
    heard = {"n2": 0.0}
    r = DnsReconciler(
        "n1",
        MODEL,
        ["web"],
        {},
        lambda pool: {n: time.monotonic() - age for n, age in heard.items()},
        fresh=0.65,
    )
    r.observe("web", topology("n3"))
    asyncio.run(r._step("web"))
    assert all(sent == NODES for sent in server.sent) and server.members == NODES
    choice = r.choice("web")
    assert choice.members == NODES and "settling" in choice.settling["n3"]
    # Heard from n3 now: marked failed, but evidently up -> still not removed.
    heard["n3"] = 0.0
    r.settled_since["web"] = time.monotonic() - 1.0
    asyncio.run(r._step("web"))
    assert server.members == NODES and "heard just now" in r.choice("web").settling["n3"]
    # Settled, and n3 really silent: now it goes.
    del heard["n3"]
    asyncio.run(r._step("web"))
    assert server.sent[-1] == ["n1", "n2"]


def test_unsettled_leader_still_removes_a_member_it_hears_report_critical(server):
    r = reconciler("n1", settled=False)
    r.observe("web", topology(sbm={"n2": "2"}))
    asyncio.run(r._step("web"))
    assert server.sent == [["n1", "n3"]]


def test_report_says_what_the_server_serves_after_another_writer(server):
    # The leader kept n1 as the last member; then a dns_zone run applied a
    # choice it had read a moment earlier (n2). The report must not claim n1.
    r = reconciler("n1")
    r.observe("web", topology(sbm={"n2": "2", "n3": "2"}))
    asyncio.run(r._step("web"))
    r.observe("web", topology(sbm={"n1": "2", "n2": "2", "n3": "2"}))
    asyncio.run(r._step("web"))
    assert server.members == ["n1"] and r.choice("web").kept_last == ["n1"]
    server.members = ["n2"]  # the other writer
    report = asyncio.run(r.report("web"))["pools"]["web"]
    assert report["members"]["kept_last"] == ["n2"]
    assert [line for line in report["served"] if line.startswith("@")] == ["@ 5 IN A 198.18.0.12"]
    assert report["in_sync"]
    sent = len(server.sent)
    asyncio.run(r._step("web"))  # the leader reconciles at once, from the server's state
    assert server.sent[sent:] == [["n2"]] and r.state["web"]["applied"] == ("n2",)


def test_a_leader_back_in_quorum_reports_what_is_served_before_its_first_step(server):
    """A healed partition: the old minority leader regains quorum, and the
    dns_reaction playbook asks for its choice before the reconcile loop has run
    once. The majority's leader had served n3 alone; n3 has just become fit
    again in this node's view, so hold-down would hold it back if it were not
    served. The choice must keep it, not replace the record with n1 and n2."""
    server.members = ["n3"]
    r = reconciler("n1", hold_down=0.3)
    r.observe("web", topology("n3"))
    time.sleep(0.35)  # n1 and n2 past their hold-down
    r.observe("web", topology())  # n3 fit again just now: in hold-down unless served
    assert r.acting("web")[0] and r.state["web"]["served"] is None
    report = asyncio.run(r.report("web"))["pools"]["web"]
    assert report["members"]["members"] == NODES, report["members"]
    assert server.sent == []
