"""TNS topology verdicts: failure by peer majority, leader, quorum, events."""

from __future__ import annotations

from ansible_collections.takelan.multiall.plugins.module_utils.tns import (
    ALIVE,
    FAILED,
    LEFT,
    MAINTENANCE,
    SUSPECT,
    SerfMember,
    maintenance_tag,
    parse_maintenance_tag,
    pool_topology,
    topology_events,
    with_probed,
)

POOL = ["n1", "n2", "n3", "n4", "n5"]


def serf(*down: str, maint: dict[str, str] | None = None, status: str = "failed"):
    maint = maint or {}
    return {
        n: SerfMember(
            n,
            status=status if n in down else "alive",
            tags={"maint": f"1:{maint[n]}"} if n in maint else {"sbm": "0"},
        )
        for n in POOL
    }


def all_see_all():
    return {o: {p: True for p in POOL if p != o} for o in POOL}


def test_serf_failed_member_is_failed_even_if_probes_say_nothing():
    topo = pool_topology("web", POOL, serf("n3"), {})
    assert topo.members["n3"].state == FAILED
    assert topo.quorum  # 4 of 5


def test_peer_majority_marks_member_failed_before_serf_does():
    obs = all_see_all()
    for observer in ("n1", "n2", "n4"):
        obs[observer]["n3"] = False
    topo = pool_topology("web", POOL, serf(), obs)
    assert topo.members["n3"].state == FAILED
    assert (topo.members["n3"].down_votes, topo.members["n3"].observers) == (3, 4)


def test_one_node_with_a_broken_link_never_evicts_a_healthy_peer():
    obs = all_see_all()
    obs["n1"] = {p: False for p in POOL if p != "n1"}  # n1 sees nobody
    topo = pool_topology("web", POOL, serf(), obs)
    assert all(topo.members[p].state == SUSPECT for p in POOL if p != "n1")
    assert topo.quorum
    assert topo.leader == "n1"


def test_isolated_node_loses_quorum_in_its_own_view():
    # n1's view after a partition: Serf on n1 marks everyone else failed.
    topo = pool_topology("web", POOL, serf("n2", "n3", "n4", "n5"), {})
    assert not topo.quorum
    assert topo.leader == "n1"


def test_leader_is_lowest_alive_non_maintenance_member():
    topo = pool_topology("web", POOL, serf("n1", maint={"n2": "disk swap"}), all_see_all())
    assert topo.members["n2"].state == MAINTENANCE
    assert topo.members["n2"].reason == "disk swap"
    assert topo.leader == "n3"


def test_maintenance_members_count_for_quorum():
    topo = pool_topology("web", POOL, serf("n1", "n2", maint={"n3": "x"}), {})
    assert topo.quorum  # n3 (maintenance), n4, n5 = 3 of 5


def test_stale_reports_of_a_failed_observer_do_not_count():
    obs = all_see_all()
    obs["n5"]["n4"] = False
    topo = pool_topology("web", POOL, serf("n5"), obs)
    assert topo.members["n4"].state != FAILED
    assert topo.members["n4"].down_votes == 0


def test_left_member_is_left():
    topo = pool_topology("web", POOL, serf("n2", status="left"), {})
    assert topo.members["n2"].state == LEFT


def test_events_for_failure_recovery_leader_and_quorum():
    healthy = pool_topology("web", POOL, serf(), all_see_all())
    down = pool_topology("web", POOL, serf("n1", "n2", "n3"), {})
    kinds = [e["type"] for e in topology_events(healthy, down)]
    assert kinds.count("member_failed") == 3
    assert "leader_changed" in kinds and "quorum_lost" in kinds
    back = topology_events(down, healthy)
    assert [e["type"] for e in back].count("member_recovered") == 3
    assert "quorum_regained" in [e["type"] for e in back]


def test_events_for_maintenance_and_sbm():
    before = pool_topology("web", POOL, serf(), {})
    during = pool_topology("web", POOL, serf(maint={"n4": "kernel"}), {})
    events = topology_events(before, during)
    assert {
        "type": "maintenance_enter",
        "pool": "web",
        "member": "n4",
        "reason": "kernel",
    } in events
    assert [e["type"] for e in topology_events(during, before)] == ["maintenance_exit"]
    crit = {n: SerfMember(n, tags={"sbm": "2" if n == "n5" else "0"}) for n in POOL}
    events = topology_events(before, pool_topology("web", POOL, crit, {}))
    assert events == [
        {"type": "sbm_changed", "pool": "web", "member": "n5", "old": "0", "new": "2"}
    ]


def test_first_view_emits_nothing():
    assert topology_events(None, pool_topology("web", POOL, serf(), {})) == []


def test_maintenance_tag_round_trips_and_keeps_colons_in_the_reason():
    tag = maintenance_tag(True, "kernel 6.1: reboot\nthen check")
    assert tag == "1:kernel 6.1: reboot then check"
    assert parse_maintenance_tag(tag) == (True, "kernel 6.1: reboot then check")
    assert parse_maintenance_tag(maintenance_tag(False, "ignored")) == (False, "")
    assert parse_maintenance_tag("1") == (True, "")
    assert parse_maintenance_tag(None) == parse_maintenance_tag("") == (False, "")
    assert len(maintenance_tag(True, "x" * 500)) == 2 + 200


def test_serf_member_reads_maintenance_from_its_tag():
    member = SerfMember("n1", tags={"maint": maintenance_tag(True, "disk swap")})
    assert member.in_maintenance and member.maintenance_reason == "disk swap"
    assert not SerfMember("n2", tags={"maint": "0"}).in_maintenance


def split_views(minority: list[str], heard_far_side: bool = True) -> dict[str, dict[str, bool]]:
    """The observations on the minority just after a split: its own fresh views
    say the far side is gone, the far side's last views (still fresh for 2 s
    in the prober) say everyone is reachable."""
    obs = all_see_all()
    for node in minority:
        obs[node] = {p: p in minority for p in POOL if p != node}
    if not heard_far_side:
        obs = {n: v for n, v in obs.items() if n in minority}
    return obs


def test_minority_of_a_split_loses_quorum_as_soon_as_its_own_view_turns():
    # 2|3 split, ~0.7 s in: n1 and n2 no longer hear n3-n5, whose last views
    # (from before the split) still say everyone is fine.
    topo = pool_topology("web", POOL, serf(), split_views(["n1", "n2"]), me="n1")
    assert all(topo.members[p].state == SUSPECT for p in ("n3", "n4", "n5"))
    assert not topo.quorum
    assert topo.leader == "n1"  # a leader without quorum: nobody acts on it


def test_majority_of_a_split_keeps_quorum_and_fails_the_far_side():
    obs = split_views(["n3", "n4", "n5"])
    topo = pool_topology("web", POOL, serf(), obs, me="n3")
    assert topo.quorum
    assert topo.members["n1"].state == FAILED and topo.members["n2"].state == FAILED


def test_one_broken_link_does_not_cost_quorum_in_the_own_view():
    obs = all_see_all()
    obs["n1"]["n3"] = False  # only the n1-n3 link is down
    topo = pool_topology("web", POOL, serf(), obs, me="n1")
    assert topo.quorum and topo.members["n3"].state == SUSPECT


# ------------------------------------------------ members alive by their probes
def test_a_member_serf_has_not_seen_is_alive_by_its_probes():
    table = {n: m for n, m in serf().items() if n != "n5"}  # n5 not joined in this Serf yet
    assert pool_topology("web", POOL, table, all_see_all()).members["n5"].state == LEFT
    members, promoted = with_probed(table, {"n5": "0"})
    topo = pool_topology("web", POOL, members, all_see_all(), me="n1")
    assert topo.members["n5"].state == ALIVE and promoted == {"n5": "0"}


def test_serf_failed_stays_failed_whatever_the_probes_say():
    """Serf's failed wins, as before: probes only promote a member Serf has not seen."""
    members, promoted = with_probed(serf("n3"), {"n3": "0"})
    assert pool_topology("web", POOL, members, all_see_all()).members["n3"].state == FAILED
    assert promoted == {}


def test_probes_keep_a_member_in_maintenance_before_serf_gossips_its_tag():
    table = {n: m for n, m in serf().items() if n != "n2"}
    members, promoted = with_probed(table, {"n2": "1:kernel"})
    topo = pool_topology("web", POOL, members, all_see_all())
    assert topo.members["n2"].state == MAINTENANCE and topo.members["n2"].reason == "kernel"
    assert topo.leader == "n1" and promoted == {"n2": "1:kernel"}


def test_probes_never_overrule_a_leave_or_what_serf_knows_of_a_live_member():
    left = serf("n4", status="left")
    alive = serf(maint={"n3": "disk"})
    members, promoted = with_probed({**left, "n3": alive["n3"]}, {"n4": "0", "n3": "0"})
    topo = pool_topology("web", POOL, members, all_see_all())
    assert topo.members["n4"].state == LEFT
    assert topo.members["n3"].state == MAINTENANCE  # Serf's tag, not the probed one
    assert promoted == {}


def test_a_member_alive_by_probes_is_failed_when_its_observers_lose_it():
    obs = all_see_all()
    for observer in ("n1", "n2", "n3"):
        obs[observer]["n5"] = False
    table = {n: m for n, m in serf().items() if n != "n5"}
    members, _promoted = with_probed(table, {"n5": "0"})
    assert pool_topology("web", POOL, members, obs).members["n5"].state == FAILED


def test_a_member_alive_by_probes_that_goes_silent_is_failed_not_left():
    """A partition soon after a start, before Serf gossiped the far side's joins."""
    table = {n: m for n, m in serf().items() if n not in ("n4", "n5")}
    seen: dict[str, str] = {}
    members, _promoted = with_probed(table, {"n4": "0", "n5": "0"}, seen)
    assert pool_topology("web", POOL, members, all_see_all()).members["n5"].state == ALIVE
    # Their evidence stops (the link is cut) and Serf still has not reported them.
    members, promoted = with_probed(table, {}, seen)
    topo = pool_topology("web", POOL, members, all_see_all())
    assert topo.members["n4"].state == FAILED and topo.members["n5"].state == FAILED
    assert promoted == {}
    # A member never seen at all is still "not joined" (left), as at a start.
    members, _promoted = with_probed({n: m for n, m in table.items() if n != "n3"}, {}, seen)
    assert pool_topology("web", POOL, members, all_see_all()).members["n3"].state == LEFT


def test_once_serf_reports_a_probed_member_serf_decides_again():
    seen: dict[str, str] = {}
    table = {n: m for n, m in serf().items() if n != "n5"}
    with_probed(table, {"n5": "0"}, seen)
    left = serf("n5", status="left")
    with_probed(left, {}, seen)  # Serf now has n5 (its leave): forgotten here
    assert seen == {}
    members, _promoted = with_probed(table, {}, seen)  # and reaped by Serf later: not joined again
    assert pool_topology("web", POOL, members, all_see_all()).members["n5"].state == LEFT
