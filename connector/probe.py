"""Direct peer probes: fast reachability inside a pool, and shared observations.

Every ``interval`` each node sends a UDP ping to every pool peer; a peer not
heard from for ``dead_after`` seconds is unreachable *in this node's view*.
Each ping and pong carries, per pool the two nodes share, the sender's view of
that pool (``{member: reachable}``), the maintenance tags it has seen and its
own SBM status, so every node learns every peer's opinion within one interval,
directly, without waiting for gossip. The verdict (a strict majority of
observers) is made by ``module_utils/tns.py``.

Trust (docs/security.md, "TNS"):

* **One key per pool.** A packet carries one section per pool the sender shares
  with the receiver and one HMAC-SHA256 per section's pool, each keyed with that
  pool's key and covering the whole body. The receiver keeps only the sections
  whose pool MAC verified with its own key of that pool, and only when the
  sender is a member of that pool: a node of pool A (holding A's key only)
  cannot speak for pool B. One packet per peer, however many pools they share.
* **No replay.** Every packet carries the sender's ``epoch`` (strictly greater
  at every start, persisted in the state directory) and a counter ``seq``; per
  sender and pool the receiver accepts only an ``(epoch, seq)`` newer than the
  last one it accepted. A captured packet sent again is refused, so it cannot
  keep a dead peer reachable, re-assert an old SBM status or fake a maintenance
  acknowledgement. A restarted sender is accepted from its first packet (its
  new epoch is greater).
* **Bounded clock skew.** A packet whose timestamp is more than ``MAX_SKEW``
  seconds from the receiver's clock is refused (that bounds what a receiver
  that has just restarted, and so forgot the last sequence numbers, accepts).
  Refusals for skew are never silent: ``skewed()`` feeds ``multiall status``
  and a warning is logged once a minute per peer.

Anything malformed, unsigned, signed with no key the receiver holds, from an
unknown node or from the wrong source address is dropped and counted, never
acted on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.tns import maintenance_tag

from .probe_packet import EPOCH_FILE, next_epoch, open_packet, seal
from .probe_ring import MAINT, MAX_AGE, BoundedPool, flag_of
from .probe_timing import (
    PUSH_BURST,
    PUSH_PER_ROUND,
    PUSH_SPACING,
    READ_DELAY_ROUNDS,
    RTT_EVERY,
    TokenBucket,
    following_tick,
    next_tick,
    refresh_phase,
)

__all__ = ["EPOCH_FILE", "MAX_SKEW", "Prober", "next_epoch", "open_packet", "seal"]
log = logging.getLogger("multiall.probe")
MAX_SKEW = 30.0
# How long a refusal for clock skew is reported by ``skewed()``, and how often it is logged.
SKEW_REPORT_FOR = 10.0
LOG_EVERY = 60.0


class Prober(asyncio.DatagramProtocol):
    """Sends pings, answers them, and keeps every peer's latest view per pool."""

    def __init__(
        self,
        node: str,
        peers: dict[str, str],
        port: int,
        keys: Mapping[str, bytes],
        pools: Mapping[str, list[str]],
        interval: float,
        dead_after: float,
        on_change: Callable[[], None],
        maint_seen: Callable[[], dict[str, str]],
        own_sbm: Callable[[], str] = lambda: "",
        epoch: int | None = None,
        bounded_above: int = 12,
        rings: int = 3,
    ) -> None:
        """``pools``: the members of every pool this node is in; ``keys``: their probe keys.

        A pool of more than ``bounded_above`` members is probed in the bounded
        mode of connector/probe_ring.py (``rings`` rings); smaller pools all-to-all.
        """
        self.node, self.peers, self.port = node, dict(peers), port
        self.keys = {p: k for p, k in keys.items() if p in pools}
        self.pools = {p: list(m) for p, m in pools.items()}
        self._members = {p: frozenset(m) for p, m in pools.items()}
        # The pools this node shares with each peer: what it may tell it and hear from it.
        self.shared = {
            peer: sorted(p for p, members in self.pools.items() if peer in members)
            for peer in self.peers
        }
        self.interval, self.dead_after = interval, dead_after
        self.on_change, self.maint_seen, self.own_sbm = on_change, maint_seen, own_sbm
        self.epoch = epoch if epoch is not None else int(time.time() * 1000)
        self.seq = 0
        self.transport: asyncio.DatagramTransport | None = None
        # Per pool, when (monotonic) each peer last sent us a section of that pool.
        self.heard: dict[str, dict[str, float]] = {p: {} for p in self.pools}
        self.views: dict[str, dict[str, tuple[float, dict[str, bool]]]] = {
            p: {} for p in self.pools
        }
        self.peer_sbm: dict[str, dict[str, str]] = {p: {} for p in self.pools}
        self.peer_maint_seen: dict[str, dict[str, str]] = {}
        # Per pool, each peer's own maint tag as its last section said it (what lets
        # module_utils/tns.py count a member alive that Serf has not seen yet).
        self.own_tags: dict[str, dict[str, str]] = {p: {} for p in self.pools}
        self.rtt_ms: dict[str, float] = {}
        # (peer, pool) -> the newest (epoch, seq) accepted: anything not newer is a replay.
        self.accepted: dict[tuple[str, str], tuple[int, int]] = {}
        self.rejected = 0  # not ours: unsigned, wrong key, unknown sender, wrong source
        self.replayed = 0  # signed, but not newer than the last accepted from that sender
        self.skew: dict[str, tuple[float, float]] = {}  # peer -> (seconds, monotonic when)
        self._logged: dict[tuple[str, str], float] = {}
        self.started = time.monotonic()
        self._view: dict[str, dict[str, bool]] = {p: {} for p in self.pools}
        self._stale: list[tuple[str, str]] = []
        self.bounded = {
            p: BoundedPool(p, node, m, rings, self.heard[p], dead_after)
            for p, m in self.pools.items()
            if len(m) > bounded_above and node in m
        }
        # Peers pinged every round: all of an all-to-all pool, the ring neighbours of a
        # bounded one; each once, however many pools it shares with this node.
        fixed = {n for p, m in self.pools.items() if p not in self.bounded for n in m}
        fixed |= {n for ring in self.bounded.values() for n in ring.subjects}
        self.targets = [n for n in self.peers if n in fixed and n != node]
        self._push_handle: asyncio.TimerHandle | None = None
        # Packets and bytes sent and received, and the largest packet sent.
        self.counts = {"sent": 0, "sent_bytes": 0, "received": 0, "received_bytes": 0}
        self.largest = 0
        self._last_push = 0.0
        self._push_budget = TokenBucket(PUSH_BURST, PUSH_PER_ROUND / interval)
        self.refresh_phase = refresh_phase(interval, dead_after)
        # How late after the tick peers' packets are read (see run()).
        self._tick_at = 0.0
        self._read_delay = 0.0
        self._read_delays: collections.deque[float] = collections.deque(maxlen=READ_DELAY_ROUNDS)

    @property
    def last_heard(self) -> dict[str, float]:
        """When each peer was last heard from in any shared pool (monotonic)."""
        out: dict[str, float] = {}
        for heard in self.heard.values():
            for peer, when in heard.items():
                out[peer] = max(when, out.get(peer, when))
        return out

    # -- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram without its arrival time: it arrived now."""
        self.datagram_arrived(data, addr, time.monotonic())

    def datagram_arrived(self, data: bytes, addr: tuple[str, int], arrived: float) -> None:
        """One datagram, which the kernel received at ARRIVED (monotonic).

        Evidence is dated when the packet arrived, not when this node got round to
        reading it: on a loaded node the two are hundreds of milliseconds apart, and a
        relayed age counted from the read made a dead member look fresher at every
        hop (a relay loop kept it alive for seconds). connector/udp_endpoint.py reads
        the kernel's receive timestamp.
        """
        self.counts["received"] += 1
        self.counts["received_bytes"] += len(data)
        delay = arrived - self._tick_at
        if self._read_delay < delay < self.interval / 2:
            self._read_delay = delay  # peers send on the tick: this is how late they arrive
        opened = open_packet(self.keys, data)
        msg, verified = opened if opened else ({}, [])
        sender = msg.get("from")
        if not opened or sender not in self.peers or self.peers[sender] != addr[0]:
            self.rejected += 1
            return
        # Only pools the sender is a member of and this node shares with it.
        verified = [p for p in verified if p in self.shared[sender]]
        if not verified:
            self.rejected += 1
            return
        # Not newer than what was accepted is a replay whatever its timestamp says.
        stamp = (int(msg["ep"]), int(msg["seq"]))
        fresh = [p for p in verified if stamp > self.accepted.get((sender, p), (-1, -1))]
        if not fresh:
            self.replayed += 1
            self._warn(
                sender,
                "replay",
                "probe packet from %s refused: not newer than the last one accepted"
                " (a replay, or its state directory was reset while its clock went back)",
                sender,
            )
            return
        skew = float(msg["ts"]) - time.time()
        if abs(skew) > MAX_SKEW:
            self.skew[sender] = (skew, time.monotonic())
            self._warn(
                sender,
                "skew",
                "probe packets from %s refused: its clock is %.1f s %s this node's"
                " (limit %g s); peers cannot see each other until the clocks agree (NTP)",
                sender,
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                MAX_SKEW,
            )
            return
        self.skew.pop(sender, None)
        now = arrived
        changed = False
        pushed = False
        for pool in fresh:
            self.accepted[(sender, pool)] = stamp
            changed |= self._accept_section(pool, sender, msg["pools"][pool], now)
            ring = self.bounded.get(pool)
            if ring is not None and ring.accept(sender, msg["pools"][pool], now):
                changed = pushed = True
            if ring is not None and ring.flags_changed:  # a maintenance flag moved
                ring.flags_changed = False
                changed = True
        if pushed:
            self._push_soon()  # an observer's alert changed: pass it on now (flood)
        was_reachable = all(self._view[p].get(sender, True) for p in fresh)
        if msg["t"] == "ping" and msg.get("rtt"):
            self._send("pong", sender, echo=msg["ts"])
        elif msg["t"] == "pong":
            echo = msg.get("echo")
            if isinstance(echo, (int, float)):
                self.rtt_ms[sender] = round(max(0.0, (time.time() - echo) * 1000), 3)
        if not was_reachable:
            self._refresh()  # a peer came back: say so now, not at the next tick
        if changed:
            self.on_change()

    def _accept_section(self, pool: str, sender: str, section: dict, now: float) -> bool:
        """Take one verified, fresh section; True when the sender's opinion changed."""
        members = self._members[pool]  # a set: a list made each key O(N)
        view = {str(k): bool(v) for k, v in section.get("view", {}).items() if k in members}
        previous = self.views[pool].get(sender)
        self.views[pool][sender] = (now, view)
        self.heard[pool][sender] = now  # any accepted packet proves the path from the peer works
        maint = {str(k): str(v) for k, v in section.get("maint", {}).items() if k in members}
        self.peer_maint_seen.setdefault(sender, {}).update(maint)
        own, own_changed = maint.get(sender), False
        if own is not None and self.own_tags[pool].get(sender) != own:
            self.own_tags[pool][sender] = own  # its own tag: what with_probed may use
            own_changed = True
        # Most packets repeat the last one. A bounded pool's sections carry no view: a
        # new sender there (the rotating extra peer, a new one each round for N rounds)
        # changes no opinion, and took a topology pass per round.
        changed = own_changed or (previous[1] != view if previous else pool not in self.bounded)
        sbm = str(section.get("sbm", ""))[:16]
        if sbm and self.peer_sbm[pool].get(sender) != sbm:
            # The SBM status travels here too: Serf coalesces tag updates for ~1 s.
            self.peer_sbm[pool][sender] = sbm
            changed = True
        return changed

    def _warn(self, peer: str, kind: str, fmt: str, *args: Any) -> None:
        """Log a refusal at most once a minute per peer and kind: never silent, never a flood."""
        now = time.monotonic()
        if now - self._logged.get((peer, kind), -LOG_EVERY) >= LOG_EVERY:
            self._logged[(peer, kind)] = now
            log.warning(fmt, *args)

    def error_received(self, exc: Exception) -> None:  # unreachable ports etc.
        log.debug("probe socket error: %s", exc)

    # -- sending
    def _send(self, kind: str, peer: str, echo: float | None = None, rtt: bool = False) -> None:
        """Build, seal and send one packet to PEER (pongs; a round shares its packets)."""
        if self.transport is None or not self.shared.get(peer):
            return
        self._transmit(self._packet(kind, peer, echo=echo, rtt=rtt), peer)

    def _round(self, peers: list[str], rtt: bool = False) -> None:
        """Ping PEERS: one sealed packet per distinct content, not one per peer.

        What a round says does not depend on the receiver (its view or ages, the
        maintenance tags of the sender's subjects, its SBM status), so peers that
        share the same pools with this node get the very same packet: building,
        encoding and signing it is most of a packet's cost. Sharing one ``seq``
        is safe: each receiver checks it against its own last accepted, and a
        copy captured on the way to one peer and replayed to another is either
        refused (that peer has it) or says exactly what that peer was sent.
        Pools larger than one age chunk give successive peers successive chunks.
        """
        if self.transport is None:
            return
        sealed: dict[tuple, bytes] = {}
        for slot, peer in enumerate(peers):
            pools = self.shared.get(peer)
            if not pools:
                continue
            chunks = tuple(self.bounded[p].chunk_for(slot) for p in pools if p in self.bounded)
            key = (tuple(pools), chunks)
            packet = sealed.get(key)
            if packet is None:
                packet = sealed[key] = self._packet("ping", peer, rtt=rtt, slot=slot)
            self._transmit(packet, peer)
        for ring in self.bounded.values():
            ring.next_round()

    def _packet(
        self,
        kind: str,
        peer: str,
        echo: float | None = None,
        rtt: bool = False,
        slot: int | None = None,
    ) -> bytes:
        maint = self.maint_seen()
        # Its own tag always goes too: peers count this node alive (and in or out of
        # maintenance) by its probes before Serf has gossiped it (tns.with_probed).
        own = {self.node: maint.get(self.node, maintenance_tag(False))}
        sbm = self.own_sbm()
        self.seq += 1
        now = time.monotonic()
        sections: dict[str, Any] = {}
        for pool in self.shared[peer]:
            if pool not in self.keys:
                continue
            ring = self.bounded.get(pool)
            if ring is None:
                sections[pool] = {
                    "view": self._view[pool],
                    "maint": {**{m: maint[m] for m in self.pools[pool] if m in maint}, **own},
                    "sbm": sbm,
                }
            else:  # bounded: no whole view; the subjects' tags are their acknowledgements
                ring.own_flag = flag_of(own[self.node])
                sections[pool] = {
                    **ring.section(now, slot),
                    "maint": {**{m: maint[m] for m in ring.subjects if m in maint}, **own},
                    "sbm": sbm,
                }
        msg: dict[str, Any] = {
            "t": kind,
            "from": self.node,
            "ep": self.epoch,
            "seq": self.seq,
            "ts": time.time(),
            "pools": sections,
        }
        if echo is not None:
            msg["echo"] = echo
        if rtt:
            msg["rtt"] = 1
        return seal(self.keys, msg)

    def _transmit(self, packet: bytes, peer: str) -> None:
        assert self.transport is not None
        self.counts["sent"] += 1
        self.counts["sent_bytes"] += len(packet)
        self.largest = max(self.largest, len(packet))
        with contextlib.suppress(OSError):
            self.transport.sendto(packet, (self.peers[peer], self.port))

    async def run(self) -> None:
        """Send a round at every tick of the wall clock; re-evaluate views once a round.

        Ticks are the multiples of ``interval`` of the wall clock: the same instants
        on every node (NTP keeps clocks within milliseconds; a node whose clock is
        off only loses the batching, nothing else). So a node's peers' packets
        arrive in one burst that one wake-up reads (connector/udp_endpoint.py),
        instead of one wake-up per packet, at random phases: on an idle lab that
        waking was most of a connector's CPU.

        Views are re-evaluated ``refresh_phase`` after each tick: the moment the
        evidence of the tick ``dead_after`` ago, which came in just after that tick,
        expires. A member that stopped is seen within ``REFRESH_MARGIN`` of its
        expiry, not up to a round later; when this node reads its peers' rounds
        late (a loaded machine), the phase follows how late (the slowest of the
        last ``READ_DELAY_ROUNDS`` rounds).

        Peers ping each other, so hearing a peer's ping is proof enough that it
        is up; a pong (for the RTT figure) is asked for every ``RTT_EVERY``-th
        round only (every 5 s at the default interval).
        """
        rounds = 0
        tick = next_tick(time.time(), self.interval)
        while True:
            await asyncio.sleep(max(0.0, tick - time.time()))
            rounds += 1
            extra = {ring.extra_target() for ring in self.bounded.values()}
            extra = {p for p in extra if p in self.peers and p not in self.targets}
            # The tick on the monotonic clock (the loop may wake late): read delays count from it.
            self._tick_at = time.monotonic() - (time.time() - tick)
            self._round([*self.targets, *sorted(extra)], rtt=rounds % RTT_EVERY == 1)
            await asyncio.sleep(max(0.0, tick + self.refresh_phase - time.time()))
            # Read what has arrived before judging: a packet waiting in the socket
            # (this node was busy) is evidence already.
            drain = getattr(self.transport, "drain", None)
            if drain is not None:
                drain()
            self._refresh()
            self._read_delays.append(self._read_delay)
            self._read_delay = 0.0
            self.refresh_phase = refresh_phase(
                self.interval, self.dead_after, max(self._read_delays)
            )
            tick = following_tick(tick, time.time(), self.interval)

    def _push_soon(self) -> None:
        """Send a round to the fixed targets now: alerts travel at once.

        At most every ``PUSH_SPACING`` and within a budget of ``PUSH_BURST`` pushes
        refilled by ``PUSH_PER_ROUND`` per interval: one failure's alerts go out
        at once, but a start of many nodes, whose records change all the time,
        no longer makes every node push 50 rounds a second (what the regular
        rounds relay anyway, within one interval).
        """
        if self._push_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests drive the prober by hand)
            return
        now = time.monotonic()
        if not self._push_budget.take(now):
            return  # the next regular round carries it
        delay = max(0.0, self._last_push + PUSH_SPACING - now)
        self._push_handle = loop.call_later(delay, self._push)

    def _push(self) -> None:
        self._push_handle = None
        self._last_push = time.monotonic()
        self._round(self.targets)

    def traffic(self) -> dict[str, Any]:
        """Packets and bytes since start, the largest packet, and how each pool is probed."""
        return {
            **self.counts,
            "largest": self.largest,
            "seconds": round(time.monotonic() - self.started, 3),
            "targets": len(self.targets),
            "bounded": sorted(self.bounded),
            # How long after each tick views are re-evaluated (follows the read delay).
            "refresh_phase_ms": round(self.refresh_phase * 1000, 1),
        }

    def speaks_to(self, peer: str) -> bool:
        """Whether PEER and this node exchange packets every round (it can acknowledge)."""
        return peer in self.targets

    def reach(self, pool: str) -> dict[str, bool] | None:
        """For a bounded pool, every member this node has fresh evidence of; else None.

        The all-to-all view is both this node's vote and its reach; a bounded
        pool's vote covers only its ring subjects, so quorum needs this too.
        """
        ring = self.bounded.get(pool)
        return dict(ring.reach) if ring is not None else None

    # -- views
    def _refresh(self) -> None:
        """Re-evaluate this node's own view of every pool; signal only when it changed."""
        now = time.monotonic()
        grace = now - self.started < self.dead_after * 2  # no verdicts before peers had a chance
        changed = False
        for pool, members in self.pools.items():
            ring = self.bounded.get(pool)
            if ring is not None:
                something, own = ring.refresh(now, grace)
                self._view[pool] = ring.reach
                changed |= something
                if own:
                    self._push_soon()  # this node lost (or found) a subject: say so now
                continue
            view = {}
            for peer in members:
                if peer == self.node:
                    continue
                last = self.heard[pool].get(peer)
                view[peer] = (
                    True
                    if grace and last is None
                    else (last is not None and now - last <= self.dead_after)
                )
            if view != self._view[pool]:
                self._view[pool] = view
                changed = True
        # An observer whose view just went stale stops counting: re-evaluate.
        stale = sorted(
            (p, n)
            for p, views in self.views.items()
            if p not in self.bounded
            for n, (t, _v) in views.items()
            if now - t > 2.0
        )
        if stale != self._stale:
            self._stale = stale
            changed = True
        if changed:
            self.on_change()

    def observations(
        self, max_age: float = 2.0, pool: str | None = None
    ) -> dict[str, dict[str, bool]]:
        """Every fresh view, this node's own included: ``{observer: {peer: reachable}}``.

        With ``pool``, only what was signed with that pool's key (what the
        pool's verdict may use); without, every pool's views merged.
        """
        now = time.monotonic()
        out: dict[str, dict[str, bool]] = {}
        for name in [pool] if pool is not None else list(self.pools):
            ring = self.bounded.get(name)
            if ring is not None:
                for observer, view in ring.observations(now).items():
                    out.setdefault(observer, {}).update(view)
                continue
            for observer, (t, view) in self.views[name].items():
                if now - t <= max_age:
                    out.setdefault(observer, {}).update(view)
            out.setdefault(self.node, {}).update(self._view[name])
        return out

    def probed(self, pool: str) -> dict[str, str]:
        """``{member: maint tag}`` of every member of POOL this node has fresh evidence
        of (within ``MAX_AGE``, the window observers count for; signed with the pool's
        key) and whose maintenance state that evidence carried: tns.py ``with_probed``.

        All-to-all: heard directly, with the tag from the member's own packets.
        Bounded: direct or relayed evidence; the tag is the member's own when this
        node hears it directly and agrees with the relayed flag, else the flag alone.
        """
        now = time.monotonic()
        ring = self.bounded.get(pool)
        tags = self.own_tags[pool]
        if ring is not None:
            out = {}
            for member, flag in ring.probed(now).items():
                tag = tags.get(member)
                out[member] = tag if flag_of(tag) == flag else maintenance_tag(flag == MAINT)
            return out
        heard = self.heard[pool]
        return {
            peer: tags[peer]
            for peer, when in heard.items()
            if peer in tags and now - when <= MAX_AGE
        }

    def sbm(self, pool: str, max_age: float = 2.0) -> dict[str, str]:
        """The SBM status each peer sent in its fresh sections of ``pool``."""
        now = time.monotonic()
        views = self.views[pool]
        return {
            peer: code
            for peer, code in self.peer_sbm[pool].items()
            if peer in views and now - views[peer][0] <= max_age
        }

    def skewed(self) -> dict[str, float]:
        """Peers whose packets were refused for clock skew just now: ``{peer: seconds}``.

        Positive when the peer's clock is ahead of this node's.
        """
        now = time.monotonic()
        return {
            peer: round(seconds, 1)
            for peer, (seconds, when) in sorted(self.skew.items())
            if now - when <= SKEW_REPORT_FOR
        }
