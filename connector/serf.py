"""A small asyncio client for Serf's RPC protocol (msgpack over TCP).

Why our own: ``serfclient`` on PyPI is synchronous and unmaintained since 2018,
and the daemon is asyncio end to end. The protocol is small: every request is a
msgpack header ``{"Command", "Seq"}`` followed by an optional body; every
response is a header ``{"Seq", "Error"}`` followed by a body for the commands
that have one. A ``stream`` request keeps answering with the same Seq, one
event per message, until ``stop``.

Serf's Go codec writes byte slices (``Addr``, ``Payload``) as msgpack "raw",
which is not always UTF-8, so strings are decoded with surrogateescape and
turned back into bytes where they are bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

# Commands whose response header is followed by a body.
_WITH_BODY = {
    "members",
    "members-filtered",
    "join",
    "get-coordinate",
    "stats",
    "list-keys",
    "install-key",
    "use-key",
    "remove-key",
}


class SerfError(Exception):
    """Serf refused a request or the connection broke; the message says which."""


@dataclass
class Member:
    """One Serf member as the RPC reports it."""

    name: str
    address: str
    port: int
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rpc(cls, raw: dict[str, Any]) -> Member:
        addr = raw.get("Addr") or b""
        if isinstance(addr, str):
            addr = addr.encode("utf-8", "surrogateescape")
        try:
            address = str(ipaddress.ip_address(bytes(addr)))
            if address.startswith("::ffff:"):
                address = address[7:]
        except ValueError:
            address = ""
        return cls(
            name=raw.get("Name", ""),
            address=address,
            port=int(raw.get("Port", 0)),
            status=raw.get("Status", ""),
            tags=dict(raw.get("Tags") or {}),
        )


class SerfClient:
    """One RPC connection; safe for concurrent requests from one event loop."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 7373, auth_key: str | None = None
    ) -> None:
        self.host, self.port, self.auth_key = host, port, auth_key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._seq = itertools.count()
        self._pending: dict[int, tuple[str, asyncio.Future]] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        # Queries left before Serf's "done" (``expect`` met): their late records
        # (header + body) are read and dropped, so the body is never taken for a header.
        self._orphans: set[int] = set()
        # Requests given up on (timed out) -> their command: a late answer's body is
        # read and dropped, not taken for the next header (which broke the connection).
        self._late: dict[int, str] = {}
        self._unpacker = msgpack.Unpacker(
            raw=False, unicode_errors="surrogateescape", strict_map_key=False
        )
        self._read_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def connect(self, timeout: float = 5.0) -> None:
        """Open the connection, handshake, and authenticate when a key is set."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        except (TimeoutError, OSError) as exc:
            raise SerfError(
                f"cannot reach the Serf agent's RPC at {self.host}:{self.port}: {exc}"
            ) from None
        self._read_task = asyncio.create_task(self._read_loop(), name="serf-rpc-reader")
        try:
            await self.request("handshake", {"Version": 1})
            if self.auth_key:
                await self.request("auth", {"AuthKey": self.auth_key})
        except BaseException:
            await self.close()  # a refused handshake or key must not leave the socket open
            raise

    async def close(self) -> None:
        """Close the connection; pending requests fail with SerfError."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
        self._fail_all(SerfError("connection closed"))

    async def __aenter__(self) -> SerfClient:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _fail_all(self, exc: Exception) -> None:
        for _kind, future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
        for queue in self._streams.values():
            queue.put_nowait(exc)

    async def _send(self, command: str, seq: int, body: dict[str, Any] | None) -> None:
        if self._writer is None:
            raise SerfError("not connected")
        data = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=False)
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        async with self._lock:
            self._writer.write(data)
            await self._writer.drain()

    async def _next(self) -> Any:
        assert self._reader is not None
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise SerfError("the Serf agent closed the RPC connection") from None
                self._unpacker.feed(chunk)

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._next()
                if not isinstance(header, dict) or "Seq" not in header:
                    raise SerfError(f"unexpected RPC message from Serf: {header!r:.200}")
                seq, error = header["Seq"], header.get("Error") or ""
                if seq in self._orphans:
                    record = None if error else await self._next()
                    if error or (isinstance(record, dict) and record.get("Type") == "done"):
                        self._orphans.discard(seq)
                    continue
                if seq in self._streams:
                    queue = self._streams[seq]
                    if error:
                        queue.put_nowait(SerfError(error))
                        continue
                    pending = self._pending.pop(seq, None)
                    if pending is not None:  # the stream's acknowledgement carries no body
                        pending[1].set_result(None)
                        continue
                    queue.put_nowait(await self._next())
                    continue
                command, future = self._pending.pop(seq, None) or (  # type: ignore[assignment]
                    self._late.pop(seq, ""),
                    None,
                )
                body = await self._next() if command in _WITH_BODY and not error else None
                if future is None or future.done():
                    continue
                if error:
                    future.set_exception(SerfError(f"{command}: {error}"))
                else:
                    future.set_result(body)
        except asyncio.CancelledError:
            raise
        except (SerfError, OSError, ValueError, msgpack.ExtraData) as exc:
            self._fail_all(exc if isinstance(exc, SerfError) else SerfError(str(exc)))

    async def request(
        self, command: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        """Send one command and wait for its answer (the body, or None)."""
        seq = next(self._seq)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[seq] = (command, future)
        await self._send(command, seq, body)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(seq, None)
            self._late[seq] = command
            raise SerfError(f"{command}: no answer from Serf within {timeout:g} s") from None

    async def _open_stream(self, command: str, body: dict[str, Any]) -> tuple[int, asyncio.Queue]:
        """Start a command whose answers keep coming under one Seq (stream, query).

        Serf first acknowledges with a bare header; every later message with that
        Seq goes to the returned queue until the caller drops ``self._streams[seq]``.
        """
        seq = next(self._seq)
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[seq] = queue
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[seq] = (command, future)
        await self._send(command, seq, body)
        try:
            await asyncio.wait_for(future, 10)
        except BaseException:
            self._streams.pop(seq, None)
            raise
        return seq, queue

    async def members(self) -> list[Member]:
        """Every member Serf knows, with status and tags."""
        body = await self.request("members")
        return [Member.from_rpc(m) for m in body.get("Members", [])]

    async def set_tags(self, tags: dict[str, str], delete: list[str] | None = None) -> None:
        """Set (and delete) this agent's tags; they gossip to every member."""
        await self.request("tags", {"Tags": tags, "DeleteTags": delete or []})

    async def join(self, addresses: list[str], timeout: float = 10.0) -> int:
        """Join an existing cluster through any of ``addresses``.

        Serf answers one connection's requests in order, and a join waits on the
        peers' agents (seconds under load): give it a connection of its own.
        """
        body = await self.request("join", {"Existing": addresses, "Replay": False}, timeout)
        return int(body.get("Num", 0))

    async def query(
        self,
        name: str,
        payload: bytes = b"",
        nodes: list[str] | None = None,
        timeout: float = 2.0,
        expect: int | None = None,
        on_answer: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Ask members a question; return their answers (``from``, ``payload``).

        With ``expect``, return as soon as that many answers came instead of
        waiting for Serf's "done" at the end of ``timeout``. ``on_answer`` sees
        each answer as it comes; when it returns True the query returns at once
        (answers of several queries in flight can be combined that way).
        """
        body = {
            "FilterNodes": nodes or [],
            "FilterTags": {},
            "RequestAck": False,
            "Timeout": int(timeout * 1e9),
            "Name": name,
            "Payload": payload,
        }
        seq, queue = await self._open_stream("query", body)
        finished = False
        try:
            out, finished = await _collect(self, seq, queue, timeout + 1, expect, on_answer)
            return out
        finally:
            self._streams.pop(seq, None)
            if not finished:
                self._orphans.add(seq)

    async def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a query this agent received (from the event stream)."""
        await self.request("respond", {"ID": query_id, "Payload": payload})

    async def coordinate(self, node: str) -> dict[str, Any] | None:
        """A member's Vivaldi network coordinate (None when Serf has none)."""
        body = await self.request("get-coordinate", {"Node": node})
        return body.get("Coord") if body and body.get("Ok") else None

    async def stream(
        self, types: str = "member-join,member-leave,member-failed,member-update,member-reap"
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield Serf events as they happen, until the caller stops iterating."""
        seq, queue = await self._open_stream("stream", {"Type": types})
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if "Members" in item:
                    item["Members"] = [Member.from_rpc(m) for m in item["Members"]]
                yield item
        finally:
            self._streams.pop(seq, None)
            if self._writer is not None and not self._writer.is_closing():
                with contextlib.suppress(OSError, SerfError):
                    await self._send("stop", next(self._seq), {"Stop": seq})


async def _collect(
    client: SerfClient,
    seq: int,
    queue: asyncio.Queue,
    timeout: float,
    expect: int | None = None,
    on_answer: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Read query records (ack/response/done) until Serf says done: (answers, done seen)."""
    out: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return out, False
        try:
            item = await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            return out, False
        if isinstance(item, Exception):
            raise item
        if item.get("Type") == "done":
            return out, True
        if item.get("Type") == "response":
            payload = item.get("Payload") or b""
            if isinstance(payload, str):
                payload = payload.encode("utf-8", "surrogateescape")
            out.append({"from": item.get("From", ""), "payload": bytes(payload)})
            if on_answer is not None and on_answer(out[-1]):
                return out, False
            if expect is not None and len(out) >= expect:
                return out, False


def rtt_ms(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """Estimated round trip between two Vivaldi coordinates, as Serf computes it."""
    if not a or not b:
        return None
    vec = sum((x - y) ** 2 for x, y in zip(a.get("Vec", []), b.get("Vec", []), strict=False)) ** 0.5
    rtt = vec + a.get("Height", 0) + b.get("Height", 0)
    adjusted = rtt + a.get("Adjustment", 0) + b.get("Adjustment", 0)
    seconds = adjusted if adjusted > 0 else rtt
    return round(seconds * 1000, 3)


JOIN_FANOUT = 4


def join_targets(peers: dict[str, str], alive: set[str], fanout: int = JOIN_FANOUT) -> list[str]:
    """The peer addresses to ``join``: a few of those Serf does not show alive, at random.

    Serf's gossip spreads every member it learns of, so joining a few is enough;
    asking every agent to contact every peer (N x N TCP push/pulls per retry)
    is what made 32 nodes take ~30 s to converge.
    """
    missing = sorted(a for n, a in peers.items() if n not in alive)
    return random.sample(missing, min(fanout, len(missing)))
