"""FS-SA file index: what each node holds in a declared tree, and how two nodes' views compare.

One SQLite database per node and tree (``<state_dir>/fs/<tree>.db``) keeps, per path,
its type, size, mtime (ns), mode, owner, content hash (BLAKE2b: in hashlib, no new
dependency) and a **version vector** ``{node: counter}``; a deleted path stays as a
tombstone so that the delete travels and an old copy cannot come back. The same
database holds each peer's persistent queue (``pending``) of paths it has not yet
acknowledged, and the conflicts this node resolved.

Shared by the connector (live path) and the receiving side (``connector/fs_protocol``)
— pure stdlib, so the ``fs_sync`` module can use it on a managed node too.

Why version vectors: two nodes that changed a file while apart each hold a counter
the other lacks ("concurrent"); a plain mtime comparison would silently drop one of
the edits. The winner of a conflict is deterministic (newest mtime, then the larger
origin node name), so every node picks the same one without talking to the others,
and the loser is kept as ``NAME.multiall-conflict-<node>-<UTC time>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from typing import Any

# The pure parts live in _fs_entry; the index module re-exports them (its public face).
from ._fs_entry import (
    CONFLICT_MARK,
    HASH_CHUNK,
    RSYNC_TEMP,
    TYPES,
    Entry,
    FsIndexError,
    FsPathError,
    check_rel_path,
    conflict_name,
    decide,
    excluded,
    file_type,
    hash_path,
    is_conflict_copy,
    plan,
    safe_join,
    same_stat,
    vv_compare,
    vv_merge,
    walk_tree,
    winner,
)

__all__ = [
    "CONFLICT_MARK",
    "HASH_CHUNK",
    "RSYNC_TEMP",
    "TYPES",
    "Entry",
    "FsIndexError",
    "FsPathError",
    "Index",
    "check_rel_path",
    "conflict_name",
    "decide",
    "excluded",
    "file_type",
    "hash_path",
    "index_path",
    "is_conflict_copy",
    "plan",
    "safe_join",
    "same_stat",
    "vv_compare",
    "vv_merge",
    "winner",
]

# --------------------------------------------------------------------- index
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, type TEXT, size INTEGER, mtime_ns INTEGER, mode INTEGER,
    uid INTEGER, gid INTEGER, hash TEXT, vv TEXT, origin TEXT, deleted INTEGER,
    incoming INTEGER DEFAULT 0, dg INTEGER);
CREATE TABLE IF NOT EXISTS pending (
    peer TEXT, path TEXT, seq INTEGER, PRIMARY KEY (peer, path));
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY, ts REAL, path TEXT, copy TEXT, winner TEXT, loser TEXT,
    policy TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


# Paths per write transaction when recording what the disk holds (see Index.observe).
OBSERVE_CHUNK = 500


def index_path(state_dir: str, tree: str) -> str:
    """Where the index of TREE lives: one file per tree, named after its path."""
    slug = tree.strip("/").replace("/", "_") or "root"
    return os.path.join(state_dir, "fs", f"{slug}.db")


class Index:
    """The SQLite index of one tree on this node, with its peers' queues.

    Used from the connector's threads and from the receiving ``multiall-fs``
    process at the same time: every change is one short transaction, and
    SQLite's lock (busy timeout 30 s) orders them.
    """

    def __init__(self, path: str, tree: str, node: str, exclude: Iterable[str] = ()) -> None:
        self.path, self.tree, self.node = path, tree.rstrip("/") or "/", node
        self.exclude = list(exclude)
        self.skipped: set[str] = set()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            self.db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise FsIndexError(f"fs index {path}: {exc}") from None
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _migrate(self) -> None:
        """Give an index written before range digests its ``dg`` column (once)."""
        if "dg" in {r[1] for r in self.db.execute("PRAGMA table_info(files)")}:
            return
        with self.tx() as db:
            if "dg" in {r[1] for r in db.execute("PRAGMA table_info(files)")}:
                return  # the other process (connector or receiver) was first
            db.execute("ALTER TABLE files ADD COLUMN dg INTEGER")
            rows = db.execute(f"SELECT {self._COLS} FROM files").fetchall()
            db.executemany(
                "UPDATE files SET dg=? WHERE path=?",
                [(e.digest(), e.path) for e in map(self._row, rows)],
            )

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue, readers go on)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------- entries
    @staticmethod
    def _row(row: tuple) -> Entry:
        return Entry(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            json.loads(row[8] or "{}"),
            row[9] or "",
            bool(row[10]),
        )

    _COLS = "path, type, size, mtime_ns, mode, uid, gid, hash, vv, origin, deleted"

    def get(self, rel: str) -> Entry | None:
        """The entry of REL, or None when the index never saw it."""
        row = self.db.execute(f"SELECT {self._COLS} FROM files WHERE path=?", (rel,)).fetchone()
        return self._row(row) if row else None

    def entries(self, paths: Iterable[str] | None = None) -> list[Entry]:
        """Every entry (tombstones included), or those of PATHS."""
        if paths is None:
            rows = self.db.execute(f"SELECT {self._COLS} FROM files ORDER BY path").fetchall()
            return [self._row(r) for r in rows]
        out = []
        for rel in paths:
            entry = self.get(rel)
            if entry is not None:
                out.append(entry)
        return out

    def entries_range(
        self, after: str | None, upto: str | None, limit: int | None = None
    ) -> list[Entry]:
        """Entries with AFTER < path <= UPTO (None: unbounded), in path order, at most LIMIT.

        Why: a catch-up compares whole indexes; at 100 000 files one JSON message of
        every entry costs ~150 MB in the connector. Ranges let both sides walk the
        index in slices of a few thousand entries instead.
        """
        sql = f"SELECT {self._COLS} FROM files WHERE (? IS NULL OR path > ?)"
        args: list[Any] = [after, after]
        if upto is not None:
            sql += " AND path <= ?"
            args.append(upto)
        sql += " ORDER BY path"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self.db.execute(sql, args)]

    def under(self, rel_dir: str) -> list[str]:
        """Live paths indexed below directory REL_DIR (it moved or was deleted)."""
        # A range on the primary key ('/' + 1 is '0'): no walk of the whole index.
        base = rel_dir.rstrip("/")
        rows = self.db.execute(
            "SELECT path FROM files WHERE path > ? AND path < ? AND deleted=0",
            (base + "/", base + "0"),
        )
        return [rel_dir, *(r[0] for r in rows)]

    def put(self, db: sqlite3.Connection, entry: Entry, incoming: bool = False) -> None:
        """Write ENTRY inside an open transaction."""
        db.execute(
            f"INSERT OR REPLACE INTO files ({self._COLS}, incoming, dg)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry.path,
                entry.type,
                entry.size,
                entry.mtime_ns,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.hash,
                json.dumps(entry.vv, sort_keys=True),
                entry.origin,
                int(entry.deleted),
                int(incoming),
                entry.digest(),
            ),
        )

    def enqueue(
        self,
        db: sqlite3.Connection,
        paths: Iterable[str],
        peers: Iterable[str],
        requeue: bool = True,
    ) -> None:
        """Queue PATHS for every peer in PEERS (a later change of a queued path re-queues it).

        ``requeue=False`` (an index comparison or a peer asking) leaves a path that is
        queued already where it is: a new sequence number would keep the push in
        flight from acknowledging it and send it a second time.
        """
        seq = time.time_ns()
        verb = "REPLACE" if requeue else "IGNORE"
        db.executemany(
            f"INSERT OR {verb} INTO pending (peer, path, seq) VALUES (?,?,?)",
            [(peer, rel, seq) for rel in paths for peer in peers],
        )

    def incoming(self, rel: str) -> bool:
        """Whether REL's entry is a peer's version whose transfer has not landed yet."""
        row = self.db.execute("SELECT incoming FROM files WHERE path=?", (rel,)).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------ local changes
    def _disk_entry(self, rel: str, old: Entry | None) -> Entry | None:
        """The entry REL should have now, from the disk; None when it is not indexable."""
        full = os.path.join(self.tree, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            if old is None or old.deleted:
                return None
            return Entry(rel, old.type, 0, 0, 0, 0, 0, "", dict(old.vv), self.node, True)
        except OSError:
            return None
        kind = file_type(st)
        if kind is None:
            # Devices, fifos and sockets are never synced: kept in a list the
            # status shows, so that "why is it not on the peer?" has an answer.
            self.skipped.add(rel)
            return None
        if old is not None and same_stat(old, st):
            return old
        try:
            digest = hash_path(full, st)
        except OSError:
            return None  # vanished or unreadable meanwhile: the next event or rescan says
        return Entry(
            rel,
            kind,
            st.st_size if kind != "d" else 0,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            digest,
            dict(old.vv) if old else {},
            self.node,
            False,
        )

    def observe(self, paths: Iterable[str], peers: Iterable[str]) -> list[str]:
        """Record what the disk now holds at PATHS; queue real changes for PEERS.

        A path whose disk state equals its entry (for instance a file a peer just
        sent, indexed before it landed) is no change: that is what keeps received
        files from echoing back. Returns the paths that changed.

        One transaction per ``OBSERVE_CHUNK`` paths (each records and queues its
        changes together): a node indexing thousands of files it just received
        would otherwise hold the write lock for seconds, and a peer's push of a
        few changes (its own transaction) would wait behind it.
        """
        paths, peers = list(paths), list(peers)
        changed: list[str] = []
        for i in range(0, len(paths), OBSERVE_CHUNK):
            with self.tx() as db:
                changed += self.record(db, paths[i : i + OBSERVE_CHUNK], peers)
        return changed

    def record(
        self, db: sqlite3.Connection, paths: Iterable[str], peers: Iterable[str]
    ) -> list[str]:
        """``observe`` inside an open transaction (the receiver checks the disk first too)."""
        changed: list[str] = []
        for rel in paths:
            if excluded(rel, self.exclude):
                continue
            old = self.get(rel)
            incoming = bool(old) and self.incoming(rel)
            new = self._disk_entry(rel, old)
            if new is None or new is old:
                if new is old and incoming:
                    db.execute("UPDATE files SET incoming=0 WHERE path=?", (rel,))
                continue
            if old is not None and new.same_content(old):
                # Same bytes, mode and owner (an mtime touch, a directory whose
                # children changed, a received file): refresh the stat, no change.
                new.vv, new.origin = old.vv, old.origin
                self.put(db, new)
                continue
            if incoming and old is not None and not old.deleted:
                continue  # a transfer in flight: the disk catches up with the entry
            new.vv = {**new.vv, self.node: new.vv.get(self.node, 0) + 1}
            new.origin = self.node
            self.put(db, new)
            changed.append(rel)
        self.enqueue(db, changed, list(peers))
        return changed

    def walk(self, debris: list[str] | None = None) -> Iterator[str]:
        """Every indexable relative path under the tree, excludes pruned (DEBRIS: walk_tree)."""
        return walk_tree(self.tree, self.exclude, debris)

    def rescan(self, peers: Iterable[str], debris: list[str] | None = None) -> list[str]:
        """Compare the whole tree with the index: catches what inotify missed.

        Stat only: the index is read once, each path on disk is ``lstat``-ed and
        compared with its row, and only paths whose stat differs (or that are new,
        gone, or still marked incoming) go through ``observe``, which hashes. An
        unchanged 100 000-file tree costs a walk, not 100 000 lookups in one long
        write transaction that would hold off every peer's push meanwhile.

        DEBRIS, when given, receives rsync's temporary files met by the same walk
        (never indexed; the caller decides whether to remove them: the start-up
        rescan does, before any transfer of ours runs).
        """
        known = {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT path, type, size, mtime_ns, mode, uid, gid, incoming"
                " FROM files WHERE deleted=0"
            )
        }
        suspects = []
        for rel in self.walk(debris):
            row = known.pop(rel, None)
            try:
                st = os.lstat(os.path.join(self.tree, rel))
            except OSError:
                st = None
            if row is None or row[-1] or st is None or not same_stat(Entry(rel, *row[:-1]), st):
                suspects.append(rel)
        suspects.extend(known)  # indexed but no longer on disk
        if not suspects:
            return []
        return self.observe(sorted(suspects), peers)

    # ------------------------------------------------------------- queues
    def pending(self, peer: str, limit: int = 50_000) -> list[tuple[str, int]]:
        """(path, seq) queued for PEER, oldest first."""
        return self.db.execute(
            "SELECT path, seq FROM pending WHERE peer=? ORDER BY seq LIMIT ?", (peer, limit)
        ).fetchall()

    def ack(self, peer: str, items: Iterable[tuple[str, int]]) -> None:
        """PEER has what was sent: drop those rows unless the path changed since."""
        with self.tx() as db:
            db.executemany(
                "DELETE FROM pending WHERE peer=? AND path=? AND seq<=?",
                [(peer, rel, seq) for rel, seq in items],
            )

    def pending_counts(self) -> dict[str, int]:
        """How many paths each peer has yet to receive."""
        return dict(self.db.execute("SELECT peer, COUNT(*) FROM pending GROUP BY peer"))

    # ---------------------------------------------------------- conflicts
    def record_conflict(
        self, db: sqlite3.Connection, rel: str, copy: str, win: Entry, lose: Entry, policy: str
    ) -> None:
        """Keep a resolved conflict for ``multiall fs conflicts``."""
        db.execute(
            "INSERT INTO conflicts (ts, path, copy, winner, loser, policy) VALUES (?,?,?,?,?,?)",
            (time.time(), rel, copy, win.origin, lose.origin, policy),
        )

    def conflicts(self) -> list[dict[str, Any]]:
        """Conflict copies present in the tree (the same on every node once in sync)."""
        rows = self.db.execute(
            "SELECT path, origin, mtime_ns FROM files WHERE deleted=0 AND path LIKE ?",
            (f"%{CONFLICT_MARK}%",),
        ).fetchall()
        out = []
        for rel, origin, mtime_ns in rows:
            if not is_conflict_copy(rel):
                continue
            base, _sep, tail = rel.rpartition(CONFLICT_MARK)
            out.append(
                {
                    "path": base,
                    "copy": rel,
                    "loser": tail.rsplit("-", 1)[0],
                    "origin": origin,
                    "mtime_ns": mtime_ns,
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        """Files, bytes and tombstones of the tree as indexed."""
        files, size = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size),0) FROM files WHERE deleted=0 AND type!='d'"
        ).fetchone()
        tomb = self.db.execute("SELECT COUNT(*) FROM files WHERE deleted=1").fetchone()[0]
        try:
            skipped = sorted(self.skipped)
        except RuntimeError:  # the scanning thread added one meanwhile: next time
            skipped = []
        return {
            "files": files,
            "bytes": size,
            "tombstones": tomb,
            "skipped": skipped[:20],
            "skipped_count": len(skipped),
        }

    def meta(self, key: str, value: str | None = None) -> str | None:
        """Read (or write, when VALUE is given) one small setting such as a last-sync time."""
        if value is not None:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))
            return value
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None
