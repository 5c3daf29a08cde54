# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: which members of a pool should receive clients.

Pure logic over the TNS view (``tns.MemberView``: ``state`` and ``sbm``), no
DNS at all: alive or suspect with SBM OK or WARNING, past the hold-down when
returning, and never nobody (:func:`choose_members`). The connector's
reconciler and ``multiall dns`` decide with it; the ``dns_zone`` module gets
the same choice from the connector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# SBM codes (module_utils/sbm.py): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
_SBM_HEALTHY = frozenset({"0", "1"})
DEFAULT_HOLD_DOWN = 3.0


def badness(member: Any) -> int:
    """How unfit a member is to receive clients: 0 fit ... 4 down.

    ``member`` is a ``tns.MemberView`` (or anything with ``state`` and ``sbm``).
    """
    if member.state in ("alive", "suspect"):
        if member.sbm in _SBM_HEALTHY:
            return 0
        return 2 if member.sbm == "2" else 1  # CRITICAL is worse than not yet measured
    if member.state == "maintenance":
        return 3
    return 4


class HoldDown:
    """When each member became fit, so a recovering member waits before it returns.

    Hold-down gates *adding*: a member the server does not hand out must have
    been fit for ``hold_down`` seconds in this tracker's view before it goes
    in. Members already served stay while fit, so a connector that just
    started, or the side of a healed partition that saw the others "fail",
    never pulls healthy members out. ``was_down`` remembers members seen
    failed, in maintenance or SBM CRITICAL, for :func:`choose_members`.
    Every node keeps a tracker for every DNS pool, not only the leader, so a
    new leader already knows who is recovering.
    """

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.was_down: set[str] = set()

    def observe(self, members: dict[str, Any], now: float) -> None:
        """Record the current view (``{name: MemberView}``)."""
        for name, member in members.items():
            rank = badness(member)
            if rank == 0:
                self.since.setdefault(name, now)
            else:
                self.since.pop(name, None)
                if rank >= 2 and member.state != "left":
                    # "left" is also how a member looks before Serf reported
                    # it once (a starting connector): not evidence of trouble.
                    self.was_down.add(name)

    def held(self, now: float, hold_down: float, served: Any = ()) -> dict[str, float]:
        """Members fit but still in hold-down: ``{name: seconds left}``."""
        return {
            name: round(since + hold_down - now, 2)
            for name, since in sorted(self.since.items())
            if now - since < hold_down and name not in served
        }


@dataclass
class MemberChoice:
    """The outcome of :func:`choose_members`."""

    members: list[str]
    held: dict[str, float] = field(default_factory=dict)
    kept_last: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    settling: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "members": self.members,
            "held_down": self.held,
            "kept_last": self.kept_last,
            "excluded": self.excluded,
            "settling": self.settling,
        }


def _why(member: Any) -> str:
    if member.state in ("alive", "suspect"):
        return {"2": "SBM CRITICAL", "3": "SBM UNKNOWN", "": "SBM not reported"}.get(
            member.sbm, f"SBM {member.sbm}"
        )
    return member.state


def choose_members(
    members: dict[str, Any],
    held: dict[str, float] | None = None,
    served: Any = (),
    was_down: Any = (),
) -> MemberChoice:
    """Members that get clients; never nobody.

    In: fit members out of hold-down, and served members whose SBM is not
    known yet but that were never seen down (a connector that just started
    must not pull them out). When that leaves nobody, the least-bad members
    are kept, the served ones among them first (a degraded answer beats
    NXDOMAIN for every client), and reported in ``kept_last``.
    """
    held = {n: s for n, s in (held or {}).items() if n in members}
    excluded = {n: _why(m) for n, m in sorted(members.items()) if badness(m) > 0}
    chosen = sorted(
        n
        for n, m in members.items()
        if (badness(m) == 0 and n not in held)
        or (badness(m) == 1 and n in served and n not in was_down)
    )
    if chosen or not members:
        return MemberChoice(chosen, held, [], excluded)
    best = min(badness(m) for m in members.values())
    candidates = sorted(n for n, m in members.items() if badness(m) == best)
    kept = [n for n in candidates if n in served] or candidates
    return MemberChoice(kept, held, kept, excluded)


def keep_unsettled(
    choice: MemberChoice,
    members: dict[str, Any],
    served: Any,
    heard: Any,
    settled: bool,
) -> MemberChoice:
    """Served members that must not be removed on an unsettled view; they stay, in ``settling``.

    A node that has just regained quorum (a healed partition, a restart) still
    holds verdicts from while it was cut off: right after ``lab heal`` the old
    minority leader saw the far side as failed for another packet or two, and
    it removed members that had served all along. So, until the view has been
    backed by quorum for a while (``settled``), a served member leaves only if
    this node heard it directly just now (``heard``: its SBM or maintenance is
    then current). And at any time a member marked down (failed or left) but
    heard directly just now stays: membership (Serf) lags the probes after a
    heal by seconds, and the member is evidently up.
    """
    keep: dict[str, str] = {}
    for name in sorted(set(served) - set(choice.members)):
        member = members.get(name)
        if member is None:
            continue
        fresh = name in heard
        if not settled and not fresh:
            keep[name] = "view settling: not heard since quorum was regained"
        elif fresh and member.state in ("failed", "left"):
            keep[name] = f"{member.state} in the view but heard just now: waiting for it to agree"
    if not keep:
        return choice
    return MemberChoice(
        sorted({*choice.members, *keep}), choice.held, choice.kept_last, choice.excluded, keep
    )
