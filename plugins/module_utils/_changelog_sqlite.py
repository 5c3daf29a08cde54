# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite side of DB-SA capture/apply (stdlib ``sqlite3``); the shared logic is in changelog.py.

No echo: the triggers have ``WHEN multiall_clock.applying = 0``; ``apply_batch``
sets the flag to 1 and back to 0 inside its own transaction, so no other
connection ever sees it set (SQLite has one writer at a time) and a crash rolls
it back with the rest. A TEMP flag would be nicer, but a trigger in the main
schema cannot read TEMP tables.

The HLC: ``multiall_clock`` keeps (wall ms, counter); the trigger's UPDATE reads
the old values on the right-hand side, so ``counter`` resets when the wall
clock moved past ``wall`` and counts up otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
from operator import add, itemgetter
from typing import Any

from .changelog import ChangelogError, EngineBase, check_ident

# Wall-clock milliseconds: one julianday() call (SQLite's 'now' has millisecond resolution;
# ROUND undoes the double's error) instead of two strftime() calls and a substr - this
# runs twice for every captured row.
NOW_MS = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"

TABLES_DDL = {
    "multiall_changelog": (
        "CREATE TABLE multiall_changelog (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "tbl TEXT NOT NULL, pk TEXT NOT NULL, op TEXT NOT NULL, row TEXT, "
        "origin TEXT NOT NULL, hlc TEXT NOT NULL, prev TEXT)"
    ),
    "multiall_clock": (
        "CREATE TABLE multiall_clock (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "wall INTEGER NOT NULL, counter INTEGER NOT NULL, origin TEXT NOT NULL, "
        "applying INTEGER NOT NULL DEFAULT 0)"
    ),
    "multiall_rowver": (
        "CREATE TABLE multiall_rowver (tbl TEXT NOT NULL, pk TEXT NOT NULL, hlc TEXT NOT NULL, "
        "prev TEXT, deleted INTEGER NOT NULL, PRIMARY KEY (tbl, pk)) WITHOUT ROWID"
    ),
    "multiall_watermarks": (
        "CREATE TABLE multiall_watermarks (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
    ),
    "multiall_conflicts": (
        "CREATE TABLE multiall_conflicts (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "tbl TEXT NOT NULL, pk TEXT NOT NULL, winner_origin TEXT NOT NULL, "
        "winner_hlc TEXT NOT NULL, loser_origin TEXT NOT NULL, loser_hlc TEXT NOT NULL, "
        "loser_op TEXT NOT NULL, loser_row TEXT, "
        "detected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    ),
}
TRIGGER_SUFFIX = {"I": "ins", "U": "upd", "D": "del"}
ROW = itemgetter(4)  # the row image of a Change


def q(name: str) -> str:
    """Quote an identifier (already checked by check_ident)."""
    return '"' + name.replace('"', '""') + '"'


def _json_obj(cols: list[str], alias: str) -> str:
    return "json_object(" + ", ".join(f"'{c}', {alias}.{q(c)}" for c in cols) + ")"


def _log_stmts(table: str, op: str, pk_expr: str, row_expr: str, cond: str = "") -> str:
    """Statements that log one change: bump the clock, append, record the row version.

    ``cond`` (SQL, e.g. "the key changed") guards all three statements.
    """
    deleted = 1 if op == "D" else 0
    cond = f" AND ({cond})" if cond else ""
    return (
        f"UPDATE multiall_clock SET counter = CASE WHEN {NOW_MS} > wall THEN 0 "
        f"ELSE counter + 1 END, wall = MAX(wall, {NOW_MS}) WHERE id = 1{cond}; "
        "INSERT INTO multiall_changelog (tbl, pk, op, row, origin, hlc, prev) "
        f"SELECT '{table}', {pk_expr}, '{op}', {row_expr}, c.origin, "
        "printf('%013d-%06d-%s', c.wall, c.counter, c.origin), "
        f"(SELECT v.hlc FROM multiall_rowver v WHERE v.tbl = '{table}' AND v.pk = {pk_expr}) "
        f"FROM multiall_clock c WHERE c.id = 1{cond}; "
        "INSERT INTO multiall_rowver (tbl, pk, hlc, prev, deleted) "
        f"SELECT tbl, pk, hlc, prev, {deleted} FROM multiall_changelog "
        f"WHERE seq = last_insert_rowid(){cond} "
        "ON CONFLICT (tbl, pk) DO UPDATE SET hlc = excluded.hlc, prev = excluded.prev, "
        "deleted = excluded.deleted; "
    )


def trigger_ddl(table: str, cols: list[str], pk: list[str]) -> dict[str, str]:
    """CREATE TRIGGER text per trigger name for ``table`` (columns baked in at install)."""
    when = "WHEN (SELECT applying FROM multiall_clock WHERE id = 1) = 0"
    new_pk, old_pk = _json_obj(pk, "NEW"), _json_obj(pk, "OLD")
    new_row = _json_obj(cols, "NEW")
    pk_changed = " OR ".join(f"OLD.{q(c)} IS NOT NEW.{q(c)}" for c in pk)
    name = {op: f"multiall_{table}_{sfx}" for op, sfx in TRIGGER_SUFFIX.items()}
    # An update that changes the primary key is a delete of the old key and a
    # write of the new one, so peers never keep the old row.
    upd_delete = _log_stmts(table, "D", old_pk, "NULL", pk_changed)
    return {
        name["I"]: (
            f"CREATE TRIGGER {name['I']} AFTER INSERT ON {q(table)} {when} BEGIN "
            + _log_stmts(table, "I", new_pk, new_row)
            + "END"
        ),
        name["U"]: (
            f"CREATE TRIGGER {name['U']} AFTER UPDATE ON {q(table)} {when} BEGIN "
            + upd_delete
            + _log_stmts(table, "U", new_pk, new_row)
            + "END"
        ),
        name["D"]: (
            f"CREATE TRIGGER {name['D']} AFTER DELETE ON {q(table)} {when} BEGIN "
            + _log_stmts(table, "D", old_pk, "NULL")
            + "END"
        ),
    }


class SqliteEngine(EngineBase):
    """Connection and SQL dialect for one SQLite database file."""

    ph = "?"

    def __init__(self, name: str, spec: dict) -> None:
        self.name = name
        path = spec.get("path")
        if not path:
            raise ChangelogError(f"database {name}: an sqlite database needs 'path'")
        if not os.path.exists(path):
            raise ChangelogError(f"database {name}: {path} does not exist")
        self.path = path
        try:
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE in begin())
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise ChangelogError(f"database {name}: cannot open {path}: {exc}") from None

    # ---- generic access
    @staticmethod
    def load_json(value: Any) -> Any:
        """JSON columns are TEXT in SQLite."""
        return None if value is None else json.loads(value)

    def fetch_columns(self, seq: int, origin: str, limit: int) -> dict[str, list]:
        """Changelog rows after SEQ as columns: SQLite builds one JSON object for the
        whole batch, so Python parses it in one C call (no per-change work at all)."""
        (text,) = self.conn.execute(
            "SELECT json_object('seq', json_group_array(seq), 'table', json_group_array(tbl), "
            "'pk', json_group_array(json(pk)), 'op', json_group_array(op), "
            "'row', json_group_array(json(row)), 'origin', json_group_array(origin), "
            "'hlc', json_group_array(hlc), 'prev', json_group_array(prev)) "
            "FROM (SELECT * FROM multiall_changelog WHERE seq > ? AND origin = ? "
            "ORDER BY seq LIMIT ?)",
            (seq, origin, limit),
        ).fetchone()
        return json.loads(text)

    def has_table(self, table: str) -> bool:
        """Does a table of that name exist?"""
        return bool(
            self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        )

    def table_schema(self, table: str) -> dict | None:
        """Columns in table order and the primary key in key order; None if no table."""
        if not self.has_table(table):
            return None
        info = self.query(f"PRAGMA table_info({q(table)})")
        columns = [{"name": r[1], "type": (r[2] or "").upper()} for r in info]
        pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        return {"columns": columns, "pk": pk}

    def rows(self, table: str) -> Any:
        """Every row as a dict (for checksums)."""
        cur = self.conn.execute(f"SELECT * FROM {q(table)}")
        names = [d[0] for d in cur.description]
        for r in cur:
            yield dict(zip(names, r, strict=True))

    def max_seq(self) -> int:
        """AUTOINCREMENT keeps the highest seq in sqlite_sequence even after prune."""
        if not self.has_table("sqlite_sequence"):
            return 0
        rows = self.query("SELECT seq FROM sqlite_sequence WHERE name = 'multiall_changelog'")
        return int(rows[0][0]) if rows else 0

    # ---- DDL
    def _triggers(self) -> dict[str, tuple[str, str]]:
        rows = self.query(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE 'multiall\\_%' ESCAPE '\\'"
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def captured_tables(self) -> list[str]:
        """Tables with at least one DB-SA trigger."""
        return sorted({tbl for tbl, _sql in self._triggers().values()})

    def capture_plan(self, tables: list[str], node: str) -> list[str]:
        """DDL that brings the database to: meta tables, clock origin, current triggers."""
        plan = [TABLES_DDL[t] for t in TABLES_DDL if not self.has_table(t)]
        if not self.has_table("multiall_clock"):
            plan.append(
                f"INSERT INTO multiall_clock (id, wall, counter, origin) VALUES (1, 0, 0, '{node}')"
            )
        elif not self.query("SELECT 1 FROM multiall_clock WHERE id = 1 AND origin = ?", (node,)):
            plan.append(f"UPDATE multiall_clock SET origin = '{node}' WHERE id = 1")
        existing = self._triggers()
        wanted: dict[str, str] = {}
        for table in tables:
            schema = self.table_schema(table)
            if schema is None:  # checked by DbHandle._tables; dropped since?
                raise ChangelogError(f"table {table!r} does not exist (dropped meanwhile?)")
            cols = [check_ident(c["name"], "column") for c in schema["columns"]]
            blobs = [c["name"] for c in schema["columns"] if "BLOB" in c["type"]]
            if blobs:
                raise ChangelogError(
                    f"database {self.name}: table {table!r}: BLOB column {blobs[0]!r} cannot be "
                    "carried in a JSON row image"
                )
            wanted.update(trigger_ddl(table, cols, schema["pk"]))
        for name in sorted(existing):
            if name not in wanted:
                plan.append(f"DROP TRIGGER {name}")
        for name, sql in wanted.items():
            if name in existing and existing[name][1] == sql:
                continue
            if name in existing:
                plan.append(f"DROP TRIGGER {name}")
            plan.append(sql)
        return plan

    def remove_plan(self, tables: list[str]) -> list[str]:
        """Drop the triggers of ``tables``; drop the DB-SA tables once no trigger and no
        unshipped change remain (nothing queued is ever dropped)."""
        existing = self._triggers()
        plan = [f"DROP TRIGGER {n}" for n in sorted(existing) if existing[n][0] in tables]
        left = {n for n in existing if existing[n][0] not in tables}
        pending = self.has_table("multiall_changelog") and self.query(
            "SELECT 1 FROM multiall_changelog LIMIT 1"
        )
        if not left and not pending:
            plan += [f"DROP TABLE {t}" for t in TABLES_DDL if self.has_table(t)]
        return plan

    def run_ddl(self, plan: list[str]) -> None:
        """All of a plan in one transaction: a failure leaves the database as it was."""
        self.begin()
        try:
            for sql in plan:
                self.conn.execute(sql)
            self.commit()
        except sqlite3.Error as exc:
            self.rollback()
            raise ChangelogError(f"database {self.name}: {exc} (while running: {sql})") from None

    # ---- apply helpers
    def begin(self) -> None:
        """Take the write lock now, so the transaction cannot fail half way on SQLITE_BUSY."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit."""
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back if a transaction is open."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def set_applying(self, on: bool) -> None:
        """Flip the no-echo flag the triggers check (inside the apply transaction)."""
        self.conn.execute("UPDATE multiall_clock SET applying = ? WHERE id = 1", (1 if on else 0,))

    def merge_clock(self, wall: int, counter: int) -> None:
        """HLC receive rule: local clock >= every seen remote timestamp."""
        self.conn.execute(
            "UPDATE multiall_clock SET counter = CASE WHEN ? > wall THEN ? WHEN ? = wall "
            "THEN MAX(counter, ?) ELSE counter END, wall = MAX(wall, ?) WHERE id = 1",
            (wall, counter, wall, counter, wall),
        )

    @staticmethod
    def clock_version() -> str:
        """Nothing else writes while an apply holds BEGIN IMMEDIATE's lock: never moves."""
        return ""

    lock_clock = clock_version

    def set_watermark(self, origin: str, seq: int) -> None:
        """Record the highest applied seq of ``origin``."""
        self.conn.execute(
            "INSERT INTO multiall_watermarks (origin, seq) VALUES (?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq",
            (origin, seq),
        )

    @staticmethod
    def _pk_sql(cols: list[str] | dict) -> str:
        # The same json_object() text the triggers write, so keys compare equal.
        return "json_object(" + ", ".join(f"'{c}', ?" for c in cols) + ")"

    @staticmethod
    def _where(pk_cols: list[str] | dict) -> str:
        return " AND ".join(f"{q(c)} = ?" for c in pk_cols)

    def current_row(self, table: str, pk: dict) -> dict | None:
        """The local row (for the conflict record of a losing local version)."""
        cur = self.conn.execute(
            f"SELECT * FROM {q(table)} WHERE {self._where(pk)}", list(pk.values())
        )
        r = cur.fetchone()
        return None if r is None else dict(zip([d[0] for d in cur.description], r, strict=True))

    # ---- the stage of a batch (see _changelog_bulk.py)
    @staticmethod
    def _stage(table: str) -> str:
        return q(f"multiall_stage_{table}")

    def stage(self, table: str, schema: dict, changes: list) -> None:
        """One TEMP table per batch and table, its columns typed like the table's own.

        The same declared types give the same affinity, so a staged key turns into
        the same ``json_object`` text as the one the triggers wrote. The stage's own
        columns start with ``multiall_``, which no captured column may.
        """
        cols = schema["order"]
        stage = self._stage(table)
        self.conn.execute(f"DROP TABLE IF EXISTS temp.{stage}")
        typed = ", ".join(f"{q(c)} {schema['types'][c]}" for c in cols)
        self.conn.execute(
            f"CREATE TEMP TABLE {stage} (multiall_seq INTEGER PRIMARY KEY, multiall_op TEXT, "
            f"multiall_hlc TEXT, multiall_prev TEXT, {typed})"
        )
        sql = f"INSERT INTO {stage} VALUES ({', '.join(['?'] * (4 + len(cols)))})"
        meta = itemgetter(0, 3, 6, 7)  # seq, op, hlc, prev of a Change
        values = itemgetter(*cols) if len(cols) > 1 else (lambda row: (row[cols[0]],))
        writes = [ch for ch in changes if ch.row is not None]
        # (meta + row values) tuples built by map() in C: this runs for every replayed row
        self.conn.executemany(sql, map(add, map(meta, writes), map(values, map(ROW, writes))))
        if len(writes) < len(changes):
            at = {c: i for i, c in enumerate(cols)}
            deletes = []
            for ch in changes:
                if ch.row is None:
                    image = [None] * len(cols)
                    for name, value in ch.pk.items():
                        image[at[name]] = value
                    deletes.append(meta(ch) + tuple(image))
            self.conn.executemany(sql, deletes)

    def _staged_key(self, pk_cols: list[str], alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return "json_object(" + ", ".join(f"'{c}', {prefix}{q(c)}" for c in pk_cols) + ")"

    def staged_hot(self, table: str, schema: dict) -> list[tuple]:
        """``(seq, hlc, prev, deleted)`` of staged rows whose key has a version here
        (else hlc is None) or appears more than once in the batch.

        Two plain queries: a window function over the stage cost three times both.
        """
        stage, keys = self._stage(table), ", ".join(q(c) for c in schema["pk"])
        hot = {
            r[0]: r
            for r in self.conn.execute(
                f"SELECT s.multiall_seq, v.hlc, v.prev, v.deleted FROM {stage} s "
                "JOIN multiall_rowver v ON v.tbl = ? AND v.pk = "
                f"{self._staged_key(schema['pk'], 's')}",
                (table,),
            )
        }
        for (seq,) in self.conn.execute(
            f"SELECT multiall_seq FROM {stage} WHERE ({keys}) IN "
            f"(SELECT {keys} FROM {stage} GROUP BY {keys} HAVING count(*) > 1)"
        ):
            hot.setdefault(seq, (seq, None, None, None))
        return list(hot.values())

    def unstage(self, table: str, seqs: list[int]) -> None:
        """Drop staged versions that LWW did not make final."""
        self.conn.executemany(
            f"DELETE FROM {self._stage(table)} WHERE multiall_seq = ?", [(s,) for s in seqs]
        )

    def write_staged(self, table: str, schema: dict, delete: bool, first: int, last: int) -> None:
        """Write (or delete) the staged rows with seq in [first, last], in seq order."""
        stage, pk = self._stage(table), schema["pk"]
        keys = ", ".join(q(c) for c in pk)
        if delete:
            self.conn.execute(
                f"DELETE FROM {q(table)} WHERE ({keys}) IN (SELECT {keys} FROM {stage} "
                "WHERE multiall_op = 'D' AND multiall_seq BETWEEN ? AND ?)",
                (first, last),
            )
            return
        names = ", ".join(q(c) for c in schema["order"])
        sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in schema["order"] if c not in pk)
        self.conn.execute(
            f"INSERT INTO {q(table)} ({names}) SELECT {names} FROM {stage} "
            "WHERE multiall_op <> 'D' AND multiall_seq BETWEEN ? AND ? ORDER BY multiall_seq "
            f"ON CONFLICT ({keys}) {f'DO UPDATE SET {sets}' if sets else 'DO NOTHING'}",
            (first, last),
        )

    def version_staged(self, table: str, schema: dict) -> None:
        """Every staged (final) version becomes the row's version here, tombstones too."""
        self.conn.execute(
            "INSERT INTO multiall_rowver (tbl, pk, hlc, prev, deleted) "
            f"SELECT ?, {self._staged_key(schema['pk'])}, multiall_hlc, multiall_prev, "
            f"multiall_op = 'D' FROM {self._stage(table)} WHERE true "
            "ON CONFLICT (tbl, pk) DO UPDATE SET hlc = excluded.hlc, prev = excluded.prev, "
            "deleted = excluded.deleted",
            (table,),
        )

    def unstage_all(self, tables: list[str]) -> None:
        """Drop the batch's stage tables."""
        for table in tables:
            self.conn.execute(f"DROP TABLE IF EXISTS temp.{self._stage(table)}")

    def add_conflict(
        self, table: str, pk: dict, w_origin: str, w_hlc: str, l_origin: str, l_hlc: str,
        l_op: str, l_row: Any,
    ) -> None:  # fmt: skip
        """Keep the losing version visible (never silently dropped)."""
        self.conn.execute(
            "INSERT INTO multiall_conflicts (tbl, pk, winner_origin, winner_hlc, loser_origin, "
            f"loser_hlc, loser_op, loser_row) VALUES (?, {self._pk_sql(pk)}, ?, ?, ?, ?, ?, ?)",
            [table, *pk.values(), w_origin, w_hlc, l_origin, l_hlc, l_op,
             None if l_row is None else json.dumps(l_row, ensure_ascii=False)],
        )  # fmt: skip
