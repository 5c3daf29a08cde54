"""``multiall sbm [NODE]``: Baseline Rules of this node (or another, through a Serf query)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import control_request

from .cmdline import guard, socket_path


def add_sbm_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``multiall sbm``."""
    sbm = sub.add_parser(
        "sbm", parents=[common], help="this node's Baseline Rules: status, value, threshold, since"
    )
    sbm.add_argument("node", nargs="?", help="another node: asked through a Serf query")
    sbm.set_defaults(func=cmd_sbm)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def perf_line(label: str, item: dict[str, Any]) -> str:
    """One perfdata item for people: ``/ = 23396876288 B  warn 216442024755 ... max 2705...``."""
    value = "U (not measured)" if item.get("value") is None else str(item["value"])
    unit = f" {item['unit']}" if item.get("unit") else ""
    bounds = "  ".join(
        f"{key} {item[key]}" for key in ("warn", "crit", "min", "max") if item.get(key) is not None
    )
    return f"{label} = {value}{unit}" + (f"  {bounds}" if bounds else "")


@guard
def cmd_sbm(args: argparse.Namespace) -> int:
    """Print the node's SBM status, one line per rule and one per perfdata item."""
    reply = control_request(socket_path(args), {"op": "sbm", "node": args.node})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"node {reply['node']}: SBM status {reply['status']}")
    print(f"  {'rule':16} {'status':9} {'value':>10} {'warn':>6} {'crit':>6}  {'since':8}  message")
    for rule in reply["rules"]:
        since = time.strftime("%H:%M:%S", time.localtime(rule.get("since", 0)))
        print(
            f"  {rule['rule']:16} {rule['reported_name']:9} {_text(rule.get('value')):>10}"
            f" {_text(rule.get('warn')):>6} {_text(rule.get('crit')):>6}  {since:8}"
            f"  {rule.get('message', '')}"
        )
        for label, item in (rule.get("perfdata") or {}).items():
            print(f"  {'':16} perf {perf_line(label, item)}")
    if reply.get("truncated"):
        print("  (answer shortened to fit a Serf query: run `multiall sbm` on the node for all)")
    return 0
