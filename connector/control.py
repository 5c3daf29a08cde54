"""The connector's control socket: JSON-line requests from the CLI, modules and lab.

The socket is a unix socket of mode 0600 (root only); each line is one request
``{"op": ..., ...}`` answered by one JSON line, except ``follow``, which turns
the connection into a stream of events. The client side is the shared
``module_utils/_control.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .journal import JournalError
from .serf import SerfError

if TYPE_CHECKING:  # the daemon imports this module: no import cycle at run time
    from .daemon import Connector

Reply = dict[str, Any]


class ControlServer:
    """Answers the control socket's requests from one Connector's state."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.ops: dict[str, Callable[[dict[str, Any]], Awaitable[Reply]]] = {
            "status": self._status,
            "events": self._events,
            "sbm": self._sbm,
            "runs": self._runs,
            "maintenance": self._maintenance,
            "dns": self._dns,
            "fs": self._fs,
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests until it hangs up (or asks to follow)."""
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("a request is a JSON object")
                    if req.get("op") == "follow":
                        await self._follow(writer)
                        return
                    reply = await self.dispatch(req)
                except (ValueError, TypeError, SerfError, JournalError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write((json.dumps(reply, default=str) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def dispatch(self, req: dict[str, Any]) -> Reply:
        """The reply to one request; a bad request raises ValueError with the fix."""
        op = req.get("op")
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join([*self.ops, 'follow'])}")
        return await handler(req)

    async def _status(self, req: dict[str, Any]) -> Reply:
        if req.get("brief"):
            member = req.get("member")
            return {"ok": True, **self.connector.status_brief(str(member) if member else None)}
        return {"ok": True, **self.connector.status()}

    async def _events(self, req: dict[str, Any]) -> Reply:
        journal = self.connector.journal
        since, limit = int(req.get("since", 0)), int(req.get("limit", 200))
        return {"ok": True, "events": await journal.offload(journal.events, since, limit)}

    async def _sbm(self, req: dict[str, Any]) -> Reply:
        node = req.get("node") or self.connector.node
        return await self.connector.query_sbm(str(node), float(req.get("timeout", 2)))

    async def _runs(self, req: dict[str, Any]) -> Reply:
        journal = self.connector.journal
        return {
            "ok": True,
            "runs": await journal.offload(journal.runs, int(req.get("limit", 50))),
        }

    async def _maintenance(self, req: dict[str, Any]) -> Reply:
        action = req.get("action")
        if action not in ("enter", "exit"):
            raise ValueError("action must be 'enter' or 'exit'")
        return await self.connector.maintenance(
            action == "enter", str(req.get("reason", "")), float(req.get("timeout", 15))
        )

    async def _dns(self, req: dict[str, Any]) -> Reply:
        pool = req.get("pool")
        return await self.connector.dns.report(str(pool) if pool else None)

    async def _fs(self, req: dict[str, Any]) -> Reply:
        fs = self.connector.fs
        return await (fs.conflicts() if req.get("what") == "conflicts" else fs.report())

    async def _follow(self, writer: asyncio.StreamWriter) -> None:
        """Stream every event the connector publishes from now on, one JSON line each."""
        queue: asyncio.Queue = asyncio.Queue()
        self.connector.subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                writer.write((json.dumps(event, default=str) + "\n").encode())
                await writer.drain()
        finally:
            self.connector.subscribers.discard(queue)
