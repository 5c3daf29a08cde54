# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TNS topology: from Serf membership and peer probes to per-pool verdicts.

Pure logic, no I/O: the daemon feeds it what Serf and the probes saw, the
tests feed it by hand. Every agent acts on what this says, so the rules are
kept small and explicit:

* Serf is the source of truth for membership: ``left`` and ``failed`` from
  Serf always win.
* Probes make a verdict *faster*, both ways:

  - a Serf-alive member is ``failed`` for a pool when a strict majority of the
    pool peers that currently observe it say it is unreachable, so one node
    with a broken link never evicts a healthy peer;
  - a member that Serf has not reported yet (not joined in this node's Serf)
    counts as alive for a pool when this node has fresh evidence of it, signed
    with the pool's key (its own probes, or ages relayed by members that heard
    them) *and* knows its maintenance state from the same evidence
    (``with_probed``). Serf's gossip needs O(log N) rounds of its own to carry a
    join; the probes know within a round or two. The majority vote still
    applies, so such a member is ``failed`` as soon as its observers lose it.
    A member Serf calls ``failed`` stays failed, as before: overruling that too
    was tried and did not make the 128-node lab start faster, and reviving a
    member by probes alone is a larger change to what DNS-SA relies on.
* The pool **leader** is the lowest name among ``alive`` members (maintenance
  excluded); **quorum** is a strict majority of the pool's declared members
  being alive and reachable (maintenance members are reachable, so they count).
* Quorum is judged on the computing node's **own** probe view when it is
  given (``me``): a member counts only if this node heard it within
  ``dead_after``. The pooled verdicts cannot be used for it: right after a
  2|3 split the minority still holds the majority's last views (kept for 2 s,
  all saying "reachable"), so the majority's members are only ``suspect``
  there, and counting them kept quorum on the minority for ~2 s. A node's
  own view turns at ``dead_after`` for the whole far side, which is exactly
  when a minority must stop acting. Leadership does not need quorum (every
  side of a partition has a leader); whoever acts for the pool checks both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ALIVE = "alive"
SUSPECT = "suspect"
FAILED = "failed"
MAINTENANCE = "maintenance"
LEFT = "left"
STATES = (ALIVE, SUSPECT, FAILED, MAINTENANCE, LEFT)

# States in which a member still answers: it counts for quorum.
_REACHABLE = frozenset({ALIVE, MAINTENANCE})

# Every event the connector publishes: the watcher's rules are checked against
# this list (connector/config.py) and the EDA source's schema is generated from
# it (extensions/eda/plugins/event_source/schemas/tns.json, see eda_schema()).
EVENT_TYPES = (
    "member_failed",
    "member_recovered",
    "maintenance_enter",
    "maintenance_exit",
    "sbm_changed",
    "leader_changed",
    "quorum_lost",
    "quorum_regained",
    "dns_changed",  # published by the pool leader's DNS-SA (connector/dns_reconciler.py)
    "fs_conflict",  # published by FS-SA when it keeps a conflict copy (connector/fs_agent.py)
    "sl_drift",  # a node drifted from its pools' packages/services/libraries (connector/sl_agent.py)
    "db_conflict",  # DB-SA: a row changed on two sides; the loser is kept (connector/db_shipper.py)
    "db_schema_mismatch",  # DB-SA: a peer's table differs; that table's sync waits
)

# The Serf tag ``maint`` (also shown by ``multiall status`` and read by the
# tns_maintenance module): ``0`` normally, ``1:<reason>`` in maintenance.
MAINTENANCE_REASON_MAX = 200


def maintenance_tag(enter: bool, reason: str = "") -> str:
    """The ``maint`` tag value; the reason is kept to one line and 200 characters."""
    if not enter:
        return "0"
    return "1:" + reason.replace("\n", " ")[:MAINTENANCE_REASON_MAX]


def parse_maintenance_tag(tag: str | None) -> tuple[bool, str]:
    """``1:reason`` -> (True, 'reason'); ``1`` -> (True, ''); ``0``, '' or None -> (False, '')."""
    flag, _sep, reason = (tag or "0").partition(":")
    return (True, reason) if flag == "1" else (False, "")


@dataclass(frozen=True)
class SerfMember:
    """What Serf says of one member (status as Serf names it, plus its tags)."""

    name: str
    address: str = ""
    status: str = "alive"  # alive | leaving | left | failed | none
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def in_maintenance(self) -> bool:
        """Whether the member's ``maint`` tag says it is in maintenance."""
        return parse_maintenance_tag(self.tags.get("maint", ""))[0]

    @property
    def maintenance_reason(self) -> str:
        """The reason given with ``maintenance enter``."""
        return parse_maintenance_tag(self.tags.get("maint", ""))[1]


@dataclass(frozen=True)
class MemberView:
    """One member as the pool sees it."""

    name: str
    state: str
    sbm: str = ""
    rtt_ms: float | None = None
    reason: str = ""
    down_votes: int = 0
    observers: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name,
            "state": self.state,
            "sbm": self.sbm,
            "rtt_ms": self.rtt_ms,
            "reason": self.reason,
            "down_votes": self.down_votes,
            "observers": self.observers,
        }


@dataclass(frozen=True)
class PoolTopology:
    """A pool's members, leader and quorum at one moment."""

    pool: str
    members: dict[str, MemberView]
    leader: str | None
    quorum: bool
    declared: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "pool": self.pool,
            "leader": self.leader,
            "quorum": self.quorum,
            "declared": self.declared,
            "members": {n: m.as_dict() for n, m in sorted(self.members.items())},
        }


# Serf states that a member's own signed probes may overrule (with_probed): "not
# joined yet". ``left`` (an intentional leave) and ``failed`` are never overruled.
_OVERRULED = frozenset({"none", ""})


def with_probed(
    serf: dict[str, SerfMember],
    probed: Mapping[str, str] | None,
    seen: dict[str, str] | None = None,
) -> tuple[dict[str, SerfMember], dict[str, str]]:
    """SERF with every member that probes prove alive but Serf has not reported yet.

    ``probed`` maps each member this node has fresh, pool-signed evidence of,
    *and* whose maintenance state that evidence carried, to its ``maint`` tag.
    A member Serf has not seen is taken as alive with that tag (so a member in
    maintenance stays out of service even before Serf gossips its tag). What
    Serf reports (alive, failed, left) is kept: for a member Serf knows, its
    gossiped state and tags stay the truth.

    ``seen`` is the caller's memory for one pool, updated in place: the members
    once promoted here that Serf has still not reported. When their evidence
    stops they are ``failed``, not ``left``: they were seen alive and went
    silent, which is what a crash or a partition looks like (``left`` is an
    intentional leave, and Serf would have said so). Without it, a partition
    soon after a start, before Serf's gossip had carried the far side's joins,
    showed the far side as having left, and nothing failed it.

    Returns the table and the ``maint`` tags of the members it promoted.
    """
    promoted: dict[str, str] = {}
    out = serf
    for name, tag in (probed or {}).items():
        member = serf.get(name)
        if member is not None and member.status not in _OVERRULED:
            continue
        if out is serf:
            out = dict(serf)
        tags = dict(member.tags) if member is not None else {}
        tags["maint"] = tag
        out[name] = SerfMember(name, member.address if member else "", "alive", tags)
        promoted[name] = tag
    if seen is None:
        return out, promoted
    for name in [n for n in seen if n in serf and serf[n].status not in _OVERRULED]:
        del seen[name]  # Serf has reported it: its word stands from now on
    seen.update(promoted)
    for name, tag in seen.items():
        if name not in promoted and name not in serf:
            if out is serf:
                out = dict(serf)
            out[name] = SerfMember(name, "", "failed", {"maint": tag})
    return out, promoted


def _serf_state(member: SerfMember | None) -> str:
    if member is None or member.status in ("none", ""):
        return FAILED if member is not None else LEFT
    if member.status in ("left", "leaving"):
        return LEFT
    if member.status == "failed":
        return FAILED
    if member.in_maintenance:
        return MAINTENANCE
    return ALIVE


def pool_topology(
    pool: str,
    declared: list[str],
    serf: dict[str, SerfMember],
    observations: dict[str, dict[str, bool]],
    rtt_ms: dict[str, float] | None = None,
    me: str | None = None,
    reach: dict[str, bool] | None = None,
) -> PoolTopology:
    """Compute one pool's topology.

    ``observations[observer][peer]`` is True when ``observer``'s latest probe of
    ``peer`` succeeded. Only observers that are themselves Serf-alive pool
    members count, so a dead or removed node's stale reports never decide.
    ``me`` is the node computing the view: quorum then counts only members it
    reaches itself (``observations[me]``), see the module docstring.
    ``reach`` replaces ``observations[me]`` for quorum when this node's vote
    covers only some members (a bounded pool: it observes its ring neighbours
    but has fresh evidence, relayed, of every member it has a path to).
    """
    rtt_ms = rtt_ms or {}
    base = {name: _serf_state(serf.get(name)) for name in declared}
    # Count each voter's opinions once, over what it observed: O(observations), so a
    # bounded pool (each voter observes a few ring neighbours) costs O(N), not O(N^2).
    observed = {name: [0, 0] for name in declared if base[name] in _REACHABLE}
    for voter in declared:
        if voter not in observed:
            continue
        for name, seen in observations.get(voter, {}).items():
            count = observed.get(name)
            if count is None or name == voter:
                continue
            count[0] += 1
            if not seen:
                count[1] += 1
    members: dict[str, MemberView] = {}
    for name in declared:
        state = base[name]
        member = serf.get(name)
        observers, votes = observed.get(name, (0, 0))
        if state in _REACHABLE:
            if observers and votes * 2 > observers:
                state = FAILED
            elif votes:
                state = SUSPECT if state == ALIVE else state
        members[name] = MemberView(
            name=name,
            state=state,
            sbm=member.tags.get("sbm", "") if member else "",
            rtt_ms=rtt_ms.get(name),
            reason=member.maintenance_reason if member else "",
            down_votes=votes,
            observers=observers,
        )
    own = reach if reach is not None else observations.get(me, {}) if me is not None else {}
    reachable = sum(
        1
        for name, m in members.items()
        if (m.state in _REACHABLE or m.state == SUSPECT) and (name == me or own.get(name, True))
    )
    leaders = sorted(n for n, m in members.items() if m.state in (ALIVE, SUSPECT))
    return PoolTopology(
        pool=pool,
        members=members,
        leader=leaders[0] if leaders else None,
        quorum=reachable * 2 > len(declared),
        declared=len(declared),
    )


def topology_events(old: PoolTopology | None, new: PoolTopology) -> list[dict[str, Any]]:
    """The events that lead from ``old`` to ``new`` (plain dicts, ready for JSON)."""
    events: list[dict[str, Any]] = []

    def event(kind: str, **data: Any) -> None:
        events.append({"type": kind, "pool": new.pool, **data})

    if old is None:
        return events
    for name, now in sorted(new.members.items()):
        before = old.members.get(name)
        if before is None:
            continue
        was_down = before.state in (FAILED, LEFT)
        is_down = now.state in (FAILED, LEFT)
        if is_down and not was_down:
            event("member_failed", member=name, state=now.state)
        elif was_down and not is_down:
            event("member_recovered", member=name, state=now.state)
        if now.state == MAINTENANCE and before.state != MAINTENANCE:
            event("maintenance_enter", member=name, reason=now.reason)
        elif before.state == MAINTENANCE and now.state != MAINTENANCE and not is_down:
            event("maintenance_exit", member=name)
        if now.sbm != before.sbm and now.sbm and before.sbm:
            event("sbm_changed", member=name, old=before.sbm, new=now.sbm)
    if old.leader != new.leader:
        event("leader_changed", old=old.leader, new=new.leader)
    if old.quorum and not new.quorum:
        event("quorum_lost")
    elif new.quorum and not old.quorum:
        event("quorum_regained")
    return events
