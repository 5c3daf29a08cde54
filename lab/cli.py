"""``lab``: build, break and tear down the MultiAll lab from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .core import Lab, LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab", description="MultiAll lab: servers from network namespaces."
    )
    parser.add_argument(
        "--state-dir", help="state directory (default $MULTIALL_LAB_DIR or /run/multiall-lab)"
    )
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    up = sub.add_parser("up", help="start N nodes, or the nodes of a pools file")
    up.add_argument("count", nargs="?", type=int, help="number of nodes (n1..nN)")
    up.add_argument("--pools", help="pools.yml whose nodes (name, address) to build")
    up.add_argument("--force", action="store_true", help="tear down a running lab first")
    sub.add_parser("down", help="remove every namespace, mount, link and process of the lab")
    st = sub.add_parser("status", help="nodes, addresses, running, sshd")
    st.add_argument("--json", action="store_true")
    ex = sub.add_parser("exec", help="run a command inside a node: lab exec NODE -- CMD...")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    for name, text in (
        ("kill", "kill every process of a node, link down"),
        ("revive", "boot a killed node again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("node")
    part = sub.add_parser(
        "partition", help="lab partition n1 n2,n3: groups that cannot reach each other"
    )
    part.add_argument("groups", nargs="+", help="comma-separated node groups")
    sub.add_parser("heal", help="undo partitions")
    loss = sub.add_parser("loss", help="random packet loss on a node's link (0 clears)")
    loss.add_argument("node")
    loss.add_argument("percent", type=float)
    svc = sub.add_parser(
        "service", help="lab service NODE start|stop|status|restart NAME [-- CMD...]"
    )
    svc.add_argument("node")
    svc.add_argument("action", choices=("start", "stop", "status", "restart", "log"))
    svc.add_argument("name", nargs="?")
    svc.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lab = Lab(args.state_dir)
    try:
        return run(lab, args)
    except LabError as exc:
        print(f"lab {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _rest(argv: list[str]) -> list[str]:
    return argv[1:] if argv and argv[0] == "--" else argv


def run(lab: Lab, args: argparse.Namespace) -> int:
    if args.cmd == "up":
        if not args.count and not args.pools:
            raise LabError("give a node count (lab up 3) or --pools FILE")
        start = time.monotonic()
        nodes = lab.up(n=args.count, pools_file=args.pools, force=args.force)
        print(f"lab up: {len(nodes)} nodes in {time.monotonic() - start:.1f} s")
        for name, address in nodes.items():
            print(f"  {name:10} {address}")
        print(f"inventory: {lab.inventory_path}  (static: {lab.static_inventory_path})")
        return 0
    if args.cmd == "down":
        lab.down()
        print("lab down: nothing left")
        return 0
    if args.cmd == "status":
        status = lab.status()
        if args.json:
            print(json.dumps(status, indent=2))
        elif not status["nodes"]:
            print("lab is down")
        else:
            for name, info in status["nodes"].items():
                state = "running" if info["running"] else "KILLED"
                sshd = "sshd up" if info["sshd"] else "sshd down"
                loss = f"  loss {info['loss']}%" if info["loss"] else ""
                print(f"{name:10} {info['address']:15} {state:8} {sshd}{loss}")
            if status["partition"]:
                print("partition: " + " | ".join(",".join(g) for g in status["partition"]))
        return 0
    if args.cmd == "exec":
        argv = _rest(args.argv)
        if not argv:
            raise LabError("nothing to run: lab exec NODE -- CMD...")
        proc = lab.exec(args.node, argv, check=False, timeout=3600)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    if args.cmd == "kill":
        lab.kill(args.node)
        return 0
    if args.cmd == "revive":
        lab.revive(args.node)
        return 0
    if args.cmd == "partition":
        lab.partition(*[g.split(",") for g in args.groups])
        return 0
    if args.cmd == "heal":
        lab.heal()
        return 0
    if args.cmd == "loss":
        lab.loss(args.node, args.percent)
        return 0
    if args.cmd == "service":
        return service(lab, args)
    return 2


def service(lab: Lab, args: argparse.Namespace) -> int:
    if args.action != "status" and not args.name:
        raise LabError(f"lab service {args.node} {args.action} needs a service name")
    if args.action == "start":
        argv = _rest(args.argv)
        if not argv:
            raise LabError("lab service NODE start NAME -- CMD...")
        print(json.dumps(lab.service_start(args.node, args.name, argv)))
    elif args.action == "stop":
        lab.service_stop(args.node, args.name)
    elif args.action == "restart":
        current = lab.service_status(args.node, args.name)
        lab.service_stop(args.node, args.name)
        print(
            json.dumps(
                lab.service_start(args.node, args.name, current["argv"], restart=current["restart"])
            )
        )
    elif args.action == "log":
        sys.stdout.write(lab.service_log(args.node, args.name))
    else:
        print(json.dumps(lab.service_status(args.node, args.name), indent=2))
    return 0
