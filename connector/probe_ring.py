"""Bounded probing for large pools: ring neighbours, relayed ages, observer alerts.

All-to-all probing (connector/probe.py) costs every node O(N) packets per
interval, each O(N) bytes: fine for a handful of members, quadratic for the
pool. Above ``probe.bounded_above`` members a pool switches to this mode, whose
per-node cost does not grow with the pool (docs/connector.md, "Cost model"):

* **Ring neighbours** (Rapid's expander): the members are laid on ``rings``
  pseudo-random rings (order = SHA-256 of pool, ring number and name); a
  node pings its predecessor and successor on every ring, at most
  ``2 * rings`` peers, and those are its **observers** and its **subjects**.
  One extra peer per round, round-robin over the rest of the pool (SWIM's
  rotation), keeps the graph connected whatever the partition.
* **Relayed ages instead of views** (gossip-style heartbeats): every section
  carries, per member, how long ago the sender last had evidence that member
  was up (directly, or from a peer that had it), in 10 ms units, rounded up,
  never down, so relaying never makes a member look fresher than it is. A node
  thus "hears" every member it has a path to, within ``dead_after``, with no
  clock agreement (``HOP`` is charged per relay for the time in flight). This is also the indirect probe: an observer whose own link
  to a subject drops still hears it through the others and does not accuse it.
  ``heard[pool]`` keeps its meaning (when this node last had evidence of the
  member) so quorum, the DNS-SA fresh-majority guard and settling are computed
  as before: a minority cut off by a partition gets no fresh age of the far
  side through any path and loses quorum at ``dead_after``, as in all-to-all.
  Ages travel in chunks of ``CHUNK`` members, one per packet, in rotation:
  a packet stays one datagram whatever the pool size.
* **Alerts, not views**: each node's record is the list of its subjects it
  has lost (usually empty). Records are relayed (piggybacked, at most
  ``MAX_RECORDS`` per packet) while they say something or changed in the last
  ``MAX_AGE`` seconds, and a change is pushed to the neighbours at once, so a
  verdict reaches every member in a few milliseconds after the observers see it.
* **Maintenance state travels with the evidence**: each age comes with the
  member's maintenance flag as the member itself said it in the packet that
  evidence started from (``mx``: the chunk's members in maintenance, and those
  whose state the sender does not know). Where a relayed age wins, its flag
  wins with it, so every node knows each member's *current* state within the
  same few rounds as its liveness, before Serf's gossip does: enough for
  ``module_utils/tns.py`` to count a member alive that Serf has not seen yet
  (``probed``). A sender without ``mx`` (an older connector) leaves the flags
  of what it relayed unknown, and unknown never promotes a member.
* **Verdict** (Rapid's multi-process cut detection): ``module_utils/tns.py``
  gets only the observers' opinions of their own subjects, so a member is
  ``failed`` when a strict majority of its fresh observers lost it.

Per-pool keys keep their meaning: everything here arrives in a section signed
with the pool's key by a member of the pool and speaks only of that pool's
members; an observer's record only counts for its own subjects.
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import struct
import sys
from itertools import compress, repeat
from operator import ge, gt, lt, mul, not_, or_
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.tns import parse_maintenance_tag

AGE_UNIT = 0.01  # seconds per unit of a relayed age
AGE_NEVER = 0xFFFF  # "no evidence at all"
CHUNK = 256  # members per age chunk (512 bytes, 684 in base64)
MAX_RECORDS = 16  # alert records per packet
MAX_AGE = 2.0  # an observer (or its record) older than this stops counting, as in all-to-all
# Charged per relay hop for the time in flight (LAN: well under 1 ms; a busy
# event loop: more). Without it a relay loop A -> B -> A would bring back A's own
# value fresher by the transit time, again and again, and a dead member would
# age slower than the clock.
HOP = 0.01
_HOP_UNITS = math.ceil(HOP / AGE_UNIT)
_NEVER = -(10**12)  # "no evidence" in the tick clock below
# A member's maintenance flag, as the evidence of it said: unknown never promotes it.
UNKNOWN, NORMAL, MAINT = 0, 1, 2


def ring_neighbours(pool: str, members: list[str], rings: int) -> dict[str, list[str]]:
    """Each member's predecessor and successor on ``rings`` pseudo-random rings.

    Symmetric (a is b's neighbour iff b is a's) and identical on every node:
    it depends only on the pool's name and its declared members.
    """
    out: dict[str, set[str]] = {m: set() for m in members}
    for ring in range(rings):
        order = sorted(
            members, key=lambda m: hashlib.sha256(f"{pool}\0{ring}\0{m}".encode()).digest()
        )
        for i, member in enumerate(order):
            for other in (order[i - 1], order[(i + 1) % len(order)]):
                if other != member:
                    out[member].add(other)
    return {m: sorted(v) for m, v in out.items()}


def encode_ages(ages: list[int]) -> str:
    """Ages (units of AGE_UNIT, capped) as base64 of big-endian 16-bit integers."""
    return base64.b64encode(struct.pack(f">{len(ages)}H", *ages)).decode("ascii")


def decode_ages(text: Any, limit: int) -> list[int] | None:
    """The ages in TEXT, or None when it is not well formed or longer than LIMIT."""
    if not isinstance(text, str) or len(text) > 4 * limit:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if len(raw) % 2 or len(raw) // 2 > limit:
        return None
    # array + byteswap: C speed, where struct.unpack into a list cost ~20 us per packet.
    ages = array.array("H", raw)
    if sys.byteorder == "little":
        ages.byteswap()
    return ages.tolist()


def flag_of(tag: Any) -> int:
    """A member's maint tag (as it sent it) as a flag; UNKNOWN when it sent none."""
    if not isinstance(tag, str):
        return UNKNOWN
    return MAINT if parse_maintenance_tag(tag)[0] else NORMAL


def _flag_lists(start: int, ages: list[int], flags: bytearray) -> list[list[int]]:
    """``mx`` of a section: the chunk's members in maintenance, and those with evidence
    but an unknown flag (indices into the pool); ``[[], []]`` in a quiet pool."""
    if flags.count(NORMAL) == len(flags):
        return [[], []]
    maint = [start + i for i, f in enumerate(flags) if f == MAINT]
    unknown = [start + i for i, f in enumerate(flags) if f == UNKNOWN and ages[i] != AGE_NEVER]
    return [maint, unknown]


def _read_flag_lists(mx: Any) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A peer's ``mx``, or None when it sent none (an older connector) or garbage."""
    if not (isinstance(mx, list) and len(mx) == 2 and all(isinstance(x, list) for x in mx)):
        return None
    if not all(isinstance(i, int) for x in mx for i in x):
        return None
    return tuple(mx[0]), tuple(mx[1])


class BoundedPool:
    """One large pool's bounded probing state, as seen by node ``me``."""

    def __init__(
        self,
        pool: str,
        me: str,
        members: list[str],
        rings: int,
        heard: dict[str, float],
        dead_after: float,
    ) -> None:
        """``heard`` is the Prober's ``heard[pool]``: this keeps it up to date."""
        self.pool, self.me, self.dead_after = pool, me, dead_after
        self.members = sorted(members)
        self.index = {m: i for i, m in enumerate(self.members)}
        self.neighbours = ring_neighbours(pool, self.members, rings)
        self._neighbour_sets = {m: frozenset(v) for m, v in self.neighbours.items()}
        self.subjects = self.neighbours.get(me, [])
        self.heard = heard
        # The same evidence as ``heard``, in AGE_UNIT ticks of the monotonic clock, one
        # slot per member: merging a peer's ages is one comprehension over integers, not
        # dict lookups per member per packet (what made 128 members cost 0.8 % of a core).
        self._ticks: list[int] = [_NEVER] * len(self.members)
        # Each member's maintenance flag, from the same packet as its tick (UNKNOWN/NORMAL/MAINT).
        self._flags = bytearray(len(self.members))
        self.own_flag = NORMAL  # this node's own, set by the Prober from its maint tag
        self.flags_changed = False  # set by accept(), cleared by the Prober
        self._hot: set[str] = set()  # observers whose records are relayed
        self._relayed: dict[str, int] = {}  # observer -> sections its current record went in
        # observer -> (monotonic time of its record, its lost subjects, when it last changed)
        self.records: dict[str, tuple[float, tuple[str, ...], float]] = {}
        self.reach: dict[str, bool] = {}
        self.own_down: tuple[str, ...] = ()
        self._chunks = max(1, math.ceil(len(self.members) / CHUNK))
        # Rounds start at a different chunk on every node (as the rotation below does).
        self._chunk = int(hashlib.sha256(me.encode()).hexdigest()[:8], 16) % self._chunks
        self._stale: frozenset[str] = frozenset()
        others = [m for m in self.members if m != me and m not in self.subjects]
        # Rotation of the extra probe: start at a different place on every node.
        shift = int(hashlib.sha256(me.encode()).hexdigest()[:8], 16) % max(1, len(others))
        self.rotation = others[shift:] + others[:shift]
        self._next_extra = 0

    def extra_target(self) -> str | None:
        """The next peer of the round-robin beyond the ring neighbours."""
        if not self.rotation:
            return None
        peer = self.rotation[self._next_extra % len(self.rotation)]
        self._next_extra += 1
        return peer

    # -- sending
    def chunk_for(self, slot: int) -> int:
        """The age chunk the SLOT-th peer of this round gets (0 when one chunk holds all)."""
        return (self._chunk + slot) % self._chunks

    def next_round(self) -> None:
        """Rotate the chunks: the next round starts one chunk further."""
        self._chunk = (self._chunk + 1) % self._chunks

    def section(self, now: float, slot: int | None = None) -> dict[str, Any]:
        """What this node tells a peer about the pool (ages chunk and alert records).

        SLOT: the peer's place in a round (its chunk is ``chunk_for(slot)``);
        None for a packet of its own, which takes the next chunk.
        """
        if slot is None:
            chunk = self._chunk
            self.next_round()
        else:
            chunk = self.chunk_for(slot)
        start = chunk * CHUNK
        # Rounded up (ceil of now, floor of every tick): a relay never makes a member
        # look fresher than it is. Nothing heard for AGE_NEVER ticks reads as never.
        ticks = self._ticks[start : start + CHUNK]
        top = math.ceil(now / AGE_UNIT)
        ages = [AGE_NEVER if top - t > AGE_NEVER else top - t for t in ticks]
        flags = self._flags[start : start + CHUNK]
        mine = self.index.get(self.me, -1) - start
        if 0 <= mine < len(ages):
            ages[mine] = 0
            flags[mine] = self.own_flag
        records = {self.me: [0, list(self.own_down)]}
        # Only records worth repeating (an alert, or a change of the last MAX_AGE s):
        # a quiet pool relays none, whatever its size.
        self._hot = {
            o
            for o in self._hot
            if now - self.records[o][0] <= MAX_AGE
            and (self.records[o][1] or now - self.records[o][2] <= MAX_AGE)
        }
        # Least relayed first, then the newest change (memberlist's transmit-limited
        # queue): a fresh alert goes out at once, and when more records changed than
        # a packet holds (a start of many nodes) every one of them still travels,
        # instead of the oldest changes waiting out MAX_AGE on the nodes they missed.
        relay = sorted(self._hot, key=lambda o: (self._relayed.get(o, 0), -self.records[o][2]))
        for observer in relay[: MAX_RECORDS - 1]:
            when, down, _changed = self.records[observer]
            records[observer] = [math.ceil((now - when) / AGE_UNIT), list(down)]
            self._relayed[observer] = self._relayed.get(observer, 0) + 1
        return {
            "ages": [start, encode_ages(ages)],
            "rec": records,
            "mx": _flag_lists(start, ages, flags),
        }

    # -- receiving
    def accept(self, sender: str, section: dict[str, Any], now: float) -> bool:
        """Merge a verified, fresh section from pool member SENDER; True when a record changed."""
        self.heard[sender] = now
        base = math.floor(now / AGE_UNIT)
        self._ticks[self.index[sender]] = base
        # Its own maint tag, in its own words (an older connector sends none: unknown).
        flag = flag_of(section.get("maint", {}).get(sender))
        if self._flags[self.index[sender]] != flag:
            self._flags[self.index[sender]] = flag
            self.flags_changed = True
        ages = section.get("ages")
        if isinstance(ages, list) and len(ages) == 2 and isinstance(ages[0], int):
            start = ages[0]
            values = decode_ages(ages[1], CHUNK)
            if values is not None and 0 <= start < len(self.members):
                end = min(len(self.members), start + len(values))
                floor = base - _HOP_UNITS
                before = self._ticks[start:end]
                after = [
                    mine if mine >= floor - age else floor - age
                    for mine, age in zip(before, values, strict=False)
                ]
                self._ticks[start:end] = after
                self._merge_flags(start, before, after, values, section.get("mx"))
        changed = False
        records = section.get("rec")
        for observer, record in (records if isinstance(records, dict) else {}).items():
            if observer == self.me or observer not in self.index:
                continue
            if not (isinstance(record, list) and len(record) == 2):
                continue
            age, down = record
            if not isinstance(age, int) or age < 0 or not isinstance(down, list):
                continue
            when = now - age * AGE_UNIT - HOP
            previous = self.records.get(observer)
            if previous is not None and when <= previous[0]:
                continue  # an older copy of what we have
            # An observer speaks only of its own subjects.
            mine = self._neighbour_sets[observer]
            lost = tuple(sorted({str(s) for s in down if s in mine}))
            if previous is None and not lost:
                self.records[observer] = (when, lost, -math.inf)  # nothing new to repeat
            elif previous is None or previous[1] != lost:
                self.records[observer] = (when, lost, now)
                self._hot.add(observer)
                self._relayed[observer] = 0
                changed = True
            else:
                self.records[observer] = (when, lost, previous[2])
        return changed

    def _merge_flags(
        self, start: int, before: list[int], after: list[int], ages: list[int], mx: Any
    ) -> None:
        """Where the sender's evidence won (``after`` differs), take its flag with it.

        A quiet pool (every flag NORMAL on both sides, nobody in maintenance) costs
        one comparison of a few bytes: the per-member pass runs only while the
        flags change (a start, a maintenance, an older sender).
        """
        lists = _read_flag_lists(mx)
        chunk = self._flags[start : start + len(after)]
        if lists == ((), ()) and chunk.count(NORMAL) == len(chunk):
            return
        maint, unknown = (frozenset(x) for x in lists) if lists else ((), ())
        flags = self._flags
        for i, (old, new) in enumerate(zip(before, after, strict=False)):
            if new == old:
                continue
            index = start + i
            if lists is None or ages[i] == AGE_NEVER or index in unknown:
                flag = UNKNOWN
            else:
                flag = MAINT if index in maint else NORMAL
            if flags[index] != flag:
                flags[index] = flag
                self.flags_changed = True

    # -- evaluating
    def probed(self, now: float) -> dict[str, int]:
        """``{member: NORMAL|MAINT}`` of every other member with evidence (direct or
        relayed) of the last ``MAX_AGE`` seconds and a known maintenance flag.

        Real evidence only: unlike ``reach`` it has no start-up grace, so a member
        nobody has heard from is never in it. The window is the one observers'
        records count for, not ``dead_after``: on a busy machine ages relayed over
        three hops arrive older than ``dead_after`` (a 128-node start on the lab's 2
        cores left most members unpromoted), and a member that has died since is
        failed by its observers' majority within ``dead_after`` anyway.
        """
        limit = math.floor(now / AGE_UNIT) - math.floor(MAX_AGE / AGE_UNIT)
        out = {
            m: f
            for m, t, f in zip(self.members, self._ticks, self._flags, strict=False)
            if f and t >= limit
        }
        out.pop(self.me, None)
        return out

    def refresh(self, now: float, grace: bool) -> tuple[bool, bool]:
        """Re-evaluate reach and this node's record: (something changed, own record changed)."""
        # Passes over the tick slots as comprehensions and operator maps, not loops
        # with dict lookups: the cost per member stays a few tens of ns.
        tick_now = math.floor(now / AGE_UNIT)
        ticks = self._ticks
        ticks[self.index[self.me]] = tick_now
        self._flags[self.index[self.me]] = self.own_flag
        # Relayed evidence into ``heard`` (quorum, the DNS-SA guards and status read it).
        known = list(map(gt, ticks, repeat(_NEVER)))
        self.heard.update(
            compress(zip(self.members, map(mul, ticks, repeat(AGE_UNIT)), strict=False), known)
        )
        self.heard.pop(self.me, None)
        fresh = map(ge, ticks, repeat(tick_now - math.floor(self.dead_after / AGE_UNIT)))
        if grace:  # never heard yet counts as reachable during the start-up grace
            fresh = map(or_, fresh, map(not_, known))
        reach = dict(zip(self.members, fresh, strict=False))
        reach.pop(self.me, None)
        own = tuple(s for s in self.subjects if not reach.get(s, True))
        old = tick_now - math.floor(MAX_AGE / AGE_UNIT)
        stale = frozenset(compress(self.members, map(lt, ticks, repeat(old)))) | frozenset(
            o for o in self._hot if self.records[o][1] and now - self.records[o][0] > MAX_AGE
        )
        changed = reach != self.reach or stale != self._stale
        own_changed = own != self.own_down
        self.reach, self.own_down, self._stale = reach, own, stale
        return changed or own_changed, own_changed

    def observations(self, now: float) -> dict[str, dict[str, bool]]:
        """``{observer: {subject: reachable}}`` of every fresh observer, this node included."""
        out: dict[str, dict[str, bool]] = {}
        for observer in self.members:
            if observer == self.me:
                continue
            when = self.heard.get(observer)
            if when is None or now - when > MAX_AGE:
                continue
            record = self.records.get(observer)
            lost = record[1] if record and now - record[0] <= MAX_AGE else ()
            out[observer] = {s: s not in lost for s in self.neighbours[observer]}
        out[self.me] = {s: self.reach.get(s, True) for s in self.subjects}
        return out
