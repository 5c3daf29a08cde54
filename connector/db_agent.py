"""DB-SA in TakeConnector: keeps this node's pool databases in sync with its peers.

One ``DbSync`` (db_shipper.py) per database this node holds ships its own
changes to every peer of the pools declaring it; the peers' receivers
(db_receive.py) apply them. This module is the daemon-facing part: it builds
those from the model, tells them which peers TNS sees alive, and answers the
control socket for ``multiall db status|sync|verify|conflicts``.

Transport: ``ssh_argv(pool, address)`` from module_utils/peer_transport.py
(the pool's peer key, pinned host keys, a forced command on the receiver);
``argv_for`` can be replaced for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .db_acks import AckStore
from .db_link import LinkError, PeerLink
from .db_model import db_peers, db_pools, node_databases

if TYPE_CHECKING:
    from .db_shipper import DbSync

log = logging.getLogger("multiall.db")
DIFFERING_ROWS_SHOWN = 20


def ssh_transport(model: Any, node: str) -> Callable[[str, str, str], list[str]]:
    """argv of a session to PEER for DB through POOL's peer key (the real transport)."""
    from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
        CONTROL_DIR,
        ssh_argv,
    )

    def argv_for(pool: str, peer: str, db: str) -> list[str]:
        os.makedirs(CONTROL_DIR, mode=0o700, exist_ok=True)  # ssh's ControlPath directory
        view = model.effective(peer)
        return [*ssh_argv(pool, view.ip or view.address), "multiall-db", "session", db, node]

    return argv_for


class DbAgent:
    """Every database of one node."""

    def __init__(
        self,
        node: str,
        model: Any,
        state_dir: str,
        cfg: dict[str, Any],
        topology: Callable[[], dict[str, Any]],
        publish: Callable[[dict[str, Any]], Awaitable[None]],
        argv_for: Callable[[str, str, str], list[str]] | None = None,
        metrics: bool = False,
    ) -> None:
        self.node, self.model, self.topology = node, model, topology
        self.databases = node_databases(model, node)
        self.acks: AckStore | None = None
        self.syncs: dict[str, DbSync] = {}
        if not self.databases:
            return  # no database: no ack file, no tasks
        # Imported here: a node without databases never needs a database driver.
        from .db_metrics import DbMetrics
        from .db_shipper import BATCH, POLL, DbSync

        self.acks = AckStore(os.path.join(state_dir, "db-acks.db"))
        db_metrics = DbMetrics(metrics)
        self.argv_for = argv_for or ssh_transport(model, node)
        for name, spec in sorted(self.databases.items()):
            pools = db_pools(model, node, name)
            peer_pool = {
                peer: next(p for p in pools if peer in model.members(p))
                for peer in db_peers(model, node, name)
            }
            self.syncs[name] = DbSync(
                node,
                name,
                spec,
                peer_pool,
                self.acks,
                self.argv_for,
                self.peer_state,
                publish,
                batch=int(cfg.get("batch", BATCH)),
                poll=float(cfg.get("poll", POLL)),
                metrics=db_metrics,
            )

    def peer_state(self, peer: str) -> str:
        """PEER's TNS state: alive if any shared pool sees it alive, else the worst seen."""
        states = [
            topo.members[peer].state for topo in self.topology().values() if peer in topo.members
        ]
        if "alive" in states:
            return "alive"
        return states[0] if states else "unknown"

    async def run(self) -> None:
        """Run every database's shipping until cancelled."""
        if not self.syncs:
            await asyncio.Event().wait()
        try:
            await asyncio.gather(*(s.run() for s in self.syncs.values()))
        finally:
            if self.acks:
                self.acks.close()

    def control_ops(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """The control socket's ``db_*`` requests (added to control.ControlServer.ops)."""
        return {
            "db_status": self.op_status,
            "db_sync": self.op_sync,
            "db_verify": self.op_verify,
            "db_conflicts": self.op_conflicts,
        }

    def _chosen(self, req: dict[str, Any]) -> dict[str, DbSync]:
        name = req.get("db")
        if not name:
            return self.syncs
        if name not in self.syncs:
            known = ", ".join(sorted(self.syncs)) or "(none)"
            raise ValueError(f"node {self.node} holds no database {name!r}; databases: {known}")
        return {name: self.syncs[name]}

    async def op_status(self, req: dict[str, Any]) -> dict[str, Any]:
        """``multiall db status``."""
        chosen = self._chosen(req)
        return {
            "ok": True,
            "node": self.node,
            "databases": {n: await s.status() for n, s in chosen.items()},
        }

    async def op_sync(self, req: dict[str, Any]) -> dict[str, Any]:
        """``multiall db sync [DB]``: ship now and wait for the acks."""
        timeout = float(req.get("timeout", 60))
        results = {n: await s.sync_now(timeout) for n, s in self._chosen(req).items()}
        done = all(
            p["done"] or p["state"] != "alive" for peers in results.values() for p in peers.values()
        )
        return {"ok": True, "node": self.node, "complete": done, "databases": results}

    async def op_conflicts(self, req: dict[str, Any]) -> dict[str, Any]:
        """``multiall db conflicts``: the losing versions this node kept."""
        limit = int(req.get("limit", 100))
        out = {}
        for name, sync in self._chosen(req).items():
            out[name] = await sync.db(lambda h: h.conflicts(limit))
        return {"ok": True, "node": self.node, "databases": out}

    async def op_verify(self, req: dict[str, Any]) -> dict[str, Any]:
        """``multiall db verify``: per-table checksums here and on every peer, compared."""
        out = {}
        for name, sync in self._chosen(req).items():
            mine = await sync.db(lambda h, t=sync.tables: h.table_checksums(t))
            peers: dict[str, Any] = {}
            for peer in sync.peers:
                peers[peer] = await self._verify_peer(sync, peer, mine)
            out[name] = {
                "tables": {t: {"rows": c.get("rows")} for t, c in mine.items()},
                "peers": peers,
            }
        same = all(p.get("same") for db in out.values() for p in db["peers"].values())
        return {"ok": True, "node": self.node, "identical": same, "databases": out}

    async def _verify_peer(self, sync: DbSync, peer: str, mine: dict[str, Any]) -> dict[str, Any]:
        link = PeerLink(self.argv_for(sync.peer_pool[peer], peer, sync.name), peer, timeout=120)
        try:
            reply = await link.request("checksums", tables=sync.tables)
        except LinkError as exc:
            return {"same": False, "error": str(exc)}
        finally:
            with contextlib.suppress(Exception):
                await link.close()
        if not reply.get("ok"):
            return {"same": False, "error": reply.get("error")}
        return compare_checksums(mine, reply.get("checksums") or {})


def compare_checksums(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Which tables and rows differ between two ``table_checksums`` results."""
    tables: dict[str, Any] = {}
    for table in sorted(set(mine) | set(theirs)):
        a, b = mine.get(table), theirs.get(table)
        if a is None or b is None:
            tables[table] = {"same": False, "error": "table missing on one side"}
            continue
        if a.get("digest") == b.get("digest") and a.get("rows") == b.get("rows"):
            tables[table] = {"same": True, "rows": a.get("rows")}
            continue
        ra, rb = a.get("rows_digest") or {}, b.get("rows_digest") or {}
        only_here = sorted(set(ra) - set(rb))
        only_there = sorted(set(rb) - set(ra))
        changed = sorted(k for k in set(ra) & set(rb) if ra[k] != rb[k])
        tables[table] = {
            "same": False,
            "rows": [a.get("rows"), b.get("rows")],
            "only_here": only_here[:DIFFERING_ROWS_SHOWN],
            "only_there": only_there[:DIFFERING_ROWS_SHOWN],
            "differ": changed[:DIFFERING_ROWS_SHOWN],
            "count": len(only_here) + len(only_there) + len(changed),
        }
    return {"same": all(t["same"] for t in tables.values()), "tables": tables}
