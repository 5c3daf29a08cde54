# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DB-SA change capture and apply, the same logic for SQLite and PostgreSQL.

Capture: AFTER INSERT/UPDATE/DELETE triggers on each declared table write the
change (table, primary key, operation, row image, origin, HLC, prev) into
``multiall_changelog`` — the cache table that keeps what peers have not
acknowledged yet. Applications keep using their tables unchanged.

Apply: a peer's batch is applied in one transaction with a per-origin
watermark (replays are no-ops), last-writer-wins on the HLC (text that sorts as
wall-ms, counter, origin name — so the origin is the deterministic tie-break),
tombstones for deletes and no echo (applied rows are not captured again).

Why the HLC is computed inside the trigger (a one-row ``multiall_clock`` state
table) rather than stamped later: LWW must compare *when rows were written*.
Stamping at ship time would let a change written early during a partition but
shipped late win over a newer one. The clock row also serialises writers on
that row, which keeps the HLC strictly monotonic per node; applying a batch
merges the highest remote HLC into it so a later local write always sorts after
every version this node has seen.

Why ``multiall_rowver`` (one row per primary key ever written, like cr-sqlite's
clock tables): the changelog is pruned once every peer acked, but LWW and
tombstones must still know the version of each row afterwards. ``prev`` (the
version a change replaced on its origin) tells a sequential update (no
conflict) from a concurrent one (recorded in ``multiall_conflicts``).

Engine-specific SQL lives in ``_changelog_sqlite.py`` and ``_changelog_pg.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from ._changelog_apply import resolve, row_key, write_runs

try:  # the daemon has msgpack (requirements.txt); a managed node may not need batches
    import msgpack

    HAS_MSGPACK = True
except ImportError:  # pragma: no cover - exercised only on bare nodes
    HAS_MSGPACK = False

OPS = ("I", "U", "D")
# wall milliseconds (13 digits), counter (6 digits), origin node name
HLC_RE = re.compile(r"^(\d{13})-(\d{6})-([A-Za-z0-9][A-Za-z0-9_.-]*)$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BATCH_MAGIC = b"MADB1"
BATCH_FIELDS = 8  # seq, table, pk, op, row, origin, hlc, prev
META_TABLES = (
    "multiall_changelog",
    "multiall_clock",
    "multiall_rowver",
    "multiall_watermarks",
    "multiall_conflicts",
)


class ChangelogError(Exception):
    """A capture/apply problem; the message names the database, table or field."""


class SchemaMismatch(ChangelogError):
    """The local table does not have the peer's columns or primary key."""

    def __init__(self, msg: str, table: str, column: str | None = None) -> None:
        super().__init__(msg)
        self.table = table
        self.column = column


@dataclass(frozen=True)
class Change:
    """One captured row change, as shipped to peers.

    ``prev`` is the HLC of the version this change replaced on its origin (None
    for a row the origin had never seen): equal to the receiver's version means
    a sequential update, anything else a concurrent one (a conflict).
    """

    seq: int
    table: str
    pk: dict
    op: str
    row: dict | None
    origin: str
    hlc: str
    prev: str | None = None


@dataclass
class ApplyResult:
    """What one ``apply_batch`` did."""

    applied: int = 0
    skipped: int = 0  # at or below the origin's watermark (replays)
    lost: int = 0  # older than the local version: LWW kept the local row
    conflicts: int = 0
    watermark: int = 0
    tables: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output and the daemon's journal."""
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "lost": self.lost,
            "conflicts": self.conflicts,
            "watermark": self.watermark,
            "tables": dict(self.tables),
        }


def hlc_parts(hlc: str) -> tuple[int, int, str]:
    """``(wall_ms, counter, origin)`` of an HLC text; ValueError when malformed."""
    m = HLC_RE.match(hlc)
    if not m:
        raise ValueError(f"{hlc!r} is not an HLC timestamp (expected WALLMS13-COUNTER6-origin)")
    return int(m.group(1)), int(m.group(2)), m.group(3)


def make_hlc(wall_ms: int, counter: int, origin: str) -> str:
    """The sortable text form; the same format the triggers write."""
    return f"{wall_ms:013d}-{counter:06d}-{origin}"


def check_ident(name: str, what: str = "table") -> str:
    """Table and column names are written into DDL: plain identifiers only."""
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise ChangelogError(
            f"{what} name {name!r} is not a plain identifier (letters, digits, '_')"
        )
    if name.startswith("multiall_"):
        raise ChangelogError(f"{what} {name!r}: names starting with multiall_ are DB-SA's own")
    return name


def read_password_file(path: str, db: str) -> str:
    """The database password, only from a file nobody but its owner can read (0600)."""
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ChangelogError(
                f"database {db}: password_file {path} is mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must not be readable by group or others (chmod 0600)"
            )
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ChangelogError(f"database {db}: cannot read password_file {path}: {exc}") from None


def canonical_json(value: Any) -> str:
    """One text per value, the same on every node: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- batches


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
        if type(item) is not list or len(item) != BATCH_FIELDS:
            raise _bad(i, f"expected a list of {BATCH_FIELDS} fields")
        seq, table, pk, op, row, org, hlc, prev = item
        if type(seq) is not int or seq <= last_seq:
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
        if type(pk) is not dict or not pk:
            raise _bad(i, "pk must be a non-empty mapping of column names")
        if op == "D":
            if row is not None:
                raise _bad(i, "a delete carries no row image")
        elif type(row) is not dict:
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


# --------------------------------------------------------------------------- handle


class DbHandle:
    """One open database of the model; use as a context manager (closes the connection).

    The engine object (SQLite or PostgreSQL) supplies connection, DDL and the
    few statements whose SQL differs; everything else is shared here.
    """

    def __init__(self, name: str, engine: Any, node: str) -> None:
        self.name = name
        self.node = node
        self.engine = engine

    def __enter__(self) -> DbHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (rolls back anything uncommitted)."""
        self.engine.close()

    # ---- capture
    def _tables(self, tables: Any) -> list[str]:
        names = sorted({check_ident(t) for t in tables})
        for table in names:
            schema = self.engine.table_schema(table)
            if schema is None:
                raise ChangelogError(f"database {self.name}: table {table!r} does not exist")
            if not schema["pk"]:
                raise ChangelogError(
                    f"database {self.name}: table {table!r} has no PRIMARY KEY; DB-SA needs one "
                    "to identify rows across nodes"
                )
        return names

    def capture_plan(self, tables: Any) -> list[str]:
        """The DDL ``install_capture`` would run now; [] when installed and current."""
        return self.engine.capture_plan(self._tables(tables), self.node)

    def install_capture(self, tables: Any) -> list[str]:
        """Create/refresh the capture tables and triggers; idempotent, returns what ran."""
        plan = self.capture_plan(tables)
        if plan:
            self.engine.run_ddl(plan)
        return plan

    def removal_plan(self, tables: Any) -> list[str]:
        """The DDL ``remove_capture`` would run now."""
        return self.engine.remove_plan(sorted({check_ident(t) for t in tables}))

    def remove_capture(self, tables: Any) -> list[str]:
        """Drop the triggers of ``tables``; the DB-SA tables go too once nothing is queued."""
        plan = self.removal_plan(tables)
        if plan:
            self.engine.run_ddl(plan)
        return plan

    def installed_tables(self) -> list[str]:
        """Tables that currently carry capture triggers."""
        return self.engine.captured_tables()

    # ---- reading the changelog
    def changes_after(self, seq: int, limit: int) -> list[Change]:
        """Own captured changes with seq > ``seq``, oldest first, at most ``limit``."""
        if not self.engine.has_table("multiall_changelog"):
            return []
        rows = self.engine.fetch_changes(int(seq), self.node, int(limit))
        return [Change(*r) for r in rows]

    def max_seq(self) -> int:
        """Highest seq ever captured here (AUTOINCREMENT/identity: never reused after prune)."""
        return self.engine.max_seq()

    def min_seq(self) -> int | None:
        """Oldest change still kept (None when the changelog is empty)."""
        if not self.engine.has_table("multiall_changelog"):
            return None
        rows = self.engine.query("SELECT MIN(seq) FROM multiall_changelog", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def watermark(self, origin: str) -> int:
        """Highest seq of ``origin`` applied here (0 when nothing yet)."""
        if not self.engine.has_table("multiall_watermarks"):
            return 0
        rows = self.engine.query(
            f"SELECT seq FROM multiall_watermarks WHERE origin = {self.engine.ph}", (origin,)
        )
        return int(rows[0][0]) if rows else 0

    def watermarks(self) -> dict[str, int]:
        """Every origin's watermark."""
        if not self.engine.has_table("multiall_watermarks"):
            return {}
        return {
            r[0]: int(r[1])
            for r in self.engine.query("SELECT origin, seq FROM multiall_watermarks", ())
        }

    def prune(self, upto_seq: int) -> int:
        """Delete own changes with seq <= ``upto_seq`` (acked by every peer); count deleted."""
        if not self.engine.has_table("multiall_changelog"):
            return 0
        return self.engine.execute_count(
            f"DELETE FROM multiall_changelog WHERE seq <= {self.engine.ph} AND origin = "
            f"{self.engine.ph}",
            (int(upto_seq), self.node),
        )

    def conflicts(self, limit: int = 100) -> list[dict]:
        """The most recent conflicts, newest first."""
        if not self.engine.has_table("multiall_conflicts"):
            return []
        rows = self.engine.query(
            "SELECT id, tbl, pk, winner_origin, winner_hlc, loser_origin, loser_hlc, loser_op, "
            f"loser_row, detected_at FROM multiall_conflicts ORDER BY id DESC LIMIT {self.engine.ph}",
            (int(limit),),
        )
        keys = (
            "id", "table", "pk", "winner_origin", "winner_hlc", "loser_origin", "loser_hlc",
            "loser_op", "loser_row", "detected_at",
        )  # fmt: skip
        out = []
        for r in rows:
            item = dict(zip(keys, r, strict=True))
            item["pk"] = self.engine.load_json(item["pk"])
            item["loser_row"] = self.engine.load_json(item["loser_row"])
            item["detected_at"] = str(item["detected_at"])
            out.append(item)
        return out

    # ---- schema and checksums
    def schema(self, table: str) -> dict:
        """``{"columns": [{"name", "type"}...], "pk": [...]}``; compared across peers."""
        schema = self.engine.table_schema(check_ident(table))
        if schema is None:
            raise ChangelogError(f"database {self.name}: table {table!r} does not exist")
        return schema

    def table_checksums(self, tables: Any) -> dict:
        """Per table: row count, one digest, and a digest per row keyed by its pk JSON.

        The per-row digests let ``multiall db verify`` name the rows that differ.
        """
        out: dict[str, dict] = {}
        for table in sorted({check_ident(t) for t in tables}):
            schema = self.schema(table)
            rows_digest: dict[str, str] = {}
            for row in self.engine.rows(table):
                pk = canonical_json({c: row.get(c) for c in schema["pk"]})
                rows_digest[pk] = hashlib.sha256(canonical_json(row).encode()).hexdigest()[:32]
            total = hashlib.sha256()
            for pk in sorted(rows_digest):
                total.update(f"{pk}\0{rows_digest[pk]}\n".encode())
            out[table] = {
                "rows": len(rows_digest),
                "digest": total.hexdigest(),
                "rows_digest": rows_digest,
            }
        return out

    # ---- apply
    def _check_schema(self, changes: list[Change], cache: dict[str, dict]) -> None:
        """Every column and primary key of the batch must match the local table."""
        seen: set[tuple] = set()  # column sets already checked: a batch has few shapes
        for ch in changes:
            shape = (ch.table, tuple(ch.pk), None if ch.row is None else tuple(ch.row))
            if shape in seen:
                continue
            seen.add(shape)
            schema = cache.get(ch.table)
            if schema is None:
                schema = self.engine.table_schema(ch.table)
                if schema is None:
                    raise SchemaMismatch(
                        f"database {self.name}: table {ch.table!r} does not exist here",
                        ch.table,
                    )
                schema = cache[ch.table] = {
                    "pk": list(schema["pk"]),
                    "columns": {c["name"] for c in schema["columns"]},
                }
            if sorted(ch.pk) != sorted(schema["pk"]):
                raise SchemaMismatch(
                    f"database {self.name}: table {ch.table!r}: the peer's primary key is "
                    f"({', '.join(sorted(ch.pk))}), here it is ({', '.join(schema['pk'])})",
                    ch.table,
                )
            if ch.row is not None and set(ch.row) != schema["columns"]:
                extra = sorted(set(ch.row) - schema["columns"])
                missing = sorted(schema["columns"] - set(ch.row))
                column = (extra or missing)[0]
                where = "is missing here" if extra else "is missing on the peer"
                raise SchemaMismatch(
                    f"database {self.name}: table {ch.table!r}: column {column!r} {where} "
                    f"(origin {ch.origin})",
                    ch.table,
                    column,
                )

    def apply_batch(self, origin: str, changes: list[Change], tables: set[str]) -> ApplyResult:
        """Apply a peer's batch in one transaction; see the module docstring for the rules.

        Raises ChangelogError/SchemaMismatch before changing anything when the
        batch names an undeclared table or does not fit the local schema.
        """
        for ch in changes:
            if ch.table not in tables:
                raise ChangelogError(
                    f"database {self.name}: peer {origin} sent rows for table {ch.table!r}, "
                    "which is not declared; batch refused"
                )
            if ch.origin != origin:
                raise ChangelogError(
                    f"database {self.name}: batch from {origin} holds a change of {ch.origin}"
                )
        if origin == self.node:
            raise ChangelogError(f"database {self.name}: refusing to apply our own changes")
        if not self.engine.has_table("multiall_rowver"):
            raise ChangelogError(
                f"database {self.name}: capture is not installed here (run db_sync first)"
            )
        schemas: dict[str, dict] = {}
        self._check_schema(changes, schemas)
        pk_order = {t: s["pk"] for t, s in schemas.items()}
        result = ApplyResult()
        eng = self.engine
        eng.begin()
        try:
            eng.set_applying(True)
            mark = self.watermark(origin)
            result.watermark = mark
            todo = sorted((c for c in changes if c.seq > mark), key=lambda c: c.seq)
            result.skipped = len(changes) - len(todo)
            if todo:
                self._apply(todo, pk_order, result)
                result.watermark = todo[-1].seq
                eng.set_watermark(origin, result.watermark)
                wall, counter, _ = hlc_parts(max(c.hlc for c in todo))
                eng.merge_clock(wall, counter)
            eng.set_applying(False)
            eng.commit()
        except BaseException:
            eng.rollback()
            raise
        return result

    def _apply(
        self, todo: list[Change], pk_order: dict[str, list[str]], result: ApplyResult
    ) -> None:
        """Resolve in memory, then write each row's final state in bulk (see _changelog_apply)."""
        eng = self.engine
        wanted: dict[str, dict[tuple, dict]] = {}
        for ch in todo:
            wanted.setdefault(ch.table, {})[row_key(ch.pk, pk_order[ch.table])] = ch.pk
        local: dict[tuple[str, tuple], Any] = {}
        for table, keys in wanted.items():
            for key, version in eng.row_versions(
                table, pk_order[table], list(keys.values())
            ).items():
                local[(table, key)] = version
        res = resolve(todo, local, pk_order)
        for c in res.conflicts:
            row = eng.current_row(c.table, c.pk) if c.loser_is_local else c.loser_row
            eng.add_conflict(
                c.table, c.pk, hlc_parts(c.winner_hlc)[2], c.winner_hlc,
                hlc_parts(c.loser_hlc)[2], c.loser_hlc, c.loser_op, row,
            )  # fmt: skip
        for table, kind, cols, run in write_runs(res.final):
            if kind == "D":
                eng.delete_rows(table, pk_order[table], [ch.pk for ch in run])
            else:
                eng.write_rows(table, pk_order[table], list(cols), [ch.row for ch in run])
        eng.set_row_versions(
            [(ch.table, ch.pk, ch.hlc, ch.prev, ch.op == "D") for ch in res.final.values()]
        )
        result.applied, result.lost = res.applied, res.lost
        result.conflicts, result.tables = len(res.conflicts), res.tables


def open_db(name: str, spec: dict, node: str) -> DbHandle:
    """Open database ``name`` of the model (``spec`` = ``databases[name]``) as ``node``."""
    engine = spec.get("engine")
    if not HLC_RE.match(make_hlc(0, 0, node)):
        raise ChangelogError(f"node name {node!r} cannot be an HLC origin")
    if engine == "sqlite":
        from ._changelog_sqlite import SqliteEngine

        return DbHandle(name, SqliteEngine(name, spec), node)
    if engine == "postgresql":
        from ._changelog_pg import PgEngine

        return DbHandle(name, PgEngine(name, spec), node)
    raise ChangelogError(f"database {name}: engine {engine!r} is not sqlite or postgresql")
