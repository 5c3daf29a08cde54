"""One persistent DB-SA session from this node to one peer, for one database.

The session is a subprocess (``ssh ... multiall-db session DB ORIGIN`` over
the pool's peer key, see peer_transport.ssh_argv) speaking db_wire.py.
Replies come back in request order, so ``request`` may be called again
before an earlier reply arrived (pipelining: the next batch travels while
the peer applies the previous one). Any failure - the process died, a reply
timed out, a malformed reply - closes the session and fails every pending
request with ``LinkError``; the caller reconnects with backoff and resends
from its ack watermark (the peer skips what it already holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from .db_wire import WireError, header_line, parse_reply

log = logging.getLogger("multiall.db")
STDERR_TAIL = 5


class LinkError(Exception):
    """The session to a peer failed; the message says how (and the peer's stderr)."""


class PeerLink:
    """A request/reply channel to one peer's receiver."""

    def __init__(self, argv: list[str], peer: str, timeout: float = 60.0) -> None:
        self.argv, self.peer, self.timeout = argv, peer, timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: deque[asyncio.Future] = deque()
        self.reader: asyncio.Task | None = None
        self.stderr: deque[str] = deque(maxlen=STDERR_TAIL)
        self.err_task: asyncio.Task | None = None

    @property
    def open(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start the session process (the first request proves it works)."""
        self.stderr.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self.reader = asyncio.create_task(self._read_replies(), name=f"db-link-{self.peer}")
        self.err_task = asyncio.create_task(self._read_stderr(), name=f"db-err-{self.peer}")

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr.append(text[:500])
                log.warning("db session to %s: %s", self.peer, text[:500])

    async def _read_replies(self) -> None:
        assert self.proc and self.proc.stdout
        error: Exception | None = None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                reply = parse_reply(line)
                if not self.pending:
                    raise WireError(f"unasked reply from {self.peer}: {line[:200]!r}")
                future = self.pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except (WireError, ValueError, ConnectionError) as exc:
            error = exc
        await self._fail(error)

    async def _fail(self, error: Exception | None) -> None:
        """The session is over: fail what is pending with the best explanation."""
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.proc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.err_task:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.err_task, 1)
        why = str(error) if error else f"session ended (exit {self.proc and self.proc.returncode})"
        if self.stderr:
            why += ": " + " | ".join(self.stderr)
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(LinkError(f"{self.peer}: {why}"))

    def send(self, op: str, payload: bytes = b"", **fields: Any) -> asyncio.Future:
        """Queue one request; the future resolves to the peer's reply."""
        if not self.open or not self.proc or not self.proc.stdin:
            raise LinkError(f"{self.peer}: no session")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # A pipelined request dropped with its session is resent, never awaited: not a leak.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.pending.append(future)
        self.proc.stdin.write(header_line(op, payload, **fields))
        if payload:
            self.proc.stdin.write(payload)
        return future

    async def request(self, op: str, payload: bytes = b"", **fields: Any) -> dict[str, Any]:
        """One request and its reply (starts the session when needed)."""
        if not self.open:
            await self.start()
        future = self.send(op, payload, **fields)
        return await self.wait(future)

    async def wait(self, future: asyncio.Future) -> dict[str, Any]:
        """The reply of a sent request; the session is closed if it does not come in time."""
        assert self.proc and self.proc.stdin
        try:
            await self.proc.stdin.drain()
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except (ConnectionError, BrokenPipeError) as exc:
            await self.close()
            raise LinkError(f"{self.peer}: session broke: {exc}") from None
        except TimeoutError:
            await self.close()
            raise LinkError(f"{self.peer}: no reply within {self.timeout:g} s") from None

    async def close(self) -> None:
        """End the session (pending requests fail with LinkError)."""
        if self.proc and self.proc.returncode is None:
            if self.proc.stdin:
                with contextlib.suppress(Exception):
                    self.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.reader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)
        self.proc = None
