"""FS-SA range digests: how two nodes find where their indexes differ without sending them.

Every index row carries a 40-bit number (``Entry.digest``: path, type, content
hash, mode, owner, version vector). A node cuts its index into slices of a few
thousand paths and sums the numbers per slice; the peer sums its own rows over
the same path ranges. Equal sums: nothing in that slice to compare. A returning
peer whose index equals ours costs one round trip, not every entry. Stdlib only.
"""

from __future__ import annotations

from .fsindex import Index


def digest_slices(index: Index, size: int) -> list[tuple[str | None, int, int]]:
    """The index cut into slices of SIZE paths: (last path or None, count, digest sum).

    Slice i holds the paths after slice i-1's last one up to its own (the
    last slice: to the end). A peer sums its own rows over the same bounds
    (``range_digests``); only slices whose sums differ need their entries sent.
    """
    out: list[tuple[str | None, int, int]] = []
    count = total = 0
    last: str | None = None
    for path, dg in index.db.execute("SELECT path, dg FROM files ORDER BY path"):
        if count == size:
            out.append((last, count, total))
            count = total = 0
        # A row without its number (written by an older version) never matches: compared.
        count, total, last = count + 1, total + (-1 << 50 if dg is None else dg), path
    out.append((None, count, total))
    return out


def range_digests(index: Index, uptos: list[str | None]) -> list[tuple[int, int]]:
    """(count, digest sum) of this index over the slices ending at UPTOS (see above)."""
    out, after = [], None
    for upto in uptos:
        sql, args = "SELECT COUNT(*), COALESCE(SUM(dg), 0) FROM files WHERE 1", []
        if after is not None:
            sql, args = sql + " AND path > ?", [*args, after]
        if upto is not None:
            sql, args = sql + " AND path <= ?", [*args, upto]
        count, total = index.db.execute(sql, args).fetchone()
        out.append((count, total))
        after = upto
    return out
