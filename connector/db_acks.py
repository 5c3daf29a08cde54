"""Per-peer ack watermarks of DB-SA, kept in the connector's state directory.

The origin may prune a change only once EVERY pool peer has acknowledged it,
so the acks must outlive the daemon: they are rows of a small SQLite file
(``db-acks.db``, mode 0600) next to the journal, written in the same
transaction-per-update way. A watermark only moves forward: a late or
replayed reply can never make the origin forget what a peer already holds.
Losing this file loses nothing either: every peer applies idempotently (its
own per-origin watermark skips what it has), so a fresh store only resends.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (
    db TEXT NOT NULL,
    peer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (db, peer)
)
"""


class AckStore:
    """``(db, peer) -> highest seq the peer confirmed applied``; thread-safe."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def get(self, db: str, peer: str) -> int:
        """The peer's ack watermark for DB (0: nothing acknowledged yet)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM acks WHERE db = ? AND peer = ?", (db, peer)
            ).fetchone()
        return int(row[0]) if row else 0

    def all(self, db: str) -> dict[str, int]:
        """Every peer's ack watermark for DB."""
        with self._lock:
            rows = self._db.execute("SELECT peer, seq FROM acks WHERE db = ?", (db,)).fetchall()
        return {peer: int(seq) for peer, seq in rows}

    def advance(self, db: str, peer: str, seq: int) -> int:
        """Record that PEER holds everything of DB up to SEQ; returns the stored watermark."""
        with self._lock:
            self._db.execute(
                "INSERT INTO acks (db, peer, seq, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (db, peer) DO UPDATE SET seq = max(seq, excluded.seq),"
                " updated = excluded.updated",
                (db, peer, int(seq), time.time()),
            )
            row = self._db.execute(
                "SELECT seq FROM acks WHERE db = ? AND peer = ?", (db, peer)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the file (the daemon is stopping)."""
        with self._lock:
            self._db.close()
