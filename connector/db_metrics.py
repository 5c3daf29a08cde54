"""Prometheus metrics of DB-SA, next to the connector's own (connector/metrics.py).

Same rule as there: without ``metrics:`` in connector.yml every method is a
no-op and prometheus_client is never imported.
"""

from __future__ import annotations


class DbMetrics:
    """Backlog and acks per (database, peer); rows shipped and conflicts caused."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from prometheus_client import Counter, Gauge

        self.backlog = Gauge(
            "multiall_db_backlog", "Changes a peer has not acknowledged", ["db", "peer"]
        )
        self.acked = Gauge("multiall_db_acked_seq", "A peer's ack watermark", ["db", "peer"])
        self.shipped = Counter("multiall_db_shipped_rows", "Rows a peer applied", ["db", "peer"])
        self.conflicts = Counter(
            "multiall_db_conflicts", "Conflicts a peer reported", ["db", "peer"]
        )

    def acked_batch(self, db: str, peer: str, acked: int, local: int, applied: int) -> None:
        """One batch acknowledged by PEER."""
        if self.enabled:
            self.acked.labels(db, peer).set(acked)
            self.backlog.labels(db, peer).set(max(local - acked, 0))
            self.shipped.labels(db, peer).inc(applied)

    def local_seq(self, db: str, peers: dict[str, int], local: int) -> None:
        """The local sequence moved: every peer's backlog grows with it."""
        if self.enabled:
            for peer, acked in peers.items():
                self.backlog.labels(db, peer).set(max(local - acked, 0))

    def conflict(self, db: str, peer: str, count: int) -> None:
        """PEER resolved COUNT conflicts in a batch of ours."""
        if self.enabled:
            self.conflicts.labels(db, peer).inc(count)
