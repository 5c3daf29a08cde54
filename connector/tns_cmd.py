"""``multiall status|events|runs|maintenance``: TNS as the local connector sees it."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)

from .cmdline import guard, socket_path


def add_tns_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the TNS client commands (``common``: the shared --socket/--json options)."""
    status = sub.add_parser(
        "status", parents=[common], help="pool topology: members, state, SBM, RTT, leader, quorum"
    )
    status.add_argument(
        "--brief",
        action="store_true",
        help="per pool, how many members are in each state (cheap: for large pools and scripts)",
    )
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", parents=[common], help="TNS events (journaled)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--limit", type=int, default=50)
    events.set_defaults(func=cmd_events)

    runs = sub.add_parser("runs", parents=[common], help="watcher playbook runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=cmd_runs)

    maint = sub.add_parser(
        "maintenance", parents=[common], help="enter or leave planned maintenance"
    )
    maint.add_argument("action", choices=("enter", "exit"))
    maint.add_argument("node", nargs="?", help="this node (maintenance is set by the node itself)")
    maint.add_argument("--reason", default="", help="shown to operators and in events")
    maint.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for every peer to see it"
    )
    maint.set_defaults(func=cmd_maintenance)


@guard
def cmd_status(args: argparse.Namespace) -> int:
    """Per pool: members, state, SBM, RTT, leader and quorum."""
    brief = bool(getattr(args, "brief", False))
    reply = control_request(socket_path(args), {"op": "status", "brief": brief})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    if brief:
        return _print_brief(reply)
    print(f"node {reply['node']} ({reply['address']}), connector {reply['version']}")
    _print_faults(reply)
    for peer, skew in (reply.get("probe_clock_skew") or {}).items():
        # Refused probes look like a dead peer: say why, or a partition looks like a failure.
        side = "ahead of" if skew > 0 else "behind"
        print(
            f"WARNING: probes from {peer} are refused: its clock is {abs(skew):.1f} s {side}"
            " this node's (limit 30 s); fix NTP on both nodes"
        )
    for pool, topo in reply["pools"].items():
        quorum = "yes" if topo["quorum"] else "NO"
        print(
            f"\npool {pool}: leader {topo['leader'] or '-'}, quorum {quorum}"
            f" ({topo['declared']} declared)"
        )
        print(f"  {'member':12} {'state':12} {'sbm':5} {'rtt ms':>8}  note")
        serf = reply.get("serf")
        for name, member in topo["members"].items():
            rtt = reply["probe_rtt_ms"].get(name, member["rtt_ms"])
            rtt_text = f"{rtt:8.2f}" if isinstance(rtt, (int, float)) else f"{'-':>8}"
            note = member["reason"] or (
                f"{member['down_votes']}/{member['observers']} peers cannot reach it"
                if member["down_votes"]
                else ""
            )
            if serf is not None and name not in serf and member["state"] != "left":
                # Counted by its probes alone (tns.with_probed): say so, or an admin
                # comparing with `serf members` sees a contradiction.
                note = f"{note}; " if note else ""
                note += "judged by probes alone (not in Serf yet)"
            mark = " *" if name == reply["node"] else ""
            print(
                f"  {name + mark:12} {member['state']:12} {member['sbm'] or '-':5}"
                f" {rtt_text}  {note}"
            )
    return 0


def _print_faults(reply: dict[str, Any]) -> None:
    """What the daemon is living with (journal, Serf RPC): first, before the pools."""
    for part, fault in reply.get("faults", {}).items():
        text = fault["error"] if isinstance(fault, dict) else fault
        since = (
            time.strftime(" since %H:%M:%S", time.localtime(fault["since"]))
            if isinstance(fault, dict) and fault.get("since")
            else ""
        )
        print(f"FAULT {part}{since}: {text}")


def _print_brief(reply: dict[str, Any]) -> int:
    """One line per pool: leader, quorum, and how many members are in each state."""
    print(f"node {reply['node']}, connector {reply['version']}")
    _print_faults(reply)
    for pool, topo in reply["pools"].items():
        states = ", ".join(f"{n} {s}" for s, n in sorted(topo["states"].items()))
        quorum = "yes" if topo["quorum"] else "NO"
        others = f" (not alive: {' '.join(topo['not_alive'])})" if topo["not_alive"] else ""
        print(
            f"pool {pool}: {topo['declared']} declared: {states}; leader"
            f" {topo['leader'] or '-'}, quorum {quorum}{others}"
        )
    return 0


def _print_event(event: dict[str, Any]) -> None:
    when = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
    extra = " ".join(
        f"{k}={v}" for k, v in event.items() if k not in ("ts", "type", "pool", "id", "observer")
    )
    print(f"{when} {event['pool']:10} {event['type']:18} {extra}", flush=True)


@guard
def cmd_events(args: argparse.Namespace) -> int:
    """The journaled events, then (``--follow``) every new one as it happens."""
    path = socket_path(args)
    reply = control_request(path, {"op": "events", "limit": args.limit})
    for event in reply["events"]:
        print(json.dumps(event)) if args.json else _print_event(event)
    if not args.follow:
        return 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(b'{"op": "follow"}\n')
            for line in sock.makefile():
                event = json.loads(line)
                print(json.dumps(event), flush=True) if args.json else _print_event(event)
    except KeyboardInterrupt:
        return 0
    return 0


@guard
def cmd_runs(args: argparse.Namespace) -> int:
    """The watcher's playbook runs, newest first."""
    reply = control_request(socket_path(args), {"op": "runs", "limit": args.limit})
    if args.json:
        print(json.dumps(reply["runs"], indent=2))
        return 0
    for run in reply["runs"]:
        took = (
            f"{run['ended'] - run['started']:.1f}s"
            if run.get("ended") and run.get("started")
            else "-"
        )
        kinds = ",".join(sorted({e["type"] for e in run["events"]}))
        changed = ",".join(run["changed_hosts"]) or "-"
        print(
            f"#{run['id']:<4} {run['pool']:10} {run['playbook']:24} {run['status']:10}"
            f" tries={run['attempts']} {took:>7} events={kinds} changed={changed}"
        )
    return 0


@guard
def cmd_maintenance(args: argparse.Namespace) -> int:
    """Enter or leave maintenance; exit 1 unless every peer saw it and DNS drained."""
    path = socket_path(args)
    if args.node:
        me = control_request(path, {"op": "status"})["node"]
        if args.node != me:
            raise ControlError(
                f"this is node {me!r}; run `multiall maintenance {args.action}` on"
                f" {args.node!r} itself (or use the tns_maintenance module)"
            )
    reply = control_request(
        path,
        {
            "op": "maintenance",
            "action": args.action,
            "reason": args.reason,
            "timeout": args.timeout,
        },
        timeout=args.timeout + 10,
    )
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply["ok"]:
        dns = "".join(f"; DNS {pool}: {state}" for pool, state in (reply.get("dns") or {}).items())
        print(
            f"maintenance {args.action}: every pool peer has seen it ({reply['waited_s']} s){dns}"
        )
    else:
        missing = reply.get("not_acknowledged_by") or []
        undrained = reply.get("not_drained") or []
        problems = ([f"not yet seen by {', '.join(missing)}"] if missing else []) + (
            [f"DNS still hands it out for {', '.join(undrained)}"] if undrained else []
        )
        print(f"maintenance {args.action}: set, but {'; '.join(problems)}", file=sys.stderr)
    return 0 if reply["ok"] else 1
