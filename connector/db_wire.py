"""The DB-SA session protocol between an origin's agent and a peer's receiver.

One SSH session per (database, peer) stays open while the peer is alive: a
Python start-up and a database open per batch would cost more than the batch
(the realtime lag target is 0.5 s). Each request is one JSON header line,
optionally followed by exactly ``bytes`` bytes of payload (an encoded batch);
each reply is one JSON line. Requests are answered in order, so the sender
may keep several in flight.

Both ends validate what they read: a header that is not a JSON object, a
payload size out of bounds or a truncated payload is a ``WireError`` naming
what was wrong, and nothing of it is applied.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

# A batch of 5 000 changes of typical rows is ~1-2 MB; this bounds what one
# forged header can make the receiver allocate.
MAX_PAYLOAD = 256 * 1024 * 1024
MAX_HEADER = 64 * 1024
OPS = ("apply", "watermark", "checksums", "schema", "ping")


class WireError(Exception):
    """A malformed request or reply on a DB-SA session."""


def header_line(op: str, payload: bytes = b"", **fields: Any) -> bytes:
    """The header of one request (the payload follows it on the stream)."""
    return (json.dumps({"op": op, "bytes": len(payload), **fields}) + "\n").encode()


def parse_header(line: bytes) -> dict[str, Any]:
    """A request header, checked: a JSON object with a known op and a sane size."""
    if len(line) > MAX_HEADER:
        raise WireError(f"request header longer than {MAX_HEADER} bytes")
    try:
        head = json.loads(line)
    except ValueError:
        raise WireError(f"request header is not JSON: {line[:80]!r}") from None
    if not isinstance(head, dict):
        raise WireError("request header must be a JSON object")
    if head.get("op") not in OPS:
        raise WireError(f"unknown op {head.get('op')!r}; ops: {', '.join(OPS)}")
    size = head.get("bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_PAYLOAD:
        raise WireError(f"payload size {size!r} must be an integer 0..{MAX_PAYLOAD}")
    return head


def read_request(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """The next (header, payload) from a blocking stream; None at a clean end of stream."""
    line = stream.readline(MAX_HEADER + 1)
    if not line:
        return None
    head = parse_header(line)
    size = head["bytes"]
    payload = stream.read(size) if size else b""
    if len(payload) != size:
        raise WireError(f"payload truncated: {len(payload)} of {size} bytes (sender died?)")
    return head, payload


def reply_line(reply: dict[str, Any]) -> bytes:
    """One reply, one line."""
    return (json.dumps(reply, default=str) + "\n").encode()


def parse_reply(line: bytes) -> dict[str, Any]:
    """A reply from a peer, checked to be a JSON object with ``ok``."""
    try:
        reply = json.loads(line)
    except ValueError:
        raise WireError(f"peer reply is not JSON: {line[:200]!r}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise WireError(f"peer reply is not a DB-SA reply: {line[:200]!r}")
    return reply
