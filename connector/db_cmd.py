"""``multiall db status|sync|verify|conflicts``: DB-SA on this node, through the connector."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import control_request

from .cmdline import guard, socket_path


def add_db_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``multiall db`` and its sub-commands."""
    db = sub.add_parser("db", help="pool databases (DB-SA): backlog, sync, verify, conflicts")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION")
    actions.required = True
    for name, func, text in (
        (
            "status",
            cmd_status,
            "per db and table: backlog per peer, lag, last applied, oldest unacked",
        ),
        ("sync", cmd_sync, "ship now to every alive peer and wait for the acks"),
        (
            "verify",
            cmd_verify,
            "compare per-table checksums with every peer; exit 1 on a difference",
        ),
        ("conflicts", cmd_conflicts, "overwritten versions kept by last-writer-wins"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("db", nargs="?", help="one database (default: all of this node)")
        action.set_defaults(func=func)
        if name == "sync":
            action.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
        if name == "conflicts":
            action.add_argument("--limit", type=int, default=100)


def _ago(ts: float | None) -> str:
    return "-" if not ts else f"{max(time.time() - ts, 0):.1f}s ago"


@guard
def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0, or 1 when a database or a peer has an error (scripts can test it)."""
    reply = control_request(socket_path(args), {"op": "db_status", "db": args.db})
    bad = any(
        d.get("error") or any(p.get("error") for p in d.get("peers", {}).values())
        for d in reply["databases"].values()
    )
    if args.json:
        print(json.dumps(reply, indent=2))
        return 1 if bad else 0
    if not reply["databases"]:
        print(f"node {reply['node']}: none of its pools declares a database")
    for name, info in reply["databases"].items():
        policy = info["policy"]
        mode = policy["mode"] + (f" {policy['interval']}s" if policy["mode"] == "interval" else "")
        print(
            f"db {name} ({info['engine']}, {mode}) pools {', '.join(info['pools'])}:"
            f" local seq {info.get('local_seq', '-')}, pruned up to {info.get('pruned_upto', '-')}"
        )
        if info.get("error"):
            print(f"  ERROR: {info['error']}")
        print(f"  {'peer':12} {'state':11} {'acked':>9} {'backlog':>9} {'lag':>9}  last ship")
        for peer, p in info.get("peers", {}).items():
            print(
                f"  {peer:12} {p['state']:11} {p['acked']:>9} {p.get('backlog', '-'):>9}"
                f" {p.get('lag_s', 0):>8}s  {_ago(p.get('last_ship'))}"
            )
            if p.get("oldest_unacked"):
                old = p["oldest_unacked"]
                print(f"    oldest unacked: seq {old['seq']} ({old['table']}, hlc {old['hlc']})")
            if p.get("error"):
                print(f"    error: {p['error']}")
        for table, t in info.get("tables", {}).items():
            backlog = ", ".join(f"{p} {n}" for p, n in t.get("backlog", {}).items()) or "-"
            print(f"  table {table}: backlog {backlog}; last applied {_ago(t.get('last_applied'))}")
            for peer, error in (t.get("blocked") or {}).items():
                print(f"    BLOCKED towards {peer}: {error}")
    return 1 if bad else 0


@guard
def cmd_sync(args: argparse.Namespace) -> int:
    """Exit 0 once every alive peer acknowledged everything, 1 otherwise."""
    reply = control_request(
        socket_path(args),
        {"op": "db_sync", "db": args.db, "timeout": args.timeout},
        timeout=args.timeout + 10,
    )
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0 if reply["complete"] else 1
    for name, peers in reply["databases"].items():
        for peer, p in peers.items():
            if p["done"]:
                what = f"in sync (acked {p['acked']})"
            elif p["state"] != "alive":
                what = f"{p['state']}: backlog kept ({p['acked']} of {p['target']} acked)"
            else:
                what = f"NOT in sync: acked {p['acked']} of {p['target']}"
            print(f"db {name} -> {peer}: {what}" + (f"; error: {p['error']}" if p["error"] else ""))
    return 0 if reply["complete"] else 1


@guard
def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every table is identical on every peer, 1 otherwise."""
    reply = control_request(socket_path(args), {"op": "db_verify", "db": args.db}, timeout=150)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0 if reply["identical"] else 1
    for name, info in reply["databases"].items():
        for peer, result in info["peers"].items():
            if result.get("error"):
                print(f"db {name} vs {peer}: cannot compare: {result['error']}")
                continue
            for table, t in result["tables"].items():
                if t["same"]:
                    print(f"db {name} vs {peer}: {table} identical ({t['rows']} rows)")
                    continue
                print(f"db {name} vs {peer}: {table} DIFFERS ({t.get('count', '?')} rows)")
                for key, label in (("only_here", "only here"), ("only_there", "only there")):
                    for pk in t.get(key, []):
                        print(f"    {label}: {pk}")
                for pk in t.get("differ", []):
                    print(f"    differs: {pk}")
    return 0 if reply["identical"] else 1


@guard
def cmd_conflicts(args: argparse.Namespace) -> int:
    """List the losing versions last-writer-wins kept (newest last)."""
    reply = control_request(
        socket_path(args), {"op": "db_conflicts", "db": args.db, "limit": args.limit}
    )
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    for name, rows in reply["databases"].items():
        print(f"db {name}: {len(rows)} conflict(s)")
        for row in rows:
            print("  " + json.dumps(row, default=str, sort_keys=True))
    return 0
