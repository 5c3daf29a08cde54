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
import fnmatch
import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

HASH_CHUNK = 1 << 20
CONFLICT_MARK = ".multiall-conflict-"
# rsync lands a file as ".NAME.XXXXXX" then renames it: never index those.
RSYNC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9]{6}$")
TYPES = {"f": "file", "d": "directory", "l": "symlink"}


class FsPathError(ValueError):
    """A path from a peer (or the model) that would leave its tree."""


class FsIndexError(RuntimeError):
    """The index database cannot be read or written (named in the message)."""


# --------------------------------------------------------------------- paths
def check_rel_path(path: Any, tree: str = "") -> str:
    """PATH as a normalised relative path inside TREE; FsPathError when it is not one.

    Peer data is checked before anything is touched: absolute paths, ``..`` and
    empty or NUL-carrying names are refused with the offending path in the message.
    """
    where = f" (tree {tree})" if tree else ""
    if not isinstance(path, str) or not path or "\0" in path:
        raise FsPathError(f"refused path {path!r}{where}: expected a non-empty relative path")
    if path.startswith("/"):
        raise FsPathError(f"refused path {path!r}{where}: absolute paths are not accepted")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise FsPathError(f"refused path {path!r}{where}: '..' would leave the tree")
    return "/".join(parts)


def safe_join(tree: str, rel: str) -> str:
    """TREE/REL, refusing REL when it (or a symlinked parent) leads outside TREE."""
    rel = check_rel_path(rel, tree)
    full = os.path.join(tree, rel)
    root = os.path.realpath(tree)
    parent = os.path.realpath(os.path.dirname(full))
    if parent != root and not parent.startswith(root + "/"):
        raise FsPathError(
            f"refused path {rel!r} (tree {tree}): a symlink in its parents leads outside the tree"
        )
    return full


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """Whether REL matches one of the tree's exclude patterns (whole path or any name)."""
    name = rel.rsplit("/", 1)[-1]
    if RSYNC_TEMP.match(name):
        return True
    for pattern in patterns:
        pat = pattern.strip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat):
            return True
        if any(fnmatch.fnmatch(part, pat) for part in rel.split("/")[:-1]):
            return True
    return False


def conflict_name(rel: str, node: str, when_ns: int) -> str:
    """``NAME.multiall-conflict-<node>-<UTC time>``: where the losing version is kept.

    The time is the loser's own mtime, so every node that resolves the same
    conflict names the copy identically (no duplicates once they meet).
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when_ns / 1e9))
    return f"{rel}{CONFLICT_MARK}{node}-{stamp}.{when_ns % 1_000_000_000:09d}Z"


def is_conflict_copy(rel: str) -> bool:
    """Whether REL is a conflict copy made by FS-SA."""
    return CONFLICT_MARK in rel.rsplit("/", 1)[-1]


# ------------------------------------------------------------ version vectors
def vv_compare(a: dict[str, int], b: dict[str, int]) -> str:
    """``equal``, ``newer`` (A dominates B), ``older`` or ``concurrent``."""
    keys = set(a) | set(b)
    a_more = any(a.get(k, 0) > b.get(k, 0) for k in keys)
    b_more = any(b.get(k, 0) > a.get(k, 0) for k in keys)
    if a_more and b_more:
        return "concurrent"
    if a_more:
        return "newer"
    if b_more:
        return "older"
    return "equal"


def vv_merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Pointwise maximum: the vector of a state that has seen both."""
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))}


# -------------------------------------------------------------------- entries
@dataclass
class Entry:
    """One path of a tree as a node knows it (a tombstone when ``deleted``)."""

    path: str
    type: str = "f"
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    hash: str = ""
    vv: dict[str, int] = field(default_factory=dict)
    origin: str = ""
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what travels in ``multiall-fs`` messages)."""
        return asdict(self)

    @classmethod
    def from_peer(cls, data: Any, tree: str = "") -> Entry:
        """An entry received from a peer, checked: a bad one raises FsPathError."""
        if not isinstance(data, dict):
            raise FsPathError(f"refused entry {data!r}: expected an object")
        try:
            entry = cls(
                path=check_rel_path(data.get("path"), tree),
                type=str(data.get("type", "f")),
                size=int(data.get("size", 0)),
                mtime_ns=int(data.get("mtime_ns", 0)),
                mode=int(data.get("mode", 0)) & 0o7777,
                uid=int(data.get("uid", 0)),
                gid=int(data.get("gid", 0)),
                hash=str(data.get("hash", "")),
                vv={str(k): int(v) for k, v in dict(data.get("vv") or {}).items()},
                origin=str(data.get("origin", "")),
                deleted=bool(data.get("deleted", False)),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, FsPathError):
                raise
            raise FsPathError(f"refused entry for {data.get('path')!r}: {exc}") from None
        if entry.type not in TYPES:
            raise FsPathError(f"refused entry {entry.path!r}: unknown type {entry.type!r}")
        return entry

    def same_content(self, other: Entry) -> bool:
        """Same bytes, type, mode and owner (or both deleted): nothing to transfer."""
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        return (self.type, self.hash, self.mode, self.uid, self.gid) == (
            other.type,
            other.hash,
            other.mode,
            other.uid,
            other.gid,
        )


def winner(a: Entry, b: Entry) -> Entry:
    """The deterministic winner of two concurrent versions of one path.

    A surviving version beats a delete (nothing is lost); otherwise the newest
    mtime wins, then the larger origin node name, then the larger hash — every
    node computes the same answer from the same two entries.
    """
    if a.deleted != b.deleted:
        return b if a.deleted else a
    return max((a, b), key=lambda e: (e.mtime_ns, e.origin, e.hash))


def decide(local: Entry | None, incoming: Entry) -> str:
    """What a node does with INCOMING for a path it holds as LOCAL.

    ``take`` (incoming is newer or the path is unknown), ``keep`` (local is newer:
    nothing to do), ``same`` (equal vectors or identical content: merge vectors),
    ``win`` (concurrent, incoming wins: local loses) or ``lose`` (concurrent,
    local wins: incoming loses).
    """
    if local is None:
        return "take"
    order = vv_compare(incoming.vv, local.vv)
    if order == "equal":
        return "same"
    if order == "newer":
        return "take"
    if order == "older":
        return "keep"
    if local.same_content(incoming):
        return "same"
    return "win" if winner(local, incoming) is incoming else "lose"


# ---------------------------------------------------------------------- stat
def hash_path(full: str, st: os.stat_result) -> str:
    """BLAKE2b-128 of a file's bytes, or of a symlink's target; "" for directories."""
    digest = hashlib.blake2b(digest_size=16)
    if stat.S_ISLNK(st.st_mode):
        digest.update(os.readlink(full).encode(errors="surrogateescape"))
    elif stat.S_ISREG(st.st_mode):
        with open(full, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    else:
        return ""
    return digest.hexdigest()


def file_type(st: os.stat_result) -> str | None:
    """``f``/``d``/``l``, or None for what FS-SA never transfers (devices, fifos, sockets)."""
    if stat.S_ISREG(st.st_mode):
        return "f"
    if stat.S_ISDIR(st.st_mode):
        return "d"
    if stat.S_ISLNK(st.st_mode):
        return "l"
    return None


def same_stat(entry: Entry, st: os.stat_result) -> bool:
    """Whether the disk still matches ENTRY without reading it (size, mtime, mode, owner)."""
    if entry.deleted or entry.type != file_type(st):
        return False
    return (
        (entry.type == "d" or entry.size == st.st_size)
        and (entry.type == "d" or entry.mtime_ns == st.st_mtime_ns)
        and entry.mode == stat.S_IMODE(st.st_mode)
        and (entry.uid, entry.gid) == (st.st_uid, st.st_gid)
    )


# --------------------------------------------------------------------- index
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, type TEXT, size INTEGER, mtime_ns INTEGER, mode INTEGER,
    uid INTEGER, gid INTEGER, hash TEXT, vv TEXT, origin TEXT, deleted INTEGER,
    incoming INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS pending (
    peer TEXT, path TEXT, seq INTEGER, PRIMARY KEY (peer, path));
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY, ts REAL, path TEXT, copy TEXT, winner TEXT, loser TEXT,
    policy TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


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
        except sqlite3.Error as exc:
            raise FsIndexError(f"fs index {path}: {exc}") from None
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

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

    def under(self, rel_dir: str) -> list[str]:
        """Live paths indexed below directory REL_DIR (it moved or was deleted)."""
        prefix = rel_dir.rstrip("/") + "/"
        rows = self.db.execute(
            "SELECT path FROM files WHERE deleted=0 AND substr(path, 1, ?)=?",
            (len(prefix), prefix),
        )
        return [rel_dir, *(r[0] for r in rows)]

    def put(self, db: sqlite3.Connection, entry: Entry, incoming: bool = False) -> None:
        """Write ENTRY inside an open transaction."""
        db.execute(
            f"INSERT OR REPLACE INTO files ({self._COLS}, incoming) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
            ),
        )

    def enqueue(self, db: sqlite3.Connection, paths: Iterable[str], peers: Iterable[str]) -> None:
        """Queue PATHS for every peer in PEERS (a later change of a queued path re-queues it)."""
        seq = time.time_ns()
        db.executemany(
            "INSERT OR REPLACE INTO pending (peer, path, seq) VALUES (?,?,?)",
            [(peer, rel, seq) for rel in paths for peer in peers],
        )

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
        """
        with self.tx() as db:
            return self.record(db, paths, peers)

    def record(
        self, db: sqlite3.Connection, paths: Iterable[str], peers: Iterable[str]
    ) -> list[str]:
        """``observe`` inside an open transaction (the receiver checks the disk first too)."""
        changed: list[str] = []
        for rel in paths:
            if excluded(rel, self.exclude):
                continue
            old = self.get(rel)
            incoming = bool(old) and bool(
                db.execute("SELECT incoming FROM files WHERE path=?", (rel,)).fetchone()[0]
            )
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

    def walk(self) -> Iterator[str]:
        """Every indexable relative path under the tree, excludes pruned."""
        for root, dirs, files in os.walk(self.tree):
            base = os.path.relpath(root, self.tree)
            base = "" if base == "." else base + "/"
            kept = []
            for name in dirs:
                rel = base + name
                if excluded(rel, self.exclude):
                    continue
                if os.path.islink(os.path.join(root, name)):
                    yield rel  # a symlink to a directory is a symlink: not followed
                    continue
                kept.append(name)
                yield rel
            dirs[:] = kept
            for name in files:
                rel = base + name
                if not excluded(rel, self.exclude):
                    yield rel

    def rescan(self, peers: Iterable[str]) -> list[str]:
        """Compare the whole tree with the index: catches what inotify missed."""
        seen = set(self.walk())
        known = {r[0] for r in self.db.execute("SELECT path FROM files WHERE deleted=0")}
        return self.observe(sorted(seen | known), peers)

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


def plan(local: Iterable[Entry], remote: Iterable[Entry]) -> dict[str, list[str]]:
    """Compare two nodes' indexes of one tree: what LOCAL must send, fetch, and the conflicts.

    ``send``: paths LOCAL holds newer (or the remote lacks); ``fetch``: paths the
    remote holds newer (tombstones included, they become deletes); ``conflicts``:
    concurrent versions with different content. Only metadata is compared, so a
    returning node learns what it missed without a full rsync.
    """
    mine = {e.path: e for e in local}
    theirs = {e.path: e for e in remote}
    out: dict[str, list[str]] = {"send": [], "fetch": [], "conflicts": []}
    for rel in sorted(set(mine) | set(theirs)):
        a, b = mine.get(rel), theirs.get(rel)
        if b is None:
            if a is not None and not a.deleted:
                out["send"].append(rel)
            continue
        verdict = decide(a, b)
        if verdict == "take" and not (a is None and b.deleted):
            out["fetch"].append(rel)
        elif verdict == "keep":
            out["send"].append(rel)
        elif verdict in ("win", "lose"):
            out["conflicts"].append(rel)
    return out
