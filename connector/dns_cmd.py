"""``multiall dns [POOL]``: what DNS serves vs what the topology wants."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import control_request

from .cmdline import guard, socket_path


def add_dns_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``multiall dns``."""
    dns = sub.add_parser(
        "dns", parents=[common], help="pool DNS: served records vs what the topology wants"
    )
    dns.add_argument("pool", nargs="?", help="one pool (default: every DNS pool of this node)")
    dns.set_defaults(func=cmd_dns)


@guard
def cmd_dns(args: argparse.Namespace) -> int:
    """Exit 0 when every pool is served as wanted, 1 otherwise (scripts can test it)."""
    reply = control_request(socket_path(args), {"op": "dns", "pool": args.pool})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0 if all(p.get("in_sync") for p in reply["pools"].values()) else 1
    if not reply["pools"]:
        print(f"node {reply['node']}: none of its pools has a dns section")
        return 0
    for pool, info in reply["pools"].items():
        members = info["members"]
        sync = "in sync" if info.get("in_sync") else "DIFFERS"
        print(
            f"pool {pool}: zone {info['zone']} on {info['server'] or '-'} ({info['mode']}, ttl {info['ttl']}s) - {sync}"
        )
        print(
            f"  leader {info['leader'] or '-'}, quorum {'yes' if info['quorum'] else 'NO'}; "
            f"this node {'writes' if info['acting'] else 'does not write'}: {info['why']}"
        )
        print(f"  wanted members: {', '.join(members['members']) or '-'}")
        for name, why in members["excluded"].items():
            print(f"    out: {name} ({why})")
        for name, left in members["held_down"].items():
            print(f"    hold-down: {name} ({left:.1f} s left)")
        for name, why in members.get("settling", {}).items():
            print(f"    kept while the view settles: {name} ({why})")
        if members["kept_last"]:
            print(
                f"  WARNING: no member is fit; kept the least bad: {', '.join(members['kept_last'])}"
            )
        if info.get("served_error"):
            print(f"  served: cannot ask the server: {info['served_error']}")
        else:
            print("  served:")
            for line in info["served"]:
                print(f"    {line}")
            for line in info["diff"]:
                print(f"  {line}")
        if info.get("error"):
            print(f"  last error: {info['error']}")
        if info.get("last_change"):
            change = info["last_change"]
            print(f"  last change: {', '.join(change['changes'])} ({change['update_ms']} ms)")
    return 0 if all(p.get("in_sync") for p in reply["pools"].values()) else 1
