"""FS-SA receiving side: apply a peer's entries to this node's index and tree.

``apply_incoming`` runs in the receiving ``multiall-fs apply`` process (the SSH
forced command) BEFORE rsync lands the files: the index already holds what is
coming, so this node's own inotify sees the landed file equal to its entry and
does not send it back. Deletes (tombstones) are applied here directly.

Conflicts (concurrent version vectors, different content) are resolved with the
deterministic ``fsindex.winner``; with ``conflict: keep_both`` the losing version
is kept as ``NAME.multiall-conflict-<node>-<time>`` (``fsindex.conflict_name``),
indexed as a new file and queued for every peer, so each node ends with the same
winner and the same copy. ``newest`` keeps the winner only and still reports it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

from .fsindex import (
    Entry,
    FsPathError,
    Index,
    conflict_name,
    decide,
    excluded,
    safe_join,
    same_stat,
    vv_merge,
)


def on_disk(index: Index, entry: Entry) -> bool:
    """Whether the disk really holds ENTRY (type, size, mtime, mode, owner).

    The index records a peer's version before rsync lands it; a node killed
    in between restarts with entries whose files never arrived. Only what the
    disk holds may be called "already here".
    """
    try:
        full = safe_join(index.tree, entry.path)
        if entry.deleted:
            return not os.path.lexists(full)
        return same_stat(entry, os.lstat(full))
    except (OSError, FsPathError):
        return False


def keep_loser(
    index: Index,
    db: sqlite3.Connection,
    loser: Entry,
    win: Entry,
    peers: Iterable[str],
    policy: str,
) -> str | None:
    """Move this node's losing version of a path aside as its conflict copy.

    Returns the copy's relative path (None under ``newest`` or when the loser
    was a delete: nothing to keep). The copy is indexed with the loser's own
    vector and origin, so two nodes that keep the same loser agree on it.
    """
    copy = None
    if policy == "keep_both" and not loser.deleted and loser.type != "d":
        copy = conflict_name(loser.path, loser.origin or index.node, loser.mtime_ns)
        kept_already = index.get(copy)
        if kept_already is not None and not kept_already.deleted:
            return copy  # this node kept that loser already (both sides told it so)
        src, dst = safe_join(index.tree, loser.path), safe_join(index.tree, copy)
        kept = Entry(**{**loser.as_dict(), "path": copy})
        index.put(db, kept)  # before the rename: our own inotify must not see a new file
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            db.execute("DELETE FROM files WHERE path=?", (copy,))
            copy = None
        else:
            index.enqueue(db, [copy], peers)
    index.record_conflict(db, loser.path, copy or "", win, loser, policy)
    return copy


# Files up to this size travel inside the ``apply`` request itself (no rsync process on
# either side: a small change costs one round trip); a batch inlines at most INLINE_BATCH.
INLINE_MAX = 64 * 1024
INLINE_BATCH = 4 * 1024 * 1024


def attach_inline(tree: str, entries: list[dict[str, Any]]) -> int:
    """Add ``data`` (base64) to small files among ENTRIES whose disk still matches their hash.

    A file changed since it was indexed is left to rsync (it will be queued again
    by its own event). Returns how many bytes were inlined.
    """
    total = 0
    for entry in entries:
        if entry["deleted"] or entry["type"] != "f" or entry["size"] > INLINE_MAX:
            continue
        if total + entry["size"] > INLINE_BATCH:
            break
        try:
            with open(os.path.join(tree, entry["path"]), "rb", opener=_nofollow) as handle:
                data = handle.read(INLINE_MAX + 1)
        except OSError:
            continue
        if hashlib.blake2b(data, digest_size=16).hexdigest() != entry["hash"]:
            continue
        entry["data"] = base64.b64encode(data).decode()
        total += len(data)
    return total


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def land_inline(index: Index, entry: Entry, data: bytes | None) -> None:
    """Write a small file (or make a directory) exactly as ENTRY says, atomically.

    The file is written to ``.NAME.XXXXXX`` beside it (a name the watchers ignore,
    as they ignore rsync's own temporary files) with its mode, owner and mtime,
    then renamed over NAME: a reader sees the old or the new file, never half.
    """
    full = safe_join(index.tree, entry.path)
    if entry.type == "d":
        if not os.path.isdir(full) or os.path.islink(full):
            os.makedirs(full, exist_ok=True)
        os.lchown(full, entry.uid, entry.gid)
        os.chmod(full, entry.mode)
        return
    parent, name = os.path.split(full)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.{secrets.token_hex(3)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data or b"")
            os.fchown(handle.fileno(), entry.uid, entry.gid)
            os.fchmod(handle.fileno(), entry.mode)
        os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
        os.rename(tmp, full)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _inline_data(raw: Any, entry: Entry) -> bytes | None:
    """The inlined content of RAW when present and matching ENTRY's hash, else None."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), str) or entry.type != "f":
        return None
    try:
        data = base64.b64decode(raw["data"], validate=True)
    except ValueError:
        return None
    if len(data) > INLINE_MAX or hashlib.blake2b(data, digest_size=16).hexdigest() != entry.hash:
        return None
    return data


def _remove(index: Index, rel: str) -> None:
    """Delete REL from the tree (a directory only when empty: its children go first)."""
    full = safe_join(index.tree, rel)
    try:
        if os.path.isdir(full) and not os.path.islink(full):
            os.rmdir(full)
        else:
            os.unlink(full)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def apply_incoming(
    index: Index,
    sender: str,
    raw_entries: list[Any],
    peers: Iterable[str],
    policy: str = "keep_both",
) -> dict[str, Any]:
    """Apply SENDER's entries; return what rsync must bring and what the sender lost.

    ``accept``: paths the sender should rsync now (their entries are already in
    the index); ``lost``: the sender's versions that lost a conflict to ours (it
    keeps its copy aside, then asks for ours with ``want``); ``deleted``: tombstones applied;
    ``conflicts``: conflict copies made here. A bad entry (absolute path, ``..``,
    a symlinked parent leading out) refuses the WHOLE batch: nothing changes.
    """
    entries = [Entry.from_peer(e, index.tree) for e in raw_entries]
    for entry in entries:
        if not entry.deleted:
            safe_join(index.tree, entry.path)
    others = [p for p in peers if p != sender]
    everyone = [*others, sender]
    out: dict[str, Any] = {
        "accept": [],
        "lost": [],
        "winners": [],
        "deleted": [],
        "conflicts": [],
        "landed": 0,
    }
    removals: list[str] = []
    with index.tx() as db:
        for raw, entry in zip(raw_entries, entries, strict=True):
            if excluded(entry.path, index.exclude):
                continue
            local = index.get(entry.path)
            if local is None:
                # On disk but not indexed yet (written a moment ago, before our own
                # watcher got to it): it is a local version, never silently replaced.
                index.record(db, [entry.path], everyone)
                local = index.get(entry.path)
            verdict = decide(local, entry)
            if verdict == "keep":
                continue
            if verdict == "lose" and local is not None:  # "lose" implies a local version
                # Ours wins: the sender keeps its version aside first, then asks
                # for ours (``want``); queueing it now could overwrite the loser.
                merged = Entry(**{**local.as_dict(), "vv": vv_merge(local.vv, entry.vv)})
                index.put(db, merged)
                out["lost"].append(entry.as_dict())
                out["winners"].append(merged.as_dict())
                continue
            if verdict == "win" and local is not None:
                copy = keep_loser(index, db, local, entry, everyone, policy)
                out["conflicts"].append({"path": entry.path, "copy": copy})
            if verdict in ("same", "win") and local is not None:
                entry.vv = vv_merge(local.vv, entry.vv)
            if (
                verdict == "same"
                and local is not None
                and local.same_content(entry)
                and not index.incoming(entry.path)
                and on_disk(index, local)
            ):
                # Already here (another peer brought it, or a push repeated after a
                # lost reply): learn the merged vector, land nothing again. A path
                # still marked incoming is accepted: its other transfer may fail;
                # so is one the disk does not hold (a landing cut by a crash).
                if entry.vv != local.vv:
                    index.put(db, Entry(**{**local.as_dict(), "vv": entry.vv}))
                continue
            if entry.deleted:
                index.put(db, entry)
                if local is not None and not local.deleted:
                    removals.append(entry.path)
                continue
            index.put(db, entry, incoming=True)
            data = _inline_data(raw, entry)
            if data is not None or entry.type == "d":
                land_inline(index, entry, data)  # inside the transaction: all or nothing
                out["landed"] += 1
            else:
                out["accept"].append(entry.path)
    # Deepest first, so that a deleted directory is empty when its turn comes.
    for rel in sorted(removals, key=lambda r: r.count("/"), reverse=True):
        with contextlib.suppress(FsPathError):
            _remove(index, rel)
        out["deleted"].append(rel)
    return out


def resolve_lost(
    index: Index,
    lost: list[Any],
    winners: list[Any],
    peers: Iterable[str],
    policy: str = "keep_both",
) -> list[str]:
    """The sender's side of ``lost``: keep our losing versions aside, await the winner.

    Our entry becomes the winner's (with the ``incoming`` mark), so the winner
    the peer then sends lands as "same" and is not seen as a local change; our
    version survives as the conflict copy, queued for every peer.
    """
    copies = []
    peers = list(peers)
    with index.tx() as db:
        for raw, raw_win in zip(lost, winners, strict=True):
            ours_sent = Entry.from_peer(raw, index.tree)
            win = Entry.from_peer(raw_win, index.tree)
            local = index.get(ours_sent.path)
            if local is None or local.vv != ours_sent.vv or win.path != local.path:
                continue  # changed again meanwhile: the next push decides afresh
            copy = keep_loser(index, db, local, win, peers, policy)
            if copy:
                copies.append(copy)
            index.put(db, win, incoming=True)
    return copies


def offer(
    index: Index,
    peer: str,
    raw_entries: list[Any],
    after: str | None = None,
    upto: str | None = None,
) -> dict[str, Any]:
    """Compare PEER's index with ours (a returning node catching up, no full rsync).

    Queues for PEER every path we hold newer or in conflict (our pusher delivers
    them; conflicts are resolved by ``apply_incoming`` on its side) and returns
    the paths PEER holds newer, which it queues for us. PEER may offer its index
    in slices: only our paths with AFTER < path <= UPTO (None: unbounded) are
    compared with RAW_ENTRIES, so a path PEER lacks is found in exactly one slice.
    """
    from .fsindex import plan

    remote = [Entry.from_peer(e, index.tree) for e in raw_entries]
    steps = plan(index.entries_range(after, upto), remote)
    with index.tx() as db:
        index.enqueue(db, steps["send"] + steps["conflicts"], [peer], requeue=False)
    return {"send_me": steps["fetch"] + steps["conflicts"], "queued": len(steps["send"])}


def want(index: Index, peer: str, paths: list[Any]) -> int:
    """Queue PATHS for PEER (it asks for what it lacks); returns how many were queued."""
    rels = [p for p in (str(x) for x in paths) if index.get(p) is not None]
    with index.tx() as db:
        index.enqueue(db, rels, [peer], requeue=False)
    return len(rels)
