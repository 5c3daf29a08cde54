"""``multiall-fs``: FS-SA metadata requests a pool peer sends over the peer transport.

sshd runs the pool's forced command (``connector/peer_receive.py``), which hands
every request whose first word is ``multiall-fs`` to :func:`serve`. Requests:

``multiall-fs apply TREE``  stdin ``{"from": NODE, "entries": [...]}``: index the
    sender's versions BEFORE rsync lands them (so our inotify does not echo them),
    apply tombstones, resolve conflicts; reply ``{"accept", "lost", "deleted", "conflicts"}``.
``multiall-fs offer TREE``  stdin ``{"from": NODE, "entries": [...]}`` (its whole
    index): queue for it what we hold newer; reply what it holds newer.
``multiall-fs want TREE``   stdin ``{"from": NODE, "paths": [...]}``: queue those for it.
``multiall-fs digest TREE`` stdin ``{"from": NODE, "uptos": [PATH|null, ...]}``: reply
    ``{"digests": [[count, sum], ...]}`` of our index over those path slices, so a
    returning node sends only the slices where our indexes differ.
``multiall-fs index TREE``  reply our entries (for ``multiall fs`` diagnostics).
``multiall-fs disk-digest TREE`` reply one digest of the tree as it is on disk
    (``fs_sync from=consensus`` votes with it; no index, no connector needed).
``multiall-fs session TREE`` the same requests as JSON lines (``"op"`` in each), kept
    open by the sender: no process start per push.

TREE must be a tree the key's pool declares for this node; every path in the
data is checked (no absolute path, no ``..``, no symlinked parent leading out)
and a bad one refuses the whole request: one line on stderr, exit 1, nothing changed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._fs_apply import (
    apply_incoming,
    offer,
    want,
)
from ansible_collections.takelan.multiall.plugins.module_utils._fs_digest import range_digests
from ansible_collections.takelan.multiall.plugins.module_utils._fs_entry import tree_digest
from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import tree_peers
from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import (
    FsIndexError,
    FsPathError,
    Index,
    index_path,
)

from .config import DEFAULT_PATH as CONFIG_PATH
from .config import ConfigError, load_config
from .peer_receive import PeerRequest, Refused

DEFAULT_STATE_DIR = "/var/lib/multiall"
# A peer's request is JSON on stdin: bounded so that a broken peer cannot eat memory.
MAX_REQUEST = 256 * 1024 * 1024
OPS = ("apply", "offer", "want", "digest", "index", "disk-digest")
# Slices one ``digest`` request may name (100 000 paths are 20 slices of 5 000).
MAX_SLICES = 10_000


def state_dir(config_path: str = CONFIG_PATH) -> str:
    """The connector's state directory (where the indexes live) from its config."""
    path = os.environ.get("MULTIALL_CONFIG", config_path)
    if os.path.exists(path):
        try:
            return load_config(path).state_dir
        except ConfigError as exc:
            raise Refused(f"{path} is invalid: {exc.errors[0]}") from None
    return DEFAULT_STATE_DIR


def _read_request() -> dict[str, Any]:
    raw = sys.stdin.buffer.read(MAX_REQUEST + 1)
    if len(raw) > MAX_REQUEST:
        raise Refused(f"request larger than {MAX_REQUEST} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise Refused(f"request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused("request must be a JSON object")
    return data


def handle(request: PeerRequest, data: dict[str, Any], states: str) -> dict[str, Any]:
    """Answer one request given by its command words (the part tests call without sshd)."""
    words = request.words
    if len(words) != 3 or words[1] not in OPS:
        raise Refused(f"usage: multiall-fs {{{'|'.join(OPS)}}} TREE (got {' '.join(words)!r})")
    return answer(request, words[1], words[2], data, states)


def answer(
    request: PeerRequest, op: str, tree: str, data: dict[str, Any], states: str
) -> dict[str, Any]:
    """Answer OP on TREE for the sender named in DATA, after every check."""
    if op not in OPS:
        raise Refused(f"unknown request {op!r}; requests: {', '.join(OPS)}")
    trees = request.trees()
    if tree not in trees:
        declared = ", ".join(sorted(trees)) or "none"
        raise Refused(
            f"tree {tree} is not declared by pool {request.pool} for {request.node}"
            f" (declared: {declared})"
        )
    spec = trees[tree]
    peers = tree_peers(request.model, request.node, tree)
    sender = str(data.get("from", ""))
    if op == "disk-digest":
        return tree_digest(tree, spec["exclude"])
    if op != "index" and sender not in peers:
        raise Refused(f"{sender!r} is not a peer of {request.node} for tree {tree}")
    index = Index(index_path(states, tree), tree, request.node, spec["exclude"])
    try:
        if op == "apply":
            return apply_incoming(
                index, sender, list(data.get("entries") or []), peers, spec["conflict"]
            )
        if op == "offer":
            bounds = [data.get(k) for k in ("after", "upto")]
            if not all(b is None or isinstance(b, str) for b in bounds):
                raise Refused("offer: 'after' and 'upto' must be paths (strings) or null")
            return offer(index, sender, list(data.get("entries") or []), *bounds)
        if op == "digest":
            uptos = data.get("uptos")
            if (
                not isinstance(uptos, list)
                or len(uptos) > MAX_SLICES
                or not all(u is None or isinstance(u, str) for u in uptos)
            ):
                raise Refused(f"digest: 'uptos' must be a list of at most {MAX_SLICES} paths")
            return {"digests": range_digests(index, uptos)}
        if op == "want":
            return {"queued": want(index, sender, list(data.get("paths") or []))}
        return {"entries": [e.as_dict() for e in index.entries()]}
    finally:
        index.close()


def session(request: PeerRequest, states: str) -> int:
    """``multiall-fs session TREE``: one JSON request per line, one JSON reply per line.

    The sender keeps this open beside its SSH master, so a push costs one round
    trip instead of starting a process on the receiver each time. A refused
    request is answered ``{"ok": false, "error": ...}`` and the session goes on.
    """
    tree = request.words[2]
    for line in sys.stdin.buffer:
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise Refused("a request must be a JSON object")
            reply = {"ok": True, **answer(request, str(data.get("op")), tree, data, states)}
        except (Refused, FsPathError, FsIndexError, ValueError, sqlite3.Error) as exc:
            # sqlite3: the index stayed locked past the busy timeout; the sender retries.
            reply = {"ok": False, "error": str(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


def serve(request: PeerRequest) -> int:
    """Entry point from ``peer_receive``'s dispatch table; stdout carries the JSON reply."""
    try:
        if request.words[1:2] == ["session"] and len(request.words) == 3:
            return session(request, state_dir())
        reply = handle(request, _read_request(), state_dir())
    except (FsPathError, FsIndexError) as exc:
        raise Refused(str(exc)) from None
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
    return 0
