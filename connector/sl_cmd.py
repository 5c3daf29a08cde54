"""``multiall sl drift [POOL]`` / ``multiall sl facts [NODE]``: SL-SA from any pool member.

The local connector answers for the whole pool from the facts every member
publishes (see ``sl_agent.py``): no SSH to any member. Exit status of
``drift``: 0 in sync, 1 drift (or a member that could not be asked, or pools
that disagree on a package of a node), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import control_request

from .cmdline import guard, socket_path

if TYPE_CHECKING:
    from rich.table import Table


def add_sl_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``multiall sl drift`` and ``multiall sl facts``."""
    sl = sub.add_parser("sl", help="SL-SA: packages, services and libraries across a pool")
    sl_sub = sl.add_subparsers(dest="sl_command", metavar="ACTION")
    sl_sub.required = True
    drift = sl_sub.add_parser(
        "drift",
        parents=[common],
        help="matrix of expected vs installed per member; exit 1 on drift",
    )
    drift.add_argument("pool", nargs="?", help="one pool (default: every pool of this node)")
    drift.add_argument(
        "--all", action="store_true", help="show rows in sync too (default: only drifting rows)"
    )
    drift.add_argument(
        "--fresh",
        action="store_true",
        help="ask every member again instead of using facts cached by their digest",
    )
    drift.set_defaults(func=cmd_drift)
    facts = sl_sub.add_parser("facts", parents=[common], help="one node's collected facts")
    facts.add_argument("node", nargs="?", help="another node (asked through a Serf query)")
    facts.set_defaults(func=cmd_facts)


def cell_text(cell: dict[str, Any] | None) -> tuple[str, bool]:
    """A matrix cell for people, and whether it is a difference."""
    if cell is None:
        return "?", True
    have = cell.get("installed") or "missing"
    if cell.get("held"):
        have += " (held)"
    mark = " (stale)" if cell.get("stale") else ""
    if cell.get("ok"):
        return (have if cell.get("installed") else "-") + mark, False
    return f"{have} ≠ {cell.get('expected')}{mark}", True


def render(report: dict[str, Any], show_all: bool = False) -> Table:
    """The drift matrix as a rich table: rows items, columns nodes, differences in red."""
    from rich.table import Table  # only for people: --json (scripts) starts faster without it

    table = Table(title=f"SL drift: {', '.join(report['pools'])} (asked {report['observer']})")
    table.add_column("kind")
    table.add_column("name")
    for node in report["nodes"]:
        mark = " (?)" if node in report["unreachable"] else ""
        mark = " (stale)" if node in report.get("stale", {}) else mark
        table.add_column(f"{node}{mark}")
    for row in report["rows"]:
        cells = [cell_text(row["cells"].get(n)) for n in report["nodes"]]
        if not show_all and not any(bad for _text, bad in cells):
            continue
        table.add_row(
            row["kind"],
            row["name"],
            *(f"[bold red]{text}[/]" if bad else f"[green]{text}[/]" for text, bad in cells),
        )
    return table


@guard
def cmd_drift(args: argparse.Namespace) -> int:
    """Print the pool's drift matrix (or JSON); exit 1 on any drift."""
    reply = control_request(
        socket_path(args),
        {"op": "sl", "action": "drift", "pool": args.pool, "fresh": args.fresh},
        timeout=60,
    )
    reply.pop("ok", None)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 1 if reply["drift"] else 0
    from rich.console import Console

    console = Console(highlight=False, width=max(100, 30 + 24 * len(reply["nodes"])))
    console.print(render(reply, args.all))
    for node, error in reply["unreachable"].items():
        console.print(f"[bold red]{node}: not asked: {error}[/]")
    for node, why in reply.get("stale", {}).items():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(why["at"] or 0))
        console.print(f"[bold red]{node}: stale, facts from {when} shown: {why['error']}[/]")
    for conflict in reply["conflicts"]:
        console.print(f"[bold red]conflict: {conflict['message']}[/]")
    counts = ", ".join(f"{n} {c}" for n, c in reply["drifted"].items())
    verdict = "DRIFT" if reply["drift"] else "in sync"
    console.print(f"{verdict}: {len(reply['rows'])} items checked; differences per node: {counts}")
    return 1 if reply["drift"] else 0


@guard
def cmd_facts(args: argparse.Namespace) -> int:
    """Print one node's facts: counts, then held packages, services and the digest."""
    reply = control_request(
        socket_path(args), {"op": "sl", "action": "facts", "node": args.node}, timeout=30
    )
    facts = reply["facts"]
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    held = sorted(n for n, (_v, h) in facts["packages"].items() if h)
    print(
        f"node {facts['node']}: {len(facts['packages'])} packages ({len(held)} held), "
        f"{len(facts['services'])} services, {len(facts['libraries'])} libraries; "
        f"digest {facts['digest']}"
    )
    if held:
        print("held: " + ", ".join(held))
    for name, (state, enabled) in sorted(facts["services"].items()):
        print(f"  service {name}: {state}" + (" enabled" if enabled else ""))
    return 0
