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
from bisect import bisect_right
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from ._changelog_bulk import ApplyRaced, apply_staged

OPS = ("I", "U", "D")
# An apply that a local write raced (see _changelog_bulk) decides again, this often at most.
RACE_ATTEMPTS = 5
# wall milliseconds (13 digits), counter (6 digits), origin node name
HLC_RE = re.compile(r"^(\d{13})-(\d{6})-([A-Za-z0-9][A-Za-z0-9_.-]*)$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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


class Change(NamedTuple):
    """One captured row change, as shipped to peers.

    ``prev`` is the HLC of the version this change replaced on its origin (None
    for a row the origin had never seen): equal to the receiver's version means
    a sequential update, anything else a concurrent one (a conflict). A named
    tuple, not a dataclass: a replay builds 100 000 of them, and a tuple is
    made several times faster.
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


# --------------------------------------------------------------------------- engines


class EngineBase:
    """What both engines' connections do alike (DB-API: ``execute`` returns a cursor)."""

    conn: Any

    def close(self) -> None:
        """Close; an open transaction is rolled back by the database."""
        self.conn.close()

    def query(self, sql: str, params: Any = ()) -> list[tuple]:
        """Rows of one statement."""
        return self.conn.execute(sql, params).fetchall()

    def execute_count(self, sql: str, params: Any = ()) -> int:
        """Run one statement; rows changed."""
        return self.conn.execute(sql, params).rowcount


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
        columns = self.read_batch(seq, limit)
        return list(map(Change._make, zip(*(columns[f] for f in Change._fields), strict=True)))

    def read_batch(self, after: int, limit: int) -> dict[str, list]:
        """Own changes with seq > ``after`` as columns (``encode_columns``' input), oldest
        first, at most ``limit``: what the shipper sends, built by the database in one go."""
        if not self.engine.has_table("multiall_changelog"):
            return {name: [] for name in Change._fields}
        return self.engine.fetch_columns(int(after), self.node, int(limit))

    def backlog(self, after: int) -> tuple[dict[str, int], Change | None]:
        """Own changes after ``after``: a count per table, and the oldest of them."""
        if not self.engine.has_table("multiall_changelog"):
            return {}, None
        ph, args = self.engine.ph, (int(after), self.node)
        where = f"WHERE seq > {ph} AND origin = {ph}"
        counts = self.engine.query(
            f"SELECT tbl, count(*) FROM multiall_changelog {where} GROUP BY tbl", args
        )
        oldest = self.changes_after(int(after), 1)
        return {t: int(n) for t, n in counts}, (oldest[0] if oldest else None)

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
    def _check_schema(self, changes: list[Change], origin: str, cache: dict[str, dict]) -> None:
        """Every column and primary key of the batch must match the local table."""
        # A batch has few shapes (table, key columns, row columns): check each once.
        images = [None if row is None else tuple(row) for row in map(itemgetter(4), changes)]
        keys = map(tuple, map(itemgetter(2), changes))
        for table, pk, row in dict.fromkeys(
            zip(map(itemgetter(1), changes), keys, images, strict=True)
        ):
            schema = cache.get(table)
            if schema is None:
                schema = self.engine.table_schema(table)
                if schema is None:
                    raise SchemaMismatch(
                        f"database {self.name}: table {table!r} does not exist here", table
                    )
                schema = cache[table] = {
                    "pk": list(schema["pk"]),
                    "columns": {c["name"] for c in schema["columns"]},
                    "order": [c["name"] for c in schema["columns"]],
                    "types": {c["name"]: c["type"] for c in schema["columns"]},
                }
            if sorted(pk) != sorted(schema["pk"]):
                raise SchemaMismatch(
                    f"database {self.name}: table {table!r}: the peer's primary key is "
                    f"({', '.join(sorted(pk))}), here it is ({', '.join(schema['pk'])})",
                    table,
                )
            if row is not None and set(row) != schema["columns"]:
                extra = sorted(set(row) - schema["columns"])
                missing = sorted(schema["columns"] - set(row))
                column = (extra or missing)[0]
                where = "is missing here" if extra else "is missing on the peer"
                raise SchemaMismatch(
                    f"database {self.name}: table {table!r}: column {column!r} {where} "
                    f"(origin {origin})",
                    table,
                    column,
                )

    def apply_batch(self, origin: str, changes: list[Change], tables: set[str]) -> ApplyResult:
        """Apply a peer's batch in one transaction; see the module docstring for the rules.

        Raises ChangelogError/SchemaMismatch before changing anything when the
        batch names an undeclared table or does not fit the local schema.
        """
        for table in dict.fromkeys(map(itemgetter(1), changes)):
            if table not in tables:
                raise ChangelogError(
                    f"database {self.name}: peer {origin} sent rows for table {table!r}, "
                    "which is not declared; batch refused"
                )
        for other in set(map(itemgetter(5), changes)) - {origin}:
            raise ChangelogError(
                f"database {self.name}: batch from {origin} holds a change of {other}"
            )
        if origin == self.node:
            raise ChangelogError(f"database {self.name}: refusing to apply our own changes")
        if not self.engine.has_table("multiall_rowver"):
            raise ChangelogError(
                f"database {self.name}: capture is not installed here (run db_sync first)"
            )
        schemas: dict[str, dict] = {}
        self._check_schema(changes, origin, schemas)
        for _attempt in range(RACE_ATTEMPTS):
            try:
                return self._apply_once(origin, changes, schemas)
            except ApplyRaced:
                continue  # rolled back: decide again from the versions as they are now
        raise ChangelogError(
            f"database {self.name}: local writes kept changing the rows of {origin}'s batch "
            f"while it was applied ({RACE_ATTEMPTS} attempts); nothing was applied, the peer "
            "ships it again"
        )

    def _apply_once(self, origin: str, changes: list[Change], schemas: dict) -> ApplyResult:
        """One transaction of ``apply_batch``: all of it, or (rolled back) nothing."""
        result = ApplyResult()
        eng = self.engine
        eng.begin()
        try:
            eng.set_applying(True)
            mark = self.watermark(origin)
            result.watermark = mark
            todo = sorted(changes, key=itemgetter(0))  # seq; already sorted off the wire
            todo = todo[bisect_right(list(map(itemgetter(0), todo)), mark) :]
            result.skipped = len(changes) - len(todo)
            if todo:
                apply_staged(eng, todo, schemas, result)
                result.watermark = todo[-1].seq
                eng.set_watermark(origin, result.watermark)
                wall, counter, _origin = hlc_parts(max(map(itemgetter(6), todo)))
                eng.merge_clock(wall, counter)
            eng.set_applying(False)
            eng.commit()
        except BaseException:
            eng.rollback()
            raise
        return result


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


def encode_batch(changes: list[Change]) -> bytes:
    """Compact wire form of a batch (msgpack); the format is in ``_changelog_batch.py``."""
    from ._changelog_batch import encode_batch as encode

    return encode(changes)


def encode_columns(columns: dict[str, list]) -> bytes:
    """Wire form of a batch read by ``DbHandle.read_batch``."""
    from ._changelog_batch import encode_columns as encode

    return encode(columns)


def decode_batch(data: bytes, tables: set[str]) -> list[Change]:
    """Validate a peer's batch: bad data or an undeclared table is a ChangelogError."""
    from ._changelog_batch import decode_batch as decode

    return decode(data, tables)
