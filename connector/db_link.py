"""One persistent DB-SA session from this node to one peer, for one database.

The session is a subprocess (``ssh ... multiall-db session DB ORIGIN`` over
the pool's peer key, see peer_transport.ssh_argv) speaking db_wire.py.
Replies come back in request order, so ``request`` may be called again
before an earlier reply arrived (pipelining: the next batch travels while
the peer applies the previous one). Any failure - the process died, a reply
timed out, a malformed reply - closes the session and fails every pending
request with ``LinkError``; the caller reconnects with backoff and resends
from its ack watermark (the peer skips what it already holds).

Each session process has its own ``_Session`` (pending requests, reader
tasks, stderr): the end of an old session, noticed late, can only fail that
session's requests, never those of the session that replaced it. Every wait
here is bounded, and no task is ever awaited after it may have been
cancelled: a shipper's task must never end by a CancelledError that was not
meant for it (that stopped a peer's shipping, silently, for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from .db_wire import WireError, header_line, parse_reply
from .subprocs import EXIT_WAIT, reaped

log = logging.getLogger("multiall.db")
STDERR_TAIL = 5
# Seconds the stderr reader gets after the exit, for ssh's last words. A
# process the session left behind may hold the pipe open (older OpenSSH kept
# a ControlPersist master's stderr), so its end of file may never come: the
# reader is cancelled after this grace.
STDERR_GRACE = 1.0


class LinkError(Exception):
    """The session to a peer failed; the message says how (and the peer's stderr)."""


class _Session:
    """One session process and what belongs to it alone."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: deque[asyncio.Future] = deque()
        self.stderr: deque[str] = deque(maxlen=STDERR_TAIL)
        self.reader: asyncio.Task | None = None
        self.err_task: asyncio.Task | None = None
        self.ended = False

    @property
    def alive(self) -> bool:
        return not self.ended and self.proc.returncode is None

    def fail_pending(self, error: LinkError) -> None:
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)


class PeerLink:
    """A request/reply channel to one peer's receiver."""

    def __init__(self, argv: list[str], peer: str, timeout: float = 60.0) -> None:
        self.argv, self.peer, self.timeout = argv, peer, timeout
        self.session: _Session | None = None

    @property
    def open(self) -> bool:
        return self.session is not None and self.session.alive

    async def start(self) -> None:
        """Start a session process (the first request proves it works)."""
        if self.session is not None:
            await self.close()  # a session that ended on its own: reaped before the next
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        session = _Session(proc)
        session.reader = asyncio.create_task(
            self._read_replies(session), name=f"db-link-{self.peer}"
        )
        session.err_task = asyncio.create_task(
            self._read_stderr(session), name=f"db-err-{self.peer}"
        )
        self.session = session

    async def _read_stderr(self, session: _Session) -> None:
        assert session.proc.stderr
        while line := await session.proc.stderr.readline():
            text = line.decode(errors="replace").strip()
            if text:
                session.stderr.append(text[:500])
                log.warning("db session to %s: %s", self.peer, text[:500])

    async def _read_replies(self, session: _Session) -> None:
        assert session.proc.stdout
        error: Exception | None = None
        try:
            while True:
                line = await session.proc.stdout.readline()
                if not line:
                    break
                reply = parse_reply(line)
                if not session.pending:
                    raise WireError(f"unasked reply from {self.peer}: {line[:200]!r}")
                future = session.pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except (WireError, ValueError, ConnectionError) as exc:
            error = exc
        await self._end(session, error)

    async def _end(self, session: _Session, error: Exception | None) -> None:
        """SESSION is over: reap it, then fail its pending requests with the best explanation."""
        if session.ended:
            return
        session.ended = True
        if session.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                session.proc.kill()
        await reaped(session.proc)
        if session.err_task:
            await asyncio.wait({session.err_task}, timeout=STDERR_GRACE)
            session.err_task.cancel()
        why = str(error) if error else f"session ended (exit {session.proc.returncode})"
        if session.stderr:
            why += ": " + " | ".join(session.stderr)
        session.fail_pending(LinkError(f"{self.peer}: {why}"))

    def send(self, op: str, payload: bytes = b"", **fields: Any) -> asyncio.Future:
        """Queue one request; the future resolves to the peer's reply."""
        session = self.session
        if session is None or not session.alive or not session.proc.stdin:
            raise LinkError(f"{self.peer}: no session")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # A pipelined request dropped with its session is resent, never awaited: not a leak.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        session.pending.append(future)
        session.proc.stdin.write(header_line(op, payload, **fields))
        if payload:
            session.proc.stdin.write(payload)
        return future

    async def request(self, op: str, payload: bytes = b"", **fields: Any) -> dict[str, Any]:
        """One request and its reply (starts the session when needed)."""
        if not self.open:
            await self.start()
        future = self.send(op, payload, **fields)
        return await self.wait(future)

    async def wait(self, future: asyncio.Future) -> dict[str, Any]:
        """The reply of a sent request; the session is closed if it does not come in time.

        Sending is bounded too: a peer that stops reading (a receiver stuck in
        its database) fills the pipe, and an unbounded drain waited forever.
        """
        session = self.session
        try:
            if session is not None and session.alive and session.proc.stdin:
                await asyncio.wait_for(session.proc.stdin.drain(), self.timeout)
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except ConnectionError as exc:
            await self.close()
            raise LinkError(f"{self.peer}: session broke: {exc}") from None
        except TimeoutError:
            await self.close()
            raise LinkError(f"{self.peer}: no reply within {self.timeout:g} s") from None

    async def close(self) -> None:
        """End the session (pending requests fail with LinkError); bounded, never raises."""
        session, self.session = self.session, None
        if session is None:
            return
        stdin = session.proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(Exception):
                stdin.close()
        await self._end(session, None)
        if session.reader is not None:
            # Ended by its reader, which may still be inside _end: let it finish.
            await asyncio.wait({session.reader}, timeout=EXIT_WAIT + STDERR_GRACE + 1)
            session.reader.cancel()
        session.fail_pending(LinkError(f"{self.peer}: session closed"))
