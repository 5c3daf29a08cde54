# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DB-SA batches on the wire: what a node ships to its peers, and the checks on what it receives.

A batch is ``MADB1`` + a msgpack list of 8-field lists (seq, table, pk, op, row,
origin, hlc, prev). Peer data is never trusted: every field is checked and any
surprise is a ChangelogError naming the change, never a traceback.
"""

from __future__ import annotations

from .changelog import HLC_RE, IDENT_RE, OPS, Change, ChangelogError

try:  # the daemon has msgpack (requirements.txt); a managed node may not need batches
    import msgpack

    HAS_MSGPACK = True
except ImportError:  # pragma: no cover - exercised only on bare nodes
    HAS_MSGPACK = False

BATCH_MAGIC = b"MADB1"
BATCH_FIELDS = 8  # seq, table, pk, op, row, origin, hlc, prev


def encode_batch(changes: list[Change]) -> bytes:
    """Compact wire form of a batch: magic + msgpack list of 8-tuples."""
    if not HAS_MSGPACK:
        raise ChangelogError("encoding a DB batch needs the Python msgpack package")
    rows = [[c.seq, c.table, c.pk, c.op, c.row, c.origin, c.hlc, c.prev] for c in changes]
    return BATCH_MAGIC + msgpack.packb(rows, use_bin_type=True)


def _bad(index: int, what: str) -> ChangelogError:
    return ChangelogError(f"bad DB batch from peer: change #{index}: {what}")


def decode_batch(data: bytes, tables: set[str]) -> list[Change]:
    """Validate a peer's batch; anything unexpected is a ChangelogError, never a traceback.

    Rows for a table outside ``tables`` refuse the whole batch (apply is confined
    to declared tables); seqs must be strictly increasing and all from one origin.
    """
    if not HAS_MSGPACK:
        raise ChangelogError("decoding a DB batch needs the Python msgpack package")
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(BATCH_MAGIC):
        raise ChangelogError("bad DB batch from peer: not a MultiAll DB batch (magic missing)")
    try:
        rows = msgpack.unpackb(bytes(data[len(BATCH_MAGIC) :]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ChangelogError(f"bad DB batch from peer: undecodable ({exc})") from None
    if not isinstance(rows, list):
        raise ChangelogError("bad DB batch from peer: expected a list of changes")
    out: list[Change] = []
    last_seq = 0
    origin = None
    shapes: set[tuple] = set()  # column-name sets already validated (a batch has few)
    for i, item in enumerate(rows):
        if not isinstance(item, list) or len(item) != BATCH_FIELDS:
            raise _bad(i, f"expected a list of {BATCH_FIELDS} fields")
        seq, table, pk, op, row, org, hlc, prev = item
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= last_seq:
            raise _bad(i, f"seq {seq!r} is not an integer above the previous one ({last_seq})")
        if table not in tables:
            if not isinstance(table, str) or not IDENT_RE.match(table):
                raise _bad(i, f"table {table!r} is not a table name")
            raise ChangelogError(
                f"peer sent rows for table {table!r}, which is not declared for this database "
                f"(declared: {', '.join(sorted(tables)) or 'none'}); batch refused"
            )
        if op not in OPS:
            raise _bad(i, f"op {op!r} is not one of I, U, D")
        if not isinstance(pk, dict) or not pk:
            raise _bad(i, "pk must be a non-empty mapping of column names")
        if op == "D":
            if row is not None:
                raise _bad(i, "a delete carries no row image")
        elif not isinstance(row, dict):
            raise _bad(i, "an insert/update carries a row mapping")
        shape = (tuple(pk), None if row is None else tuple(row))
        if shape not in shapes:
            for name in shape[0] + (shape[1] or ()):
                if not isinstance(name, str) or not IDENT_RE.match(name):
                    raise _bad(i, f"column name {name!r} is not an identifier")
            shapes.add(shape)
        m = HLC_RE.match(hlc) if isinstance(hlc, str) else None
        if m is None or (prev is not None and not (isinstance(prev, str) and HLC_RE.match(prev))):
            raise _bad(i, f"{hlc!r} / {prev!r} is not an HLC timestamp (WALLMS13-COUNTER6-origin)")
        if org != origin:
            if origin is not None or not isinstance(org, str):
                raise _bad(i, f"origin {org!r} differs from the batch's origin {origin!r}")
            origin = org
        if m.group(3) != org:
            raise _bad(i, f"hlc {hlc!r} does not end with its origin {org!r}")
        last_seq = seq
        out.append(Change(seq, table, pk, op, row, org, hlc, prev))
    return out
