"""Direct peer probes: fast reachability inside a pool, and shared observations.

Every ``interval`` each node sends a UDP ping to every pool peer; a peer not
heard from for ``dead_after`` seconds is unreachable *in this node's view*.
Each ping and pong carries the sender's whole view (``{peer: reachable}``) and
the maintenance flags it has seen through Serf, so every node learns every
peer's opinion within one interval, directly, without waiting for gossip. The
verdict (a strict majority of observers) is made by ``module_utils/tns.py``.

Packets are JSON with an HMAC-SHA256 over the body keyed by the pool secret:
a packet that is malformed, unsigned, signed with another key, from an unknown
node or stale is dropped and counted, never acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("multiall.probe")
MAX_SKEW = 30.0


def sign(secret: bytes, body: bytes) -> bytes:
    """Body + '.' + hex HMAC; the receiver recomputes it."""
    return body + b"." + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()


def verify(secret: bytes, packet: bytes) -> dict[str, Any] | None:
    """The decoded message, or None when the packet is not ours or not intact."""
    body, _dot, mac = packet.rpartition(b".")
    if not body or not hmac.compare_digest(
        mac, hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    ):
        return None
    try:
        msg = json.loads(body)
    except ValueError:
        return None
    if (
        not isinstance(msg, dict)
        or msg.get("t") not in ("ping", "pong")
        or not isinstance(msg.get("from"), str)
    ):
        return None
    if (
        not isinstance(msg.get("view", {}), dict)
        or abs(time.time() - float(msg.get("ts", 0))) > MAX_SKEW
    ):
        return None
    return msg


class Prober(asyncio.DatagramProtocol):
    """Sends pings, answers them, and keeps every node's latest view."""

    def __init__(
        self,
        node: str,
        peers: dict[str, str],
        port: int,
        secret: bytes,
        interval: float,
        dead_after: float,
        on_change: Callable[[], None],
        maint_seen: Callable[[], dict[str, str]],
        own_sbm: Callable[[], str] = lambda: "",
    ) -> None:
        self.node, self.peers, self.port, self.secret = node, dict(peers), port, secret
        self.interval, self.dead_after = interval, dead_after
        self.on_change, self.maint_seen, self.own_sbm = on_change, maint_seen, own_sbm
        self.peer_sbm: dict[str, str] = {}
        self.transport: asyncio.DatagramTransport | None = None
        # When (monotonic) each peer last sent us a valid signed packet, ping or pong.
        self.last_heard: dict[str, float] = {}
        self.rtt_ms: dict[str, float] = {}
        self.views: dict[str, tuple[float, dict[str, bool]]] = {}
        self.peer_maint_seen: dict[str, dict[str, str]] = {}
        self.rejected = 0
        self.started = time.monotonic()
        self._view: dict[str, bool] = {}

    # -- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = verify(self.secret, data)
        sender = msg.get("from") if msg else None
        if msg is None or sender not in self.peers or self.peers[sender] != addr[0]:
            self.rejected += 1
            return
        now = time.monotonic()
        view = {str(k): bool(v) for k, v in msg.get("view", {}).items()}
        previous = self.views.get(sender)
        self.views[sender] = (now, view)
        self.peer_maint_seen[sender] = {str(k): str(v) for k, v in (msg.get("maint") or {}).items()}
        sbm = str(msg.get("sbm", ""))[:16]
        if sbm and self.peer_sbm.get(sender) != sbm:
            # The SBM status travels here too: Serf coalesces tag updates for ~1 s.
            self.peer_sbm[sender] = sbm
            self.on_change()
        was_reachable = self._view.get(sender, True)
        self.last_heard[sender] = now  # any signed packet proves the path from the peer works
        if msg["t"] == "ping" and msg.get("rtt"):
            self._send("pong", sender, echo=msg.get("ts"))
        elif msg["t"] == "pong":
            echo = msg.get("echo")
            if isinstance(echo, (int, float)):
                self.rtt_ms[sender] = round(max(0.0, (time.time() - echo) * 1000), 3)
        if not was_reachable:
            self._refresh()  # a peer came back: say so now, not at the next tick
        # Only a changed opinion matters: most packets repeat the last one.
        if previous is None or previous[1] != view:
            self.on_change()

    def error_received(self, exc: Exception) -> None:  # unreachable ports etc.
        log.debug("probe socket error: %s", exc)

    # -- sending
    def _send(self, kind: str, peer: str, echo: float | None = None, rtt: bool = False) -> None:
        if self.transport is None:
            return
        body = {
            "t": kind,
            "from": self.node,
            "ts": time.time(),
            "view": self._view,
            "maint": self.maint_seen(),
            "sbm": self.own_sbm(),
        }
        if echo is not None:
            body["echo"] = echo
        if rtt:
            body["rtt"] = 1
        packet = sign(self.secret, json.dumps(body, separators=(",", ":")).encode())
        with contextlib.suppress(OSError):
            self.transport.sendto(packet, (self.peers[peer], self.port))

    async def run(self) -> None:
        """Ping every peer each interval and re-evaluate reachability.

        Peers ping each other, so hearing a peer's ping is proof enough that it
        is up; a pong (for the RTT figure) is asked for every 10th round only,
        which halves the packets per second.
        """
        rounds = 0
        while True:
            rounds += 1
            for peer in self.peers:
                self._send("ping", peer, rtt=rounds % 10 == 1)
            await asyncio.sleep(self.interval)
            self._refresh()

    # -- views
    def _refresh(self) -> None:
        """Re-evaluate this node's own view; signal only when it changed."""
        now = time.monotonic()
        grace = now - self.started < self.dead_after * 2  # no verdicts before peers had a chance
        view = {}
        for peer in self.peers:
            last = self.last_heard.get(peer)
            view[peer] = (
                True
                if grace and last is None
                else (last is not None and now - last <= self.dead_after)
            )
        if view != self._view:
            self._view = view
            self.on_change()
        # An observer whose view just went stale stops counting: re-evaluate.
        stale = [n for n, (t, _view) in self.views.items() if now - t > 2.0]
        if stale != getattr(self, "_stale", []):
            self._stale = stale
            self.on_change()

    def observations(self, max_age: float = 2.0) -> dict[str, dict[str, bool]]:
        """Every fresh view, this node's own included: ``{observer: {peer: reachable}}``."""
        now = time.monotonic()
        out = {n: v for n, (t, v) in self.views.items() if now - t <= max_age}
        out[self.node] = dict(self._view)
        return out
