"""Prometheus metrics of one connector, served on loopback only.

Enabled by ``metrics: 127.0.0.1:PORT`` in connector.yml; without it every method
is a no-op and prometheus_client is never imported, so a node that does not
want metrics does not pay for them.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.tns import STATES, PoolTopology

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Metrics:
    """Members per state, events, probe RTT and watcher runs."""

    def __init__(self, listen: str | None) -> None:
        self.listen = listen
        self.enabled = False
        if not listen:
            return
        from prometheus_client import Counter, Gauge

        self.members = Gauge("multiall_members", "Pool members by state", ["pool", "state"])
        self.events = Counter("multiall_events", "TNS events", ["pool", "type"])
        self.rtt = Gauge("multiall_probe_rtt_ms", "Probe round trip to each peer", ["peer"])
        self.runs = Counter("multiall_runs", "Watcher playbook runs by status", ["status"])
        self.fs_files = Counter(
            "multiall_fs_pushed_paths", "FS-SA paths pushed to a peer", ["tree", "peer"]
        )
        self.fs_pending = Gauge(
            "multiall_fs_pending",
            "FS-SA paths queued for a peer (up to one batch)",
            ["tree", "peer"],
        )
        self.fs_seconds = Counter(
            "multiall_fs_push_seconds", "FS-SA time spent pushing to a peer", ["tree", "peer"]
        )
        self.enabled = True

    def start(self) -> None:
        """Serve /metrics; anything but loopback is refused (no new open port on the node)."""
        if not self.enabled or not self.listen:
            return
        from prometheus_client import start_http_server

        host, _sep, port = self.listen.rpartition(":")
        if host not in LOOPBACK:
            raise SystemExit(f"metrics must listen on loopback, not {host}")
        start_http_server(int(port), addr=host)

    def event(self, event: dict[str, Any]) -> None:
        """Count one published TNS event."""
        if self.enabled:
            self.events.labels(event["pool"], event["type"]).inc()

    def run(self, status: str) -> None:
        """Count one finished watcher run."""
        if self.enabled:
            self.runs.labels(status).inc()

    def fs_push(self, tree: str, peer: str, paths: int, seconds: float) -> None:
        """Count one FS-SA push (paths sent and time taken) to one peer."""
        if self.enabled:
            self.fs_files.labels(tree, peer).inc(paths)
            self.fs_seconds.labels(tree, peer).inc(seconds)

    def fs_queue(self, tree: str, peer: str, pending: int) -> None:
        """How many paths wait for one peer (seen by its pusher at each look)."""
        if self.enabled:
            self.fs_pending.labels(tree, peer).set(pending)

    def topology(self, topo: PoolTopology, rtts: dict[str, float]) -> None:
        """Members per state of one pool, and the latest probe RTTs."""
        if not self.enabled:
            return
        counts: dict[str, int] = {}
        for member in topo.members.values():
            counts[member.state] = counts.get(member.state, 0) + 1
        for state in STATES:
            self.members.labels(topo.pool, state).set(counts.get(state, 0))
        for peer, value in rtts.items():
            self.rtt.labels(peer).set(value)
