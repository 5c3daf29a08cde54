# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""FS-SA converge path: make one declared tree identical on every peer, from one node.

Used by the ``fs_sync`` module (and usable by the daemon for a full catch-up):
for each peer that shares the tree, one ``rsync_argv`` run over the pool's
peer transport; ``--itemize-changes`` output says what was (or, in check mode,
would be) added, changed and deleted. rsync only moves differences, so a
second run changes nothing.

Devices, fifos and sockets are never sent, nor symlinks that lead outside the
tree; :func:`skipped_entries` lists them so the caller can report them rather
than drop them silently.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._fs_entry import leads_out, tree_digest
from ._pools_files import peer_pool, tree_peers, trees_for
from .peer_transport import CONTROL_DIR, PEER_DIR, rsync_argv, ssh_argv

CONSENSUS = "consensus"

# A runner takes argv and returns (rc, stdout, stderr), like AnsibleModule.run_command.
Runner = Callable[[Sequence[str]], tuple[int, str, str]]


class ConvergeError(Exception):
    """The tree cannot be converged as asked (undeclared tree, unknown node...)."""


@dataclass
class PeerResult:
    """What one peer got (or would get) from one rsync run."""

    peer: str
    pool: str
    address: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rc: int = 0
    error: str = ""

    @property
    def any_change(self) -> bool:
        """True when the peer's tree differs (differed) from the source's."""
        return bool(self.added or self.changed or self.deleted)

    def as_dict(self) -> dict[str, Any]:
        """JSON form returned by the module."""
        out = {
            "pool": self.pool,
            "address": self.address,
            "added": self.added,
            "changed": self.changed,
            "deleted": self.deleted,
        }
        if self.error:
            out["error"] = self.error
        return out


def parse_itemize(text: str) -> tuple[list[str], list[str], list[str]]:
    """(added, changed, deleted) from rsync ``--itemize-changes`` output.

    ``*deleting NAME`` is a delete; ``+++++++++`` in the attribute columns a
    new entry; any other itemized line a change of content or attributes.
    Lines that are not itemized (messages) are ignored.
    """
    added: list[str] = []
    changed: list[str] = []
    deleted: list[str] = []
    for line in text.splitlines():
        if line.startswith("*deleting"):
            deleted.append(line.split(None, 1)[1].strip())
            continue
        item, _sep, name = line.partition(" ")
        if len(item) != 11 or item[0] not in "<>ch." or item[1] not in "fdLDS":
            continue
        name = name.split(" -> ", 1)[0]
        if "+++++++++" in item:
            added.append(name)
        else:
            changed.append(name)
    return added, changed, deleted


def skipped_entries(tree: str) -> list[dict[str, str]]:
    """Entries of ``tree`` the transport does not carry: devices, fifos, sockets, unsafe links."""
    out: list[dict[str, str]] = []
    for root, dirs, files in os.walk(tree):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            rel = posixpath.relpath(path, tree)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                target = leads_out(tree, path)
                if target is not None:
                    out.append(
                        {"path": rel, "reason": f"symlink leads outside the tree ({target})"}
                    )
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                kind = "fifo" if stat.S_ISFIFO(info.st_mode) else "device or socket"
                out.append({"path": rel, "reason": f"{kind}: not transferred"})
    return out


def plan(model: Any, node: str, path: str, source: str | None = None) -> dict[str, Any]:
    """Which tree, from which node, to which peers; refuses undeclared trees.

    ``source``: the node to converge from, default the first member (sorted)
    of the tree's pool. ``consensus`` is resolved before (:func:`consensus`).
    """
    path = posixpath.normpath(path)
    trees = trees_for(model, node)
    if path not in trees:
        declared = ", ".join(sorted(trees)) or "none"
        raise ConvergeError(
            f"{path} is not a tree any pool of node {node!r} declares (declared: {declared})"
        )
    tree = trees[path]
    peers = tree_peers(model, node, path)
    members = sorted([node, *peers])
    first = next((m for m in model.members(tree["pool"]) if m in members), node)
    chosen = source or first
    if chosen not in members:
        raise ConvergeError(
            f"from: {chosen!r} does not hold {path}; nodes that do: {', '.join(members)}"
        )
    return {"path": path, "tree": tree, "source": chosen, "peers": peers}


def consensus(
    model: Any,
    node: str,
    path: str,
    run: Runner,
    *,
    key_dir: str = PEER_DIR,
    control_dir: str = CONTROL_DIR,
) -> dict[str, Any]:
    """The holder whose copy of tree PATH most holders share: the source of ``from=consensus``.

    Every holder's digest of the tree as it is on its disk (this node's by a
    local walk, each peer's with ``multiall-fs disk-digest`` over the peer
    transport). The largest group of identical copies wins; a tie goes to the
    group with the lowest-named node, and the source is that group's
    lowest-named node, so every node of a play picks the same one. A peer that
    does not answer has no vote (listed in ``unreachable``); when no peer
    answers there is no consensus and ConvergeError says why.
    """
    tree = trees_for(model, node)[path]
    votes = {node: tree_digest(path, tree["exclude"])["digest"] if os.path.isdir(path) else ""}
    unreachable: dict[str, str] = {}
    os.makedirs(control_dir, mode=0o700, exist_ok=True)
    for peer in tree_peers(model, node, path):
        view = model.effective(peer)
        argv = ssh_argv(
            peer_pool(model, node, peer, path),
            view.address,
            key_dir=key_dir,
            control_dir=control_dir,
            port=view.connection.get("ansible_port"),
        )
        rc, out, err = run([*argv, "multiall-fs", "disk-digest", path])
        try:
            votes[peer] = str(json.loads(out)["digest"]) if rc == 0 else ""
        except (ValueError, KeyError, TypeError):
            votes[peer] = ""
        if not votes[peer]:
            del votes[peer]
            unreachable[peer] = (err.strip().splitlines() or [f"ssh exited {rc}"])[-1]
    if len(votes) < 2 and unreachable:
        raise ConvergeError(
            f"{path}: no peer answered for a consensus ("
            + "; ".join(f"{p}: {e}" for p, e in sorted(unreachable.items()))
            + ")"
        )
    groups: dict[str, list[str]] = {}
    for holder, digest in sorted(votes.items()):
        if digest:  # a node without the tree has no copy to vote for
            groups.setdefault(digest, []).append(holder)
    if not groups:
        raise ConvergeError(f"{path}: no holder has the tree, so there is no consensus")
    ranked = sorted(groups.values(), key=lambda nodes: (-len(nodes), nodes[0]))
    return {
        "source": ranked[0][0],
        "agree": ranked[0],
        "groups": ranked,
        "unreachable": unreachable,
    }


def converge(
    model: Any,
    node: str,
    path: str,
    run: Runner,
    *,
    check: bool = False,
    key_dir: str = PEER_DIR,
    control_dir: str = CONTROL_DIR,
) -> list[PeerResult]:
    """Push tree ``path`` from ``node`` to each peer; one result per peer."""
    tree = trees_for(model, node)[path]
    os.makedirs(control_dir, mode=0o700, exist_ok=True)
    results = []
    for peer in tree_peers(model, node, path):
        pool = peer_pool(model, node, peer, path)
        view = model.effective(peer)
        conn = view.connection
        argv = rsync_argv(
            pool,
            view.address,
            path,
            delete=bool(tree["delete"]),
            dry_run=check,
            exclude=tree["exclude"],
            key_dir=key_dir,
            control_dir=control_dir,
            port=conn.get("ansible_port"),
        )
        rc, out, err = run(argv)
        result = PeerResult(peer, pool, view.address, rc=rc)
        result.added, result.changed, result.deleted = parse_itemize(out)
        if rc != 0:
            result.error = (err.strip().splitlines() or [f"rsync exited {rc}"])[-1]
        results.append(result)
    return results


def diff_text(path: str, results: Sequence[PeerResult]) -> str:
    """The ``--diff`` view: one line per entry per peer (``+`` added, ``~`` changed, ``-`` gone)."""
    lines = []
    for res in results:
        for sign, names in (("+", res.added), ("~", res.changed), ("-", res.deleted)):
            lines += [f"{sign} {res.peer}:{posixpath.join(path, n)}" for n in names]
    return "\n".join(lines) + ("\n" if lines else "")
