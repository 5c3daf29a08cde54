"""``multiall peer-receive --pool P``: the forced command of pool P's peer key.

sshd runs it (through ``/usr/local/sbin/multiall-peer-receive P``) for every
connection made with pool P's key, whatever the peer asked; the request is in
``SSH_ORIGINAL_COMMAND``. Its first word picks a handler from :data:`HANDLERS`
(imported lazily, so a node without DB-SA still receives files); anything else
is refused. Every refusal is one line on stderr and exit 1, before anything is
written.

The ``rsync`` handler lets a peer push into (or pull from) a tree that pool P
declares for THIS node, nothing else:

- the paths must be absolute, inside one declared tree, without ``..``, and
  not reach outside the tree through a symlink (checked on the real path);
- a receiving server must not be asked for devices or special files (our
  sender never sends them: ``rsync_argv`` passes ``--no-devices --no-specials``);
- then Debian's ``rrsync`` is exec'd with the tree as its restricted
  directory. We delegate to rrsync rather than re-validate rsync's options
  ourselves because it is rsync's own maintained allow-list of server options
  (unknown or dangerous ones are refused), and it pins the tree by inode
  against symlink races between the check and the transfer. Our own checks
  come first so the peer gets a message that names the pool and the tree.

Handler contract for other agents (``multiall-fs``, ``multiall-db``):
``serve(request: PeerRequest) -> int``, with stdin/stdout being the SSH channel.
"""

from __future__ import annotations

import argparse
import importlib
import os
import posixpath
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import (
    tree_of,
    trees_for,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModelError,
    load,
    local_node_name,
)

from .config import DEFAULT_PATH as CONFIG_PATH
from .config import ConfigError, load_config

RRSYNC = "/usr/bin/rrsync"
HANDLERS: dict[str, str] = {
    "rsync": "connector.peer_receive:serve_rsync",
    "multiall-fs": "connector.fs_protocol:serve",
    "multiall-db": "connector.db_receive:serve",
}
# rrsync's own tokeniser of the command sshd hands over (backslash escapes).
_TOKEN = re.compile(r"(?:[^\s\\]+|\\.[^\s\\]*)+")
_UNESCAPE = re.compile(r"\\(.)")
# A short-option cluster the client rsync sends: letters, then "e<ver>.<caps>".
_CLUSTER = re.compile(r"^-([A-Za-z@0-9]*?)(e\d*\.\w*)?$")


class Refused(Exception):
    """The peer asked for something pool P's key may not do."""


@dataclass
class PeerRequest:
    """One incoming peer connection: who it claims to be for and what it asks."""

    pool: str
    node: str
    pools_file: str | None
    command: str
    words: list[str] = field(default_factory=list)
    _model: Any = None

    @property
    def model(self) -> Any:
        """The pool model, loaded on first use (a bad model refuses, never crashes)."""
        if self._model is None:
            try:
                self._model = load(self.pools_file)
            except (PoolModelError, OSError) as exc:
                raise Refused(f"the pool model cannot be read: {exc}") from None
        return self._model

    def trees(self) -> dict[str, dict[str, Any]]:
        """Trees pool ``pool`` declares for this node."""
        try:
            mine = trees_for(self.model, self.node)
        except KeyError as exc:
            raise Refused(str(exc).strip("'\"")) from None
        return {p: t for p, t in mine.items() if self.pool in t["pools"]}


def add_peer_receive_parser(sub: Any) -> None:
    """Register ``multiall peer-receive`` (run by sshd, not by people)."""
    p = sub.add_parser(
        "peer-receive",
        help="forced command of a pool's peer key (run by sshd; see docs/fs.md)",
    )
    p.add_argument("--pool", required=True, help="the pool whose key the peer used")
    p.add_argument("--config", default=CONFIG_PATH, help="connector config (node, pools file)")
    p.add_argument("--node", help="this node's name (default: from the config)")
    p.add_argument("--pools-file", help="pool model (default: from the config)")
    p.set_defaults(func=cmd_peer_receive)


def _identity(args: argparse.Namespace) -> tuple[str, str | None]:
    node, pools_file = args.node, args.pools_file
    if (node is None or pools_file is None) and os.path.exists(args.config):
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise Refused(f"{args.config} is invalid: {exc.errors[0]}") from None
        node = node or cfg.node
        pools_file = pools_file or cfg.pools_file
    return node or local_node_name(), pools_file


def resolve(name: str) -> Callable[[PeerRequest], int]:
    """The handler for the request's first word, imported only now."""
    target = HANDLERS.get(name)
    if target is None:
        raise Refused(f"{name!r} is not a peer request; accepted: {', '.join(sorted(HANDLERS))}")
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise Refused(
            f"{name!r} is not available on this node ({module_name} is not installed); "
            "update MultiAll here"
        ) from None
    return getattr(module, func)


def cmd_peer_receive(args: argparse.Namespace) -> int:
    """Dispatch ``SSH_ORIGINAL_COMMAND``; refusals are one line and exit 1."""
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        words = _TOKEN.findall(command)
        if not words:
            raise Refused("no command: this key only carries MultiAll peer transfers")
        node, pools_file = _identity(args)
        request = PeerRequest(args.pool, node, pools_file, command, words)
        return int(resolve(words[0])(request) or 0)
    except Refused as exc:
        print(f"multiall-peer-receive: pool {args.pool}: {exc}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ rsync
def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _real_inside(path: str, tree: str) -> bool:
    """Whether ``path`` stays in ``tree`` once symlinks are resolved.

    realpath of a missing path resolves what exists and keeps the rest, so a
    new file under a symlinked directory is judged by where it would land.
    """
    return _inside(os.path.realpath(path), os.path.realpath(tree))


def check_rsync(request: PeerRequest) -> tuple[str, list[str]]:
    """Validate an ``rsync --server`` request; returns (tree, rewritten command words).

    Path arguments become relative to the tree, which is what rrsync
    confines to its directory.
    """
    words = request.words
    if words[1:2] != ["--server"]:
        raise Refused("only 'rsync --server' requests are accepted")
    sender = words[2:3] == ["--sender"]
    try:
        dot = words.index(".", 2)
    except ValueError:
        raise Refused("malformed rsync request (no '.' before the paths)") from None
    opts, paths = words[2:dot], [_UNESCAPE.sub(r"\1", w) for w in words[dot + 1 :]]
    if not sender:
        for opt in opts:
            match = _CLUSTER.match(opt)
            letters = match.group(1) if match else ""
            if "D" in letters or opt in ("--devices", "--specials", "--copy-devices"):
                raise Refused(
                    "devices and special files are not accepted "
                    "(send with --no-devices --no-specials)"
                )
    if not paths:
        raise Refused("an rsync request must name a path inside a declared tree")
    trees = request.trees()
    chosen = None
    rel: list[str] = []
    for path in paths:
        if ".." in path.split("/"):
            raise Refused(f"path {path!r} contains '..'")
        if not path.startswith("/"):
            raise Refused(f"path {path!r} must be absolute (a tree pool {request.pool} declares)")
        tree = tree_of(trees, path)
        if tree is None:
            declared = ", ".join(sorted(trees)) or "none"
            raise Refused(
                f"{path} is not inside a tree pool {request.pool} declares for "
                f"{request.node} (declared: {declared})"
            )
        if chosen is not None and tree != chosen:
            raise Refused(f"one request may touch one tree, not {chosen} and {tree}")
        chosen = tree
        if not sender:
            os.makedirs(tree, mode=0o755, exist_ok=True)
        if not _real_inside(path, tree):
            raise Refused(f"{path} leads outside tree {tree} through a symlink")
        inner = posixpath.relpath(posixpath.normpath(path), tree)
        slash = "/" if path.endswith("/") else ""
        rel.append(f"{inner}{slash}")
    assert chosen is not None
    return chosen, [*words[: dot + 1], *(_escape(r) for r in rel)]


def _escape(path: str) -> str:
    """Back to the wire form rrsync parses (spaces and backslashes escaped)."""
    return re.sub(r"([\s\\])", r"\\\1", path)


def serve_rsync(request: PeerRequest) -> int:
    """Check the request, then exec rrsync confined to the tree (never returns on success)."""
    tree, words = check_rsync(request)
    if not os.path.exists(RRSYNC):
        raise Refused(f"{RRSYNC} is missing (install the rsync package)")
    env = dict(os.environ, SSH_ORIGINAL_COMMAND=" ".join(words))
    # -no-lock: pushes from several peers into one tree run side by side;
    # rsync's temp+rename keeps each file whole.
    argv = [RRSYNC, "-no-lock", tree]
    sys.stdout.flush()
    os.execve(RRSYNC, argv, env)
    return 1  # pragma: no cover - execve does not return
