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

import contextlib
import errno
import os
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
    vv_merge,
)


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
    }
    removals: list[str] = []
    with index.tx() as db:
        for entry in entries:
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
            if entry.deleted:
                index.put(db, entry)
                if local is not None and not local.deleted:
                    removals.append(entry.path)
                continue
            index.put(db, entry, incoming=True)
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


def offer(index: Index, peer: str, raw_entries: list[Any]) -> dict[str, Any]:
    """Compare PEER's index with ours (a returning node catching up, no full rsync).

    Queues for PEER every path we hold newer or in conflict (our pusher delivers
    them; conflicts are resolved by ``apply_incoming`` on its side) and returns
    the paths PEER holds newer, which it queues for us.
    """
    from .fsindex import plan

    remote = [Entry.from_peer(e, index.tree) for e in raw_entries]
    steps = plan(index.entries(), remote)
    with index.tx() as db:
        index.enqueue(db, steps["send"] + steps["conflicts"], [peer])
    return {"send_me": steps["fetch"] + steps["conflicts"], "queued": len(steps["send"])}


def want(index: Index, peer: str, paths: list[Any]) -> int:
    """Queue PATHS for PEER (it asks for what it lacks); returns how many were queued."""
    rels = [p for p in (str(x) for x in paths) if index.get(p) is not None]
    with index.tx() as db:
        index.enqueue(db, rels, [peer])
    return len(rels)
