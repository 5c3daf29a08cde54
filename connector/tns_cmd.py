"""``multiall daemon|status|events|runs|maintenance``: talk to the local connector."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    DEFAULT_SOCKET,
    ControlError,
    control_request,
    exchange,
)

__all__ = ["ControlError", "exchange", "request"]


def _socket_path(args: argparse.Namespace) -> str:
    return args.socket or os.environ.get("MULTIALL_SOCKET") or DEFAULT_SOCKET


def request(path: str, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """One request on the control socket (the shared client in module_utils)."""
    return control_request(path, req, timeout)


def add_tns_parsers(sub: Any) -> argparse.ArgumentParser:
    """Register the daemon and its client commands; returns the shared --socket/--json options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket", help=f"control socket (default $MULTIALL_SOCKET or {DEFAULT_SOCKET})"
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    daemon = sub.add_parser("daemon", help="run TakeConnector in the foreground")
    daemon.add_argument("--config", default="/etc/multiall/connector.yml")
    daemon.set_defaults(func=cmd_daemon)

    status = sub.add_parser(
        "status", parents=[common], help="pool topology: members, state, SBM, RTT, leader, quorum"
    )
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", parents=[common], help="TNS events (journaled)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--limit", type=int, default=50)
    events.set_defaults(func=cmd_events)

    runs = sub.add_parser("runs", parents=[common], help="watcher playbook runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=cmd_runs)

    sbm = sub.add_parser(
        "sbm", parents=[common], help="this node's Baseline Rules: status, value, threshold, since"
    )
    sbm.add_argument("node", nargs="?", help="another node: asked through a Serf query")
    sbm.set_defaults(func=cmd_sbm)

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
    return common


def _guard(func):
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ControlError as exc:
            print(f"multiall {args.command}: {exc}", file=sys.stderr)
            return 1

    return wrapper


def cmd_daemon(args: argparse.Namespace) -> int:
    from .daemon import main

    return main(args.config)


@_guard
def cmd_status(args: argparse.Namespace) -> int:
    reply = request(_socket_path(args), {"op": "status"})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"node {reply['node']} ({reply['address']}), connector {reply['version']}")
    for pool, topo in reply["pools"].items():
        quorum = "yes" if topo["quorum"] else "NO"
        print(
            f"\npool {pool}: leader {topo['leader'] or '-'}, quorum {quorum} ({topo['declared']} declared)"
        )
        print(f"  {'member':12} {'state':12} {'sbm':5} {'rtt ms':>8}  note")
        for name, member in topo["members"].items():
            rtt = reply["probe_rtt_ms"].get(name, member["rtt_ms"])
            rtt_text = f"{rtt:8.2f}" if isinstance(rtt, (int, float)) else f"{'-':>8}"
            note = member["reason"] or (
                f"{member['down_votes']}/{member['observers']} peers cannot reach it"
                if member["down_votes"]
                else ""
            )
            mark = " *" if name == reply["node"] else ""
            print(
                f"  {name + mark:12} {member['state']:12} {member['sbm'] or '-':5} {rtt_text}  {note}"
            )
    return 0


def _print_event(event: dict[str, Any]) -> None:
    when = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
    extra = " ".join(
        f"{k}={v}" for k, v in event.items() if k not in ("ts", "type", "pool", "id", "observer")
    )
    print(f"{when} {event['pool']:10} {event['type']:18} {extra}", flush=True)


@_guard
def cmd_events(args: argparse.Namespace) -> int:
    path = _socket_path(args)
    reply = request(path, {"op": "events", "limit": args.limit})
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


@_guard
def cmd_runs(args: argparse.Namespace) -> int:
    reply = request(_socket_path(args), {"op": "runs", "limit": args.limit})
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
        print(
            f"#{run['id']:<4} {run['pool']:10} {run['playbook']:24} {run['status']:10} tries={run['attempts']} {took:>7} events={kinds} changed={','.join(run['changed_hosts']) or '-'}"
        )
    return 0


@_guard
def cmd_maintenance(args: argparse.Namespace) -> int:
    path = _socket_path(args)
    if args.node:
        me = request(path, {"op": "status"})["node"]
        if args.node != me:
            raise ControlError(
                f"this is node {me!r}; run `multiall maintenance {args.action}` on {args.node!r} itself (or use the tns_maintenance module)"
            )
    reply = request(
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


@_guard
def cmd_sbm(args: argparse.Namespace) -> int:
    reply = request(_socket_path(args), {"op": "sbm", "node": args.node})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"node {reply['node']}: SBM status {reply['status']}")
    print(f"  {'rule':16} {'status':9} {'value':>10} {'warn':>6} {'crit':>6}  {'since':8}  message")
    for rule in reply["rules"]:
        since = time.strftime("%H:%M:%S", time.localtime(rule.get("since", 0)))
        value = rule.get("value")
        value_text = (
            f"{value:.2f}" if isinstance(value, float) else str(value if value is not None else "-")
        )
        warn = "-" if rule.get("warn") is None else rule["warn"]
        crit = "-" if rule.get("crit") is None else rule["crit"]
        print(
            f"  {rule['rule']:16} {rule['reported_name']:9} {value_text:>10} {warn!s:>6} {crit!s:>6}  {since:8}  {rule.get('message', '')}"
        )
    return 0
