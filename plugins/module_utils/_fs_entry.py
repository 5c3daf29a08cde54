"""FS-SA entries: what one version of a path is, and how two versions compare.

Pure functions shared by the index (``fsindex``), the receiving side
(``_fs_apply``) and the connector: path checks for peer data, version vectors,
the deterministic conflict winner, conflict-copy names, and ``plan`` (what two
nodes' indexes say must travel). Stdlib only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
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
    """Whether REL is not synced: rsync's temporary files, and the tree's exclude patterns."""
    return bool(RSYNC_TEMP.match(rel.rsplit("/", 1)[-1])) or pattern_excluded(rel, patterns)


def pattern_excluded(rel: str, patterns: Iterable[str]) -> bool:
    """Whether REL matches one of the tree's exclude patterns (whole path or any name)."""
    name = rel.rsplit("/", 1)[-1]
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

    def digest(self) -> int:
        """A 40-bit number for this version of the path (path, state, content, vector).

        Why: two nodes compare indexes by summing these per path range (the
        index stores each row's number), so a returning peer whose index equals
        ours costs one round trip instead of sending every entry. 40 bits keep
        the SQLite SUM of millions of rows inside 64-bit integers.
        """
        vv = ",".join(f"{k}={v}" for k, v in sorted(self.vv.items()))
        if self.deleted:
            text = f"{self.path}\0-\0{vv}"
        else:
            text = "\0".join(
                (self.path, self.type, self.hash, oct(self.mode), f"{self.uid}:{self.gid}", vv)
            )
        raw = hashlib.blake2b(text.encode(errors="surrogateescape"), digest_size=5).digest()
        return int.from_bytes(raw, "big")

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


# ---------------------------------------------------------------------- walk
def leads_out(tree: str, link: str) -> str | None:
    """LINK's target when the symlink leads outside TREE (absolute, or out by ``..``),
    else None: what rsync's ``--safe-links`` never transfers."""
    target = os.readlink(link)
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    real_tree = os.path.realpath(tree)
    if target.startswith("/") or not (resolved + "/").startswith(real_tree + "/"):
        return target
    return None


def walk_tree(
    tree: str, exclude: Iterable[str] = (), debris: list[str] | None = None
) -> Iterator[str]:
    """Every indexable relative path under TREE, excludes pruned, symlinks not followed.

    The one walk of a live tree. DEBRIS, when given, collects in the same pass
    rsync's temporary files (regular files named ``.NAME.XXXXXX`` that no exclude
    pattern covers), which are never yielded: rsync lands a file through such a
    name and a rename, so a node killed mid-transfer keeps one forever, and the
    start-up rescan finds them without a second walk of the tree.
    """
    patterns = list(exclude)
    for root, dirs, files in os.walk(tree):
        base = os.path.relpath(root, tree)
        base = "" if base == "." else base + "/"
        kept = []
        for name in dirs:
            rel = base + name
            if excluded(rel, patterns):
                continue
            if os.path.islink(os.path.join(root, name)):
                yield rel  # a symlink to a directory is a symlink: not followed
                continue
            kept.append(name)
            yield rel
        dirs[:] = kept
        for name in files:
            rel = base + name
            if pattern_excluded(rel, patterns):
                continue
            if not RSYNC_TEMP.match(name):
                yield rel
            elif debris is not None and _is_regular(os.path.join(root, name)):
                debris.append(rel)


def _is_regular(full: str) -> bool:
    """Whether FULL is a regular file (not followed if a symlink; False once gone)."""
    try:
        return stat.S_ISREG(os.lstat(full).st_mode)
    except OSError:
        return False


def tree_digest(tree: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """One digest of what a tree holds on this disk: paths, types, contents, modes, owners.

    Two nodes with the same digest hold the same tree (mtimes and version
    vectors do not count: a copy received later is the same copy). What FS-SA
    never carries is left out: conflict copies, rsync's temporary files,
    devices, fifos, sockets and symlinks leading out of the tree.
    Used by ``fs_sync from=consensus`` to find the copy most holders share.
    """
    digest = hashlib.blake2b(digest_size=16)
    files = size = 0
    for rel in sorted(walk_tree(tree, exclude)):
        name = os.path.basename(rel)
        if is_conflict_copy(rel) or RSYNC_TEMP.match(name):
            continue
        full = os.path.join(tree, rel)
        try:
            st = os.lstat(full)
            kind = file_type(st)
            content = hash_path(full, st) if kind in ("f", "l") else ""
        except OSError:
            continue  # gone while walking: not part of this copy
        if kind is None or (kind == "l" and leads_out(tree, full) is not None):
            continue  # devices, fifos, sockets, links leading out are never transferred
        files += kind == "f"
        size += st.st_size if kind == "f" else 0
        line = f"{rel}\0{kind}\0{content}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}:{st.st_gid}\n"
        digest.update(line.encode(errors="surrogateescape"))
    return {"digest": digest.hexdigest(), "files": files, "bytes": size}
