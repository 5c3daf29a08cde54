"""``multiall fs status|conflicts``: FS-SA's trees, queues and conflict copies on this node."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import control_request

from .cmdline import guard, socket_path


def add_fs_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``multiall fs status`` and ``multiall fs conflicts``."""
    fs = sub.add_parser("fs", help="file trees kept in sync across pools (FS-SA)")
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="SUBCOMMAND")
    fs_sub.required = True
    status = fs_sub.add_parser(
        "status", parents=[common], help="per tree: files, bytes, pending per peer, conflicts"
    )
    status.set_defaults(func=cmd_fs_status)
    conflicts = fs_sub.add_parser(
        "conflicts", parents=[common], help="conflict copies kept in each tree"
    )
    conflicts.set_defaults(func=cmd_fs_conflicts)


def _ago(ts: float | None) -> str:
    return "never" if not ts else f"{time.time() - ts:.1f} s ago"


@guard
def cmd_fs_status(args: argparse.Namespace) -> int:
    """Exit 0 when nothing is pending for any alive peer and no error is standing, else 1."""
    reply = control_request(socket_path(args), {"op": "fs"})
    behind = any(
        (p["pending"] and p["alive"]) or p["error"]
        for t in reply["trees"].values()
        for p in t["peers"].values()
    )
    if args.json:
        print(json.dumps(reply, indent=2))
        return 1 if behind or reply.get("error") else 0
    if not reply["trees"]:
        print(f"node {reply['node']}: no live file tree")
        return 0
    if reply.get("error"):
        print(f"ERROR: {reply['error']}")
    for tree, info in reply["trees"].items():
        print(
            f"{tree} (pool {info['pool']}): {info['files']} files, {info['bytes']} bytes,"
            f" {info['tombstones']} tombstones, {info['conflicts']} conflict copies"
        )
        if info.get("skipped_count"):
            shown = ", ".join(info["skipped"])
            print(f"  not synced (devices, fifos, sockets): {info['skipped_count']}: {shown}")
        for peer, p in info["peers"].items():
            state = "alive" if p["alive"] else "away"
            line = f"  {peer:<12} {state:<6} pending {p['pending']:<7} last sync {_ago(p['last_sync'])}"
            print(line + (f"  error: {p['error']}" if p["error"] else ""))
    return 1 if behind or reply.get("error") else 0


@guard
def cmd_fs_conflicts(args: argparse.Namespace) -> int:
    """List conflict copies; exit 0 either way (a conflict is kept, not an error)."""
    reply = control_request(socket_path(args), {"op": "fs", "what": "conflicts"})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    rows = [(t, c) for t, cs in reply["trees"].items() for c in cs]
    if not rows:
        print(f"node {reply['node']}: no conflict copies")
    for tree, c in rows:
        print(f"{tree}/{c['path']}: losing version from {c['loser']} kept as {c['copy']}")
    return 0
