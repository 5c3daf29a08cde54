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
import os
import sys
from typing import Any, BinaryIO

from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    ChangelogError,
    SchemaMismatch,
    decode_batch,
    open_db,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError, load

from .config import DEFAULT_PATH, ConfigError, load_config
from .db_model import db_pools, node_databases
from .db_wire import WireError, read_request, reply_line

USAGE = "usage: multiall-db session DB ORIGIN"
# How many conflicts one reply names in full (the count is always exact).
CONFLICTS_SHOWN = 20


class Refused(Exception):
    """The peer asked for something its pool key does not allow."""


def _context(pool: str, db: str, origin: str, config_path: str) -> tuple[str, dict, set[str]]:
    """(this node, DB's spec, DB's declared tables) after checking POOL may sync DB from ORIGIN."""
    cfg = load_config(config_path)
    model = load(cfg.pools_file)
    node = cfg.node
    if pool not in model.node_pools(node):
        raise Refused(f"node {node} is not a member of pool {pool!r}")
    if db not in node_databases(model, node) or pool not in db_pools(model, node, db):
        raise Refused(f"pool {pool!r} declares no database {db!r} on node {node}")
    if origin == node or origin not in model.members(pool):
        raise Refused(f"origin {origin!r} is not another member of pool {pool!r}")
    spec = node_databases(model, node)[db]
    return node, spec, set(spec.get("tables") or [])


def _apply(handle: Any, origin: str, payload: bytes, tables: set[str]) -> dict[str, Any]:
    changes = decode_batch(payload, tables)
    strangers = sorted({c.origin for c in changes if c.origin != origin})
    if strangers:
        raise Refused(
            f"batch from {origin} carries changes of other origins: {', '.join(strangers)}"
        )
    result = handle.apply_batch(origin, changes, tables)
    conflicts = list(getattr(result, "conflicts", None) or [])
    return {
        "ok": True,
        "watermark": handle.watermark(origin),
        "applied": int(getattr(result, "applied", len(changes)) or 0),
        "skipped": int(getattr(result, "skipped", 0) or 0),
        "conflict_count": len(conflicts),
        "conflicts": [_plain(c) for c in conflicts[:CONFLICTS_SHOWN]],
    }


def _plain(value: Any) -> Any:
    """A conflict record as JSON-friendly data (a dict, dataclass or tuple)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return value


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
    pool: str,
    db: str,
    origin: str,
    stdin: BinaryIO,
    stdout: BinaryIO,
    config_path: str = DEFAULT_PATH,
) -> int:
    """Answer one peer's requests for DB until it hangs up; 0 on a clean end."""
    try:
        node, spec, tables = _context(pool, db, origin, config_path)
    except (Refused, PoolModelError, ConfigError, OSError) as exc:
        stdout.write(reply_line({"ok": False, "kind": "refused", "error": str(exc)}))
        stdout.flush()
        print(f"multiall-db: refused: {exc}", file=sys.stderr)
        return 1
    with open_db(db, spec, node) as handle:
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
                    "table": getattr(exc, "table", None),
                    "error": f"{node}: {exc}",
                }
            except Refused as exc:
                reply = {"ok": False, "kind": "refused", "error": f"{node}: {exc}"}
            except (ChangelogError, ValueError, TypeError) as exc:
                reply = {"ok": False, "kind": "refused", "error": f"{node}: {exc}"}
            stdout.write(reply_line(reply))
            stdout.flush()


def serve(pool: str, argv: list[str]) -> int:
    """Entry point for connector/peer_receive.py: ARGV is the peer's command line."""
    words = list(argv)
    if words and words[0] == "multiall-db":
        words = words[1:]
    if len(words) != 3 or words[0] != "session":
        print(f"multiall-db: refused: {' '.join(argv)!r}; {USAGE}", file=sys.stderr)
        return 1
    _cmd, db, origin = words
    config = os.environ.get("MULTIALL_CONFIG", DEFAULT_PATH)
    return session(pool, db, origin, sys.stdin.buffer, sys.stdout.buffer, config)


def main(argv: list[str] | None = None) -> int:
    """``python -m connector.db_receive --pool P [--config F] session DB ORIGIN``.

    The same receiver without SSH in front, for tests and local transports.
    """
    parser = argparse.ArgumentParser(prog="multiall-db")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--config", default=DEFAULT_PATH)
    parser.add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    os.environ["MULTIALL_CONFIG"] = args.config
    return serve(args.pool, args.words)


if __name__ == "__main__":
    sys.exit(main())
