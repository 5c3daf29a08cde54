"""Who gets clients: alive with SBM OK/WARNING, hold-down before returning, never nobody."""

from __future__ import annotations

from ansible_collections.takelan.multiall.plugins.module_utils._dns_members import (
    HoldDown,
    choose_members,
)
from ansible_collections.takelan.multiall.plugins.module_utils.tns import MemberView


def view(**states: str) -> dict[str, MemberView]:
    """``n1="alive/0"`` -> MemberView(state alive, sbm 0)."""
    out = {}
    for name, spec in states.items():
        state, sbm = spec.partition("/")[::2]
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
