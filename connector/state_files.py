"""Small files in the connector's state directory: written whole, read forgivingly.

The epoch (probe_packet.next_epoch), the Serf agent's config (serf.json, it
holds the gossip key) and its pid (serf_pidfile) are each one short file that
a crash must never leave half written: written to ``.tmp``, then renamed.
"""

from __future__ import annotations

import contextlib
import os


def write_private(path: str, text: str) -> None:
    """Replace PATH with TEXT (mode 0600) in one rename, so readers see old or new, whole."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


def read_int(path: str) -> int | None:
    """The integer PATH holds, or None (no file, unreadable, not an integer)."""
    with contextlib.suppress(OSError, ValueError), open(path, encoding="ascii") as handle:
        return int(handle.read().strip())
    return None
