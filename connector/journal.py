"""The connector's durable state: events and playbook runs, in SQLite.

Queued and running runs survive a restart: on start the daemon picks up every
run not finished, so no reaction is lost when the daemon dies mid-work.
Writes are single transactions; the database is only touched from a thread
pool, never from the event loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    pool TEXT NOT NULL,
    type TEXT NOT NULL,
    member TEXT,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    playbook TEXT NOT NULL,
    scope TEXT NOT NULL,
    events TEXT NOT NULL,
    status TEXT NOT NULL,          -- queued | running | successful | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    queued REAL NOT NULL,
    started REAL,
    ended REAL,
    changed_hosts TEXT,
    detail TEXT
);
"""


def _private(path: str) -> None:
    """Make the database (and any -wal/-shm left over) readable by root only.

    The journal holds event details and playbook output; the default umask
    would leave it world-readable. SQLite creates its -wal and -shm files
    with the mode of the database file, so creating that one 0600 first is
    enough for new files; existing ones are tightened.
    """
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


class Journal:
    """Thread-safe access to the connector database."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def add_event(self, event: dict[str, Any]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (ts, pool, type, member, data) VALUES (?, ?, ?, ?, ?)",
                (
                    event.get("ts", time.time()),
                    event["pool"],
                    event["type"],
                    event.get("member"),
                    json.dumps(event),
                ),
            )
            return int(cur.lastrowid)

    def events(self, since: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, data FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", (since, limit)
            ).fetchall()
        return [{"id": i, **json.loads(d)} for i, d in reversed(rows)]

    def queue_run(self, pool: str, playbook: str, scope: str, events: list[dict[str, Any]]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (pool, playbook, scope, events, status, queued) VALUES (?, ?, ?, ?, 'queued', ?)",
                (pool, playbook, scope, json.dumps(events), time.time()),
            )
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields: Any) -> None:
        if "changed_hosts" in fields:
            fields["changed_hosts"] = json.dumps(fields["changed_hosts"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def unfinished_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs(limit=1000) if r["status"] in ("queued", "running")]

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            names = [c[0] for c in cur.description]
            rows = cur.fetchall()
        out = []
        for row in reversed(rows):
            item = dict(zip(names, row, strict=True))
            item["events"] = json.loads(item["events"])
            item["changed_hosts"] = (
                json.loads(item["changed_hosts"]) if item["changed_hosts"] else []
            )
            out.append(item)
        return out
