"""``multiall pools check`` and ``multiall pools show``: the pool model from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    DEFAULT_PATH,
    NodeView,
    PoolModel,
    PoolModelError,
    load,
)


def add_pools_parser(sub: Any) -> None:
    """Register ``multiall pools …``."""
    pools = sub.add_parser("pools", help="check the pool model, show a node's settings")
    psub = pools.add_subparsers(dest="pools_command", metavar="ACTION")
    psub.required = True
    path_help = f"pools file or directory (default: $MULTIALL_POOLS or {DEFAULT_PATH})"

    check = psub.add_parser("check", help="validate the model; exit 1 on any error or conflict")
    check.add_argument("path", nargs="?", help=path_help)
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=cmd_check)

    show = psub.add_parser("show", help="a node's merged settings, each with its source pool")
    show.add_argument("node", help="node name")
    show.add_argument("path", nargs="?", help=path_help)
    show.add_argument("--json", action="store_true", help="print the result as JSON")
    show.set_defaults(func=cmd_show)


def _load(path: str | None, as_json: bool) -> PoolModel | None:
    try:
        return load(path)
    except PoolModelError as exc:
        if as_json:
            _print_json({"ok": False, "errors": [e.as_dict() for e in exc.errors]})
        else:
            print(exc, file=sys.stderr)
        return None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_check(args: argparse.Namespace) -> int:
    """Validate everything and report every unresolved conflict of every node."""
    model = _load(args.path, args.json)
    if model is None:
        return 1
    conflicts = model.conflicts()
    summary = {
        "ok": not conflicts,
        "files": model.files,
        "nodes": len(model.nodes),
        "pools": {p: model.members(p) for p in model.pool_names()},
        "errors": [c.as_error().as_dict() for c in conflicts],
        # Valid but risky (e.g. a DNS pool too small to fail over): never change the exit code.
        "warnings": [w.as_dict() for w in model.warnings],
    }
    if args.json:
        _print_json(summary)
        return 0 if not conflicts else 1
    for warning in model.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if conflicts:
        print(f"{len(conflicts)} unresolved conflict(s) in the pool model:", file=sys.stderr)
        for conflict in conflicts:
            print(f"  {conflict.as_error()}", file=sys.stderr)
    else:
        pools = ", ".join(f"{p} ({len(m)})" for p, m in summary["pools"].items())
        print(f"OK: {len(model.nodes)} nodes, {len(model.pools)} pools: {pools or '(none)'}")
    return 0 if not conflicts else 1


def cmd_show(args: argparse.Namespace) -> int:
    """Print one node's effective settings annotated with the pool each came from."""
    model = _load(args.path, args.json)
    if model is None:
        return 1
    try:
        view = model.effective(args.node)
    except KeyError as exc:
        message = exc.args[0]
        if args.json:
            _print_json({"ok": False, "errors": [{"message": message}]})
        else:
            print(f"multiall pools show: {message}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(view.as_dict())
    else:
        print(render_view(view))
    return 1 if view.conflicts else 0


def render_view(view: NodeView) -> str:
    """YAML-like text: every leaf followed by ``# from <pools>``."""
    lines = [
        f"node: {view.name}",
        f"address: {view.address}",
    ]
    if view.ip and view.ip != view.address:
        lines.append(f"ip: {view.ip}  # what TNS uses")
    lines += [
        f"pools: [{', '.join(view.pools)}]",
        "connection:",
    ]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in view.connection.items()]
    lines.append("settings:")
    conflicted = {c.key: c for c in view.conflicts}
    _render_tree(view.settings, (), 1, view.sources, lines, set(conflicted))
    if conflicted:
        lines.append("conflicts:")
        lines += [f"  - {c.message()}" for c in view.conflicts]
    return "\n".join(lines)


def _render_tree(
    tree: dict[str, Any],
    path: tuple[Any, ...],
    depth: int,
    sources: dict[str, list[str]],
    lines: list[str],
    conflicted: set[str],
) -> None:
    from ansible_collections.takelan.multiall.plugins.module_utils._schema import render_path

    pad = "  " * depth
    for key, value in tree.items():
        here = (*path, key)
        label = json.dumps(key) if not isinstance(key, str) or ":" in key else key
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{label}:")
            _render_tree(value, here, depth + 1, sources, lines, conflicted)
            continue
        rendered = render_path(here)
        origins = sources.get(rendered)
        note = f"  # from {', '.join(origins)}" if origins else ""
        if any(key_.startswith(rendered + ".") for key_ in conflicted):
            note = "  # CONFLICT inside, see conflicts below"
        lines.append(f"{pad}{label}: {json.dumps(value)}{note}")
