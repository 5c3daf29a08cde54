"""The connector's durable state: events and playbook runs, in SQLite.

Queued and running runs survive a restart: on start the daemon picks up every
run not finished, so no reaction is lost when the daemon dies mid-work.
Writes are single transactions; the database is only touched from the
journal's own thread (``offload``), never from the event loop, and never from
the thread pool that DNS and the checks use, so a slow disk delays nothing else.

The journal is a record, not a dependency: when it fails (disk full or broken,
file made immutable, corruption) every call raises ``JournalError`` naming the
file and what to do, the daemon reports it and goes on detecting members and
serving DNS, and the next call tries to open the file again. A database found
corrupt when opened is moved aside (kept, never deleted) and a new one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .health import Fault

log = logging.getLogger("multiall.journal")
T = TypeVar("T")

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

# SQLite's primary result codes that mean "this file is not a sound database".
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class JournalError(Exception):
    """The journal could not be opened, read or written; the message says which file and why."""


class _Corrupt(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


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


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, _Corrupt) or (code is not None and code & 0xFF in _CORRUPT_CODES)


class Journal:
    """Thread-safe access to the connector database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One thread: SQLite serialises writers anyway, and a hung disk then
        # holds this thread only, not the pool DNS and the checks run in.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="multiall-journal")
        self.moved_aside: str | None = None  # where a corrupt database was put, for status
        # Logged once per new error (then at most every 30 s), and shown by `multiall status`.
        self.fault = Fault(log, "journal", logging.ERROR)
        with contextlib.suppress(JournalError):  # logged and kept in self.fault; retried on use
            self._do(lambda db: None)

    # ---------------------------------------------------------- connection
    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        _private(self.path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            found = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if found != "ok":
                raise _Corrupt(f"quick_check: {found}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        """The open connection; opens (and repairs by moving aside) when there is none."""
        if self._db is not None:
            return self._db
        try:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                self._move_aside(exc)
                self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(self._explain(exc)) from None
        return self._db

    def _move_aside(self, exc: BaseException) -> None:
        """Keep a corrupt database (and its WAL) under a new name; a new one replaces it."""
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        self.moved_aside = aside
        log.error(
            "journal %s is corrupt (%s): moved it to %s and started a new one; its events and "
            "unfinished runs are not resumed (inspect or salvage with: sqlite3 %s .recover)",
            self.path,
            exc,
            aside,
            aside,
            extra={"fields": {"path": self.path, "moved_to": aside}},
        )

    def _explain(self, exc: BaseException) -> str:
        return (
            f"journal {self.path}: {exc}; events and playbook runs are not recorded until it "
            "works again (check free space, permissions and attributes such as chattr +i; "
            "the daemon retries by itself)"
        )

    def _do(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run ACTION on the connection; any database fault becomes a (logged) JournalError."""
        with self._lock:
            try:
                db = self._connect()
                try:
                    result = action(db)
                except (sqlite3.Error, OSError) as exc:
                    # Reopen on the next call: that re-checks the file (and moves a
                    # database that went corrupt aside) instead of failing forever.
                    self._db = None
                    db.close()
                    raise JournalError(self._explain(exc)) from None
            except JournalError as exc:
                self.fault.failed(str(exc), path=self.path)
                raise
            self.fault.ok()
            return result

    async def offload(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one of this journal's methods in its own thread; await the result."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Close the database and stop the journal's thread."""
        self._executor.shutdown(wait=False)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --------------------------------------------------------------- data
    def add_event(self, event: dict[str, Any]) -> int:
        row = (
            event.get("ts", time.time()),
            event["pool"],
            event["type"],
            event.get("member"),
            json.dumps(event),
        )
        return self._do(
            lambda db: int(
                db.execute(
                    "INSERT INTO events (ts, pool, type, member, data) VALUES (?, ?, ?, ?, ?)", row
                ).lastrowid
            )
        )

    def events(self, since: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._do(
            lambda db: db.execute(
                "SELECT id, data FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", (since, limit)
            ).fetchall()
        )
        return [{"id": i, **json.loads(d)} for i, d in reversed(rows)]

    def queue_run(self, pool: str, playbook: str, scope: str, events: list[dict[str, Any]]) -> int:
        row = (pool, playbook, scope, json.dumps(events), time.time())
        return self._do(
            lambda db: int(
                db.execute(
                    "INSERT INTO runs (pool, playbook, scope, events, status, queued)"
                    " VALUES (?, ?, ?, ?, 'queued', ?)",
                    row,
                ).lastrowid
            )
        )

    def update_run(self, run_id: int, **fields: Any) -> None:
        if "changed_hosts" in fields:
            fields["changed_hosts"] = json.dumps(fields["changed_hosts"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._do(
            lambda db: db.execute(
                f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id)
            )
        )

    def unfinished_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs(limit=1000) if r["status"] in ("queued", "running")]

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        def read(db: sqlite3.Connection) -> tuple[list[str], list[tuple]]:
            cur = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            return [c[0] for c in cur.description], cur.fetchall()

        names, rows = self._do(read)
        out = []
        for row in reversed(rows):
            item = dict(zip(names, row, strict=True))
            item["events"] = json.loads(item["events"])
            item["changed_hosts"] = (
                json.loads(item["changed_hosts"]) if item["changed_hosts"] else []
            )
            out.append(item)
        return out
