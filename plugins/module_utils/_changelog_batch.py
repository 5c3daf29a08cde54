# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DB-SA batches on the wire: what a node ships to its peers, and the checks on what it receives.

A batch is ``MADB2`` + a msgpack map of columns, one list per field of ``Change``
(seq, table, pk, op, row, origin, hlc, prev), all of one length. Columns, not
one list per change, because a receiver checks 100 000 changes of a replay:
column checks are set and join operations that run in C (all seqs ints and
increasing, every table declared, every HLC matched by one regular expression
over the joined column), where a check per change cost more than applying it.

Peer data is never trusted: when a fast check fails, ``_explain`` walks the
batch change by change and raises a ChangelogError naming the change and what
is wrong with it - never a traceback.
"""

from __future__ import annotations

import re
from itertools import compress
from operator import lt
from typing import Any

from .changelog import HLC_RE, IDENT_RE, OPS, Change, ChangelogError

try:  # the daemon has msgpack (requirements.txt); a managed node may not need batches
    import msgpack

    HAS_MSGPACK = True
except ImportError:  # pragma: no cover - exercised only on bare nodes
    HAS_MSGPACK = False

BATCH_MAGIC = b"MADB2"
FIELDS = Change._fields  # seq, table, pk, op, row, origin, hlc, prev
# Every HLC of a column, joined by newlines (no HLC can hold one).
ANY_HLCS = re.compile(r"(?:\d{13}-\d{6}-[A-Za-z0-9][A-Za-z0-9_.-]*\n)*")


def encode_columns(columns: dict[str, list]) -> bytes:
    """Compact wire form of a batch: magic + msgpack map of the columns ``FIELDS``."""
    if not HAS_MSGPACK:
        raise ChangelogError("encoding a DB batch needs the Python msgpack package")
    return BATCH_MAGIC + msgpack.packb({f: columns[f] for f in FIELDS}, use_bin_type=True)


def encode_batch(changes: list[Change]) -> bytes:
    """The same wire form from a list of changes."""
    columns = list(zip(*changes, strict=True)) if changes else [()] * len(FIELDS)
    return encode_columns({f: list(v) for f, v in zip(FIELDS, columns, strict=True)})


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
        raise ChangelogError(
            "bad DB batch from peer: not a MultiAll DB batch of this version (magic "
            f"{BATCH_MAGIC.decode()} missing; a peer running an older MultiAll?)"
        )
    try:
        body = msgpack.unpackb(bytes(data[len(BATCH_MAGIC) :]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ChangelogError(f"bad DB batch from peer: undecodable ({exc})") from None
    if not isinstance(body, dict) or set(body) != set(FIELDS):
        raise ChangelogError(f"bad DB batch from peer: expected the columns {', '.join(FIELDS)}")
    columns = [body[name] for name in FIELDS]
    if not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) != 1:
        raise ChangelogError("bad DB batch from peer: columns must be lists of one length")
    try:
        good = _looks_right(columns, tables)
    except TypeError:  # an unhashable or unjoinable value somewhere
        good = False
    if not good:
        _explain(columns, tables)
        raise ChangelogError("bad DB batch from peer: malformed change")  # pragma: no cover
    return list(map(Change._make, zip(*columns, strict=True)))


def _looks_right(columns: list[list], tables: set[str]) -> bool:
    """All of ``_explain``'s checks on whole columns at C speed (True: nothing wrong)."""
    seqs, names, pks, ops, rows, origins, hlcs, prevs = columns
    if not seqs:
        return True
    is_delete = [op == "D" for op in ops]
    no_row = [row is None for row in rows]
    images = list(compress(rows, [not n for n in no_row]))
    origin = origins[0]
    if not (
        set(map(type, seqs)) == {int}
        and seqs[0] > 0
        and all(map(lt, seqs, seqs[1:]))
        and set(names) <= tables
        and set(ops) <= set(OPS)
        and set(map(type, pks)) == {dict}
        and all(pks)
        and is_delete == no_row
        and set(map(type, images)) <= {dict}
        and set(origins) == {origin}
        and isinstance(origin, str)
        and HLC_RE.fullmatch(f"0000000000000-000000-{origin}")
    ):
        return False
    shapes = set(map(tuple, pks)) | set(map(tuple, images))
    if not all(isinstance(n, str) and IDENT_RE.match(n) for shape in shapes for n in shape):
        return False
    own = re.compile(r"(?:\d{13}-\d{6}-" + re.escape(origin) + r"\n)*")
    joined = "\n".join(hlcs) + "\n"
    if joined.count("\n") != len(hlcs) or not own.fullmatch(joined):
        return False
    replaced = [p for p in prevs if p is not None]
    joined = "\n".join(replaced) + "\n" if replaced else ""
    return joined.count("\n") == len(replaced) and bool(ANY_HLCS.fullmatch(joined))


def _explain(columns: list[list], tables: set[str]) -> None:
    """Walk the batch change by change and raise the error of the first bad one."""
    last_seq = 0
    origin: Any = None
    for i, (seq, table, pk, op, row, org, hlc, prev) in enumerate(zip(*columns, strict=True)):
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= last_seq:
            raise _bad(i, f"seq {seq!r} is not an integer above the previous one ({last_seq})")
        if not isinstance(table, str) or not IDENT_RE.match(table):
            raise _bad(i, f"table {table!r} is not a table name")
        if table not in tables:
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
        for name in list(pk) + list(row or ()):
            if not isinstance(name, str) or not IDENT_RE.match(name):
                raise _bad(i, f"column name {name!r} is not an identifier")
        m = HLC_RE.fullmatch(hlc) if isinstance(hlc, str) else None
        if m is None or (
            prev is not None and not (isinstance(prev, str) and HLC_RE.fullmatch(prev))
        ):
            raise _bad(i, f"{hlc!r} / {prev!r} is not an HLC timestamp (WALLMS13-COUNTER6-origin)")
        if org != origin:
            if origin is not None or not isinstance(org, str):
                raise _bad(i, f"origin {org!r} differs from the batch's origin {origin!r}")
            origin = org
        if m.group(3) != org:
            raise _bad(i, f"hlc {hlc!r} does not end with its origin {org!r}")
        last_seq = seq
