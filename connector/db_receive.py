"""Receiving end of DB-SA: ``multiall-db session DB ORIGIN`` behind the peer key.

A peer's agent reaches this through SSH with the pool's peer key, whose
authorized_keys line forces ``multiall peer-receive --pool P``; that
dispatcher (connector/peer_receive.py) hands the ``multiall-db`` command here.
So the pool P is proven by the key, and everything else the peer says is
checked against this node's own model before anything is touched:

- database DB must be declared by pool P for this node, and ORIGIN must be
  another member of P;
- every change of a batch must come from ORIGIN and touch only DB's declared
  tables (``decode_batch``/``apply_batch`` refuse anything else, naming it);
- a batch is applied in one transaction (``apply_batch``): all or nothing.

The session then answers requests (db_wire.py) until the peer hangs up. A
refused request gets ``{"ok": false, "error": ...}`` and changes nothing; the
session goes on, because one bad batch says nothing about the next one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    ChangelogError,
    SchemaMismatch,
    decode_batch,
    open_db,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError, load

from .db_model import db_pools, node_databases
from .db_wire import WireError, read_request, reply_line

USAGE = "usage: multiall-db session DB ORIGIN"
# How many conflicts one reply names in full (the count is always exact).
CONFLICTS_SHOWN = 20


class Refused(Exception):
    """The peer asked for something its pool key does not allow."""


def _context(pool: str, db: str, origin: str, node: str, model: Any) -> tuple[dict, set[str]]:
    """(DB's spec, DB's declared tables) after checking POOL may sync DB from ORIGIN."""
    if pool not in model.node_pools(node):
        raise Refused(f"node {node} is not a member of pool {pool!r}")
    if db not in node_databases(model, node) or pool not in db_pools(model, node, db):
        raise Refused(f"pool {pool!r} declares no database {db!r} on node {node}")
    if origin == node or origin not in model.members(pool):
        raise Refused(f"origin {origin!r} is not another member of pool {pool!r}")
    spec = node_databases(model, node)[db]
    return spec, set(spec.get("tables") or [])


def _apply(handle: Any, origin: str, payload: bytes, tables: set[str]) -> dict[str, Any]:
    changes = decode_batch(payload, tables)
    result = handle.apply_batch(origin, changes, tables)
    # The losing versions are kept here (multiall_conflicts); the origin turns the
    # newest few into db_conflict events, the count is exact.
    shown = handle.conflicts(min(result.conflicts, CONFLICTS_SHOWN)) if result.conflicts else []
    return {
        "ok": True,
        **result.as_dict(),
        "watermark": handle.watermark(origin),
        "conflict_count": result.conflicts,
        "conflicts": shown,
    }


def _answer(handle: Any, origin: str, tables: set[str], head: dict, payload: bytes) -> dict:
    op = head["op"]
    if op == "ping":
        return {"ok": True}
    if op == "watermark":
        return {"ok": True, "watermark": handle.watermark(origin)}
    if op == "apply":
        return _apply(handle, origin, payload, tables)
    wanted = [t for t in head.get("tables") or sorted(tables) if t in tables]
    if op == "checksums":
        return {"ok": True, "checksums": handle.table_checksums(wanted)}
    return {"ok": True, "schema": {t: handle.schema(t) for t in wanted}}  # op == "schema"


def session(
    pool: str, db: str, origin: str, node: str, model: Any, stdin: BinaryIO, stdout: BinaryIO
) -> int:
    """Answer one peer's requests for DB until it hangs up; 0 on a clean end."""
    try:
        spec, tables = _context(pool, db, origin, node, model)
        handle = open_db(db, spec, node)
    except (Refused, ChangelogError, OSError) as exc:
        return _refuse(stdout, str(exc))
    with handle:
        while True:
            try:
                request = read_request(stdin)
            except WireError as exc:
                # A broken stream cannot be resynchronised: say why and end.
                stdout.write(reply_line({"ok": False, "kind": "wire", "error": str(exc)}))
                stdout.flush()
                return 1
            if request is None:
                return 0
            head, payload = request
            try:
                reply = _answer(handle, origin, tables, head, payload)
            except SchemaMismatch as exc:
                reply = {
                    "ok": False,
                    "kind": "schema",
                    "table": exc.table,
                    "error": f"{node}: {exc}",
                }
            except (Refused, ChangelogError, ValueError, TypeError) as exc:
                print(f"multiall-db: {node}: refused: {exc}", file=sys.stderr)
                reply = {"ok": False, "kind": "refused", "error": f"{node}: {exc}"}
            except Exception as exc:  # an engine fault (disk full, lock): say it, keep serving
                reply = {
                    "ok": False,
                    "kind": "error",
                    "error": f"{node}: {type(exc).__name__}: {exc}",
                }
            stdout.write(reply_line(reply))
            stdout.flush()


def _refuse(stdout: BinaryIO, message: str) -> int:
    stdout.write(reply_line({"ok": False, "kind": "refused", "error": message}))
    stdout.flush()
    print(f"multiall-db: refused: {message}", file=sys.stderr)
    return 1


def serve(request: Any) -> int:
    """Handler of ``multiall-db`` for connector/peer_receive.py (a ``PeerRequest``)."""
    words = list(request.words)
    if words[:1] == ["multiall-db"]:
        words = words[1:]
    if len(words) != 3 or words[0] != "session":
        return _refuse(sys.stdout.buffer, f"{request.command!r}; {USAGE}")
    _cmd, db, origin = words
    try:
        model = request.model
    except Exception as exc:  # peer_receive's Refused: the model cannot be read
        return _refuse(sys.stdout.buffer, str(exc))
    return session(
        request.pool, db, origin, request.node, model, sys.stdin.buffer, sys.stdout.buffer
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m connector.db_receive --pool P --node N --pools-file F session DB ORIGIN``.

    The same receiver without SSH in front, for tests and local transports.
    """
    parser = argparse.ArgumentParser(prog="multiall-db")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pools-file", required=True)
    parser.add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    try:
        model = load(args.pools_file)
    except (PoolModelError, OSError) as exc:
        return _refuse(sys.stdout.buffer, str(exc))
    if args.words[:1] != ["session"] or len(args.words) != 3:
        return _refuse(sys.stdout.buffer, USAGE)
    _cmd, db, origin = args.words
    return session(args.pool, db, origin, args.node, model, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
