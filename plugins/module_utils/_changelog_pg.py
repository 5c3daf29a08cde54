# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL side of DB-SA capture/apply (psycopg 3); the shared logic is in changelog.py.

One generic trigger function ``multiall_capture()`` serves every declared table
(the primary-key columns are its trigger arguments, the row image is
``to_jsonb(NEW)``), so adding a column needs no new DDL. ``multiall_log()``
bumps the one-row ``multiall_clock`` and appends to ``multiall_changelog``.

Why the clock row matters beyond the HLC: its row lock is held by a capturing
transaction until it commits, so capturing transactions take their seqs in
commit order. Without that, a reader could see seq 6 committed while seq 5 is
still in flight, ack 6 and skip 5 forever. The price is that writers to
declared tables serialise from their first captured write to commit (as in
SQLite anyway).

The clock row is updated once per transaction, not per row: updating one row
N times in a transaction walks an ever longer chain of its versions (N**2; a
100 000-row insert took minutes). Later captures of the same transaction keep
the clock in a transaction-local setting (``multiall.hlc``). Across
transactions the row then holds the first HLC of the last one, so a new HLC
is also lifted above the row's own previous version (``prev``): per row —
what LWW compares — HLCs always grow.

No echo: ``apply_batch`` runs ``set_config('multiall.applying', 'on', true)``
(= ``SET LOCAL``) and the trigger function returns early when it is set; it
ends with the transaction, so no other session ever sees it.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

from .changelog import ChangelogError, EngineBase, read_password_file

try:
    import psycopg

    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover - reported as a clear error by PgEngine
    HAS_PSYCOPG = False

TABLES_DDL = {
    "multiall_changelog": (
        "CREATE TABLE multiall_changelog (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "tbl text NOT NULL, pk jsonb NOT NULL, op text NOT NULL, row jsonb, "
        "origin text NOT NULL, hlc text NOT NULL, prev text)"
    ),
    "multiall_clock": (
        "CREATE TABLE multiall_clock (id int PRIMARY KEY CHECK (id = 1), wall bigint NOT NULL, "
        "counter int NOT NULL, origin text NOT NULL)"
    ),
    "multiall_rowver": (
        "CREATE TABLE multiall_rowver (tbl text NOT NULL, pk jsonb NOT NULL, hlc text NOT NULL, "
        "prev text, deleted boolean NOT NULL, PRIMARY KEY (tbl, pk))"
    ),
    "multiall_watermarks": (
        "CREATE TABLE multiall_watermarks (origin text PRIMARY KEY, seq bigint NOT NULL)"
    ),
    "multiall_conflicts": (
        "CREATE TABLE multiall_conflicts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "tbl text NOT NULL, pk jsonb NOT NULL, winner_origin text NOT NULL, "
        "winner_hlc text NOT NULL, loser_origin text NOT NULL, loser_hlc text NOT NULL, "
        "loser_op text NOT NULL, loser_row jsonb, detected_at timestamptz NOT NULL DEFAULT now())"
    ),
}

LOG_BODY = """
DECLARE
  now_ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
  st text := current_setting('multiall.hlc', true);
  w bigint;
  n int;
  org text;
  h text;
  p text;
BEGIN
  IF st IS NULL OR st = '' THEN
    -- first capture of this transaction: advance the clock row and keep its lock to commit
    UPDATE multiall_clock SET counter = CASE WHEN now_ms > wall THEN 0 ELSE counter + 1 END,
      wall = greatest(wall, now_ms) WHERE id = 1 RETURNING wall, counter, origin INTO w, n, org;
  ELSE
    w := split_part(st, ' ', 1)::bigint;
    n := split_part(st, ' ', 2)::int;
    org := split_part(st, ' ', 3);
    IF now_ms > w THEN
      w := now_ms;
      n := 0;
    ELSE
      n := n + 1;
    END IF;
  END IF;
  h := lpad(w::text, 13, '0') || '-' || lpad(n::text, 6, '0') || '-' || org;
  -- One statement records the new version and returns the one it replaced (prev):
  -- ON CONFLICT finds the row through the primary key index whatever plan is cached.
  INSERT INTO multiall_rowver AS v (tbl, pk, hlc, prev, deleted) VALUES (t, k, h, NULL, o = 'D')
    ON CONFLICT (tbl, pk) DO UPDATE SET prev = v.hlc, hlc = EXCLUDED.hlc,
    deleted = EXCLUDED.deleted RETURNING v.prev INTO p;
  IF p IS NOT NULL AND h <= p THEN
    -- the row's version came from a faster clock: sort just after it (rare; dynamic SQL
    -- is planned per call, a cached generic plan could scan multiall_rowver whole)
    w := split_part(p, '-', 1)::bigint;
    n := split_part(p, '-', 2)::int + 1;
    h := lpad(w::text, 13, '0') || '-' || lpad(n::text, 6, '0') || '-' || org;
    EXECUTE 'UPDATE multiall_rowver SET hlc = $3 WHERE tbl = $1 AND pk = $2' USING t, k, h;
  END IF;
  PERFORM set_config('multiall.hlc', w || ' ' || n || ' ' || org, true);
  INSERT INTO multiall_changelog (tbl, pk, op, row, origin, hlc, prev)
    VALUES (t, k, o, r, org, h, p);
END
"""

CAPTURE_BODY = """
DECLARE
  old_pk jsonb;
  new_pk jsonb;
  new_row jsonb;
  img jsonb;
BEGIN
  IF current_setting('multiall.applying', true) = 'on' THEN
    RETURN NULL;
  END IF;
  -- keys built by plain expressions: a SELECT over unnest(TG_ARGV) ran a query per row
  IF TG_OP <> 'INSERT' THEN
    img := to_jsonb(OLD);
    old_pk := '{}';
    FOR i IN 0 .. TG_NARGS - 1 LOOP
      old_pk := old_pk || jsonb_build_object(TG_ARGV[i], img -> TG_ARGV[i]);
    END LOOP;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_row := to_jsonb(NEW);
    new_pk := '{}';
    FOR i IN 0 .. TG_NARGS - 1 LOOP
      new_pk := new_pk || jsonb_build_object(TG_ARGV[i], new_row -> TG_ARGV[i]);
    END LOOP;
  END IF;
  -- a key change is a delete of the old key and a write of the new one
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_pk IS DISTINCT FROM new_pk) THEN
    PERFORM multiall_log(TG_TABLE_NAME, old_pk, 'D', NULL);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM multiall_log(TG_TABLE_NAME, new_pk,
      CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, new_row);
  END IF;
  RETURN NULL;
END
"""

FUNCTIONS = {
    "multiall_log": (
        "CREATE OR REPLACE FUNCTION multiall_log(t text, k jsonb, o text, r jsonb) "
        f"RETURNS void LANGUAGE plpgsql AS $f${LOG_BODY}$f$",
        LOG_BODY,
    ),
    "multiall_capture": (
        "CREATE OR REPLACE FUNCTION multiall_capture() RETURNS trigger LANGUAGE plpgsql "
        f"AS $f${CAPTURE_BODY}$f$",
        CAPTURE_BODY,
    ),
}
TRIGGER = "multiall_capture"
STAGED = itemgetter(0, 3, 6, 7, 2, 4)  # seq, op, hlc, prev, pk, row of a Change


def q(name: str) -> str:
    """Quote an identifier (already checked by check_ident)."""
    return '"' + name.replace('"', '""') + '"'


class PgEngine(EngineBase):
    """Connection and SQL dialect for one PostgreSQL database."""

    ph = "%s"

    def __init__(self, name: str, spec: dict) -> None:
        self.name = name
        if not HAS_PSYCOPG:
            raise ChangelogError(
                f"database {name}: PostgreSQL needs psycopg 3 (Debian: python3-psycopg)"
            )
        dsn = spec.get("dsn")
        if not dsn:
            raise ChangelogError(f"database {name}: a postgresql database needs 'dsn'")
        kwargs: dict[str, Any] = {}
        if spec.get("password_file"):
            kwargs["password"] = read_password_file(spec["password_file"], name)
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10, **kwargs)
        except psycopg.Error as exc:
            raise ChangelogError(f"database {name}: cannot connect ({dsn}): {exc}") from None

    # ---- generic access
    @staticmethod
    def load_json(value: Any) -> Any:
        """psycopg already turns jsonb into Python values."""
        return json.loads(value) if isinstance(value, str) else value

    def fetch_columns(self, seq: int, origin: str, limit: int) -> dict[str, list]:
        """Changelog rows after SEQ as columns, built by the server as one JSON text
        (parsed in one C call here, instead of a jsonb conversion per value)."""
        (text,) = self.query(
            "SELECT json_build_object("
            "'seq', coalesce(json_agg(seq ORDER BY seq), '[]'), "
            "'table', coalesce(json_agg(tbl ORDER BY seq), '[]'), "
            "'pk', coalesce(json_agg(pk ORDER BY seq), '[]'), "
            "'op', coalesce(json_agg(op ORDER BY seq), '[]'), "
            "'row', coalesce(json_agg(row ORDER BY seq), '[]'), "
            "'origin', coalesce(json_agg(origin ORDER BY seq), '[]'), "
            "'hlc', coalesce(json_agg(hlc ORDER BY seq), '[]'), "
            "'prev', coalesce(json_agg(prev ORDER BY seq), '[]')"
            ")::text FROM (SELECT * FROM multiall_changelog WHERE seq > %s AND origin = %s "
            "ORDER BY seq LIMIT %s) c",
            (seq, origin, limit),
        )[0]
        return json.loads(text)

    def has_table(self, table: str) -> bool:
        """Does a table of that name exist in the search path?"""
        return self.query("SELECT to_regclass(%s) IS NOT NULL", (q(table),))[0][0]

    def table_schema(self, table: str) -> dict | None:
        """Columns in table order and the primary key in key order; None if no table."""
        if not self.has_table(table):
            return None
        cols = self.query(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (q(table),),
        )
        pk = self.query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (q(table),),
        )
        return {"columns": [{"name": c, "type": t} for c, t in cols], "pk": [r[0] for r in pk]}

    def rows(self, table: str) -> Any:
        """Every row as a dict (for checksums), in PostgreSQL's own JSON form."""
        with self.conn.cursor(name=None) as cur:
            cur.execute(f"SELECT to_jsonb(t) FROM {q(table)} t")
            for (row,) in cur:
                yield row

    def max_seq(self) -> int:
        """The identity sequence's last value: never reused after prune (may count rollbacks)."""
        if not self.has_table("multiall_changelog"):
            return 0
        seq = self.query("SELECT pg_get_serial_sequence('multiall_changelog', 'seq')")[0][0]
        last, called = self.query(f"SELECT last_value, is_called FROM {seq}")[0]
        return int(last) if called else 0

    # ---- DDL
    def _triggers(self) -> dict[str, list[str]]:
        rows = self.query(
            "SELECT c.relname, t.tgargs FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = %s AND c.relnamespace = to_regnamespace(current_schema())",
            (TRIGGER,),
        )
        return {r[0]: [a.decode() for a in bytes(r[1]).split(b"\0")[:-1]] for r in rows}

    def captured_tables(self) -> list[str]:
        """Tables with the DB-SA trigger."""
        return sorted(self._triggers())

    def capture_plan(self, tables: list[str], node: str) -> list[str]:
        """DDL that brings the database to: meta tables, functions, clock origin, triggers."""
        plan = [TABLES_DDL[t] for t in TABLES_DDL if not self.has_table(t)]
        if not self.has_table("multiall_clock"):
            plan.append(
                f"INSERT INTO multiall_clock (id, wall, counter, origin) VALUES (1, 0, 0, '{node}')"
            )
        elif not self.query("SELECT 1 FROM multiall_clock WHERE id = 1 AND origin = %s", (node,)):
            plan.append(f"UPDATE multiall_clock SET origin = '{node}' WHERE id = 1")
        for fname, (ddl, body) in FUNCTIONS.items():
            src = self.query(
                "SELECT prosrc FROM pg_proc WHERE proname = %s "
                "AND pronamespace = to_regnamespace(current_schema())",
                (fname,),
            )
            if not src or src[0][0] != body:
                plan.append(ddl)
        existing = self._triggers()
        for table in sorted(existing):
            if table not in tables:
                plan.append(f"DROP TRIGGER {TRIGGER} ON {q(table)}")
        for table in tables:
            schema = self.table_schema(table)
            if schema is None:  # checked by DbHandle._tables; dropped since?
                raise ChangelogError(f"table {table!r} does not exist (dropped meanwhile?)")
            if existing.get(table) == schema["pk"]:
                continue
            if table in existing:
                plan.append(f"DROP TRIGGER {TRIGGER} ON {q(table)}")
            args = ", ".join(f"'{c}'" for c in schema["pk"])
            plan.append(
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {q(table)} "
                f"FOR EACH ROW EXECUTE FUNCTION multiall_capture({args})"
            )
        return plan

    def remove_plan(self, tables: list[str]) -> list[str]:
        """Drop the triggers of ``tables``; drop the DB-SA objects once no trigger and no
        unshipped change remain (nothing queued is ever dropped)."""
        existing = self._triggers()
        plan = [f"DROP TRIGGER {TRIGGER} ON {q(t)}" for t in sorted(existing) if t in tables]
        left = set(existing) - set(tables)
        pending = self.has_table("multiall_changelog") and self.query(
            "SELECT 1 FROM multiall_changelog LIMIT 1"
        )
        if not left and not pending:
            if self.query("SELECT 1 FROM pg_proc WHERE proname = 'multiall_capture'"):
                plan += ["DROP FUNCTION multiall_capture()"]
            if self.query("SELECT 1 FROM pg_proc WHERE proname = 'multiall_log'"):
                plan += ["DROP FUNCTION multiall_log(text, jsonb, text, jsonb)"]
            plan += [f"DROP TABLE {t}" for t in TABLES_DDL if self.has_table(t)]
        return plan

    def run_ddl(self, plan: list[str]) -> None:
        """All of a plan in one transaction (PostgreSQL DDL is transactional)."""
        try:
            with self.conn.transaction():
                for sql in plan:
                    self.conn.execute(sql)
        except psycopg.Error as exc:
            raise ChangelogError(f"database {self.name}: {exc} (while running: {sql})") from None

    # ---- apply helpers
    def begin(self) -> None:
        """Start the apply transaction."""
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        """Commit."""
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back if a transaction is open (also after a failed statement)."""
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def set_applying(self, on: bool) -> None:
        """``SET LOCAL multiall.applying``: the trigger skips while it is 'on'."""
        self.conn.execute(
            "SELECT set_config('multiall.applying', %s, true)", ("on" if on else "off",)
        )

    def merge_clock(self, wall: int, counter: int) -> None:
        """HLC receive rule: local clock >= every seen remote timestamp."""
        self.conn.execute(
            "UPDATE multiall_clock SET counter = CASE WHEN %(w)s > wall THEN %(c)s "
            "WHEN %(w)s = wall THEN greatest(counter, %(c)s) ELSE counter END, "
            "wall = greatest(wall, %(w)s) WHERE id = 1",
            {"w": wall, "c": counter},
        )

    def clock_version(self) -> str:
        """The clock row's version (``xmin``): every capturing transaction and every
        apply updates the row, so another value means one of them committed since."""
        return self.query("SELECT xmin::text FROM multiall_clock WHERE id = 1")[0][0]

    def lock_clock(self) -> str:
        """Lock the clock row to commit (waits for capturing transactions in flight; no
        other can commit a version until this one does); its version (``xmin``)."""
        return self.query("SELECT xmin::text FROM multiall_clock WHERE id = 1 FOR UPDATE")[0][0]

    def set_watermark(self, origin: str, seq: int) -> None:
        """Record the highest applied seq of ``origin``."""
        self.conn.execute(
            "INSERT INTO multiall_watermarks (origin, seq) VALUES (%s, %s) "
            "ON CONFLICT (origin) DO UPDATE SET seq = EXCLUDED.seq",
            (origin, seq),
        )

    @staticmethod
    def _match(pk_cols: list[str] | dict) -> str:
        # The key values are typed by the table itself (jsonb_populate_record), so a
        # text, uuid or timestamp key compares like the application's own queries.
        return " AND ".join(f"t.{q(c)} = k.{q(c)}" for c in pk_cols)

    def current_row(self, table: str, pk: dict) -> dict | None:
        """The local row (for the conflict record of a losing local version)."""
        rows = self.query(
            f"SELECT to_jsonb(t) FROM {q(table)} t, "
            f"jsonb_populate_record(NULL::{q(table)}, %s::jsonb) k WHERE {self._match(pk)}",
            (json.dumps(pk),),
        )
        return rows[0][0] if rows else None

    # ---- the stage of a batch (see _changelog_bulk.py)
    def stage(self, table: str, schema: dict, changes: list) -> None:
        """The batch's changes of TABLE into the session's TEMP stage, in one statement.

        The whole table's changes travel as one JSON text parameter (one C call to
        build); ON COMMIT DELETE ROWS empties the stage at the end of every batch.
        """
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS multiall_stage (seq bigint PRIMARY KEY, "
            "tbl text NOT NULL, op text NOT NULL, hlc text NOT NULL, prev text, "
            "pk jsonb NOT NULL, row jsonb) ON COMMIT DELETE ROWS"
        )
        self.conn.execute(
            "INSERT INTO multiall_stage (seq, tbl, op, hlc, prev, pk, row) "
            "SELECT (e->>0)::bigint, %s, e->>1, e->>2, e->>3, e->4, NULLIF(e->5, 'null') "
            "FROM jsonb_array_elements(%s::jsonb) e",
            (table, json.dumps(list(map(STAGED, changes)))),
        )

    def staged_hot(self, table: str, schema: dict) -> list[tuple]:
        """``(seq, hlc, prev, deleted)`` of staged rows whose key has a version here
        (else hlc is None) or appears more than once in the batch."""
        hot = {r[0]: r for r in self._staged_rowver(table, "s.seq, v.hlc, v.prev, v.deleted")}
        for (seq,) in self.query(
            "SELECT seq FROM multiall_stage WHERE tbl = %(t)s AND pk IN (SELECT pk FROM "
            "multiall_stage WHERE tbl = %(t)s GROUP BY pk HAVING count(*) > 1)",
            {"t": table},
        ):
            hot.setdefault(seq, (seq, None, None, None))
        return list(hot.values())

    def _staged_rowver(self, table: str, columns: str) -> list[tuple]:
        return self.query(
            f"SELECT {columns} FROM multiall_stage s "
            "JOIN multiall_rowver v ON v.tbl = s.tbl AND v.pk = s.pk WHERE s.tbl = %s",
            (table,),
        )

    def staged_versions(self, table: str) -> list[tuple[int, str]]:
        """``(seq, hlc)`` of the staged rows whose key has a version here now."""
        return self._staged_rowver(table, "s.seq, v.hlc")

    def unstage(self, table: str, seqs: list[int]) -> None:
        """Drop staged versions that LWW did not make final."""
        self.conn.execute("DELETE FROM multiall_stage WHERE seq = ANY (%s)", (seqs,))

    def write_staged(self, table: str, schema: dict, delete: bool, first: int, last: int) -> None:
        """Write (or delete) the staged rows with seq in [first, last], typed by the table."""
        pk, span = schema["pk"], (table, first, last)
        where = "s.tbl = %s AND s.seq BETWEEN %s AND %s"
        if delete:
            self.conn.execute(
                f"DELETE FROM {q(table)} t USING multiall_stage s, "
                f"jsonb_populate_record(NULL::{q(table)}, s.pk) k "
                f"WHERE {where} AND s.op = 'D' AND {self._match(pk)}",
                span,
            )
            return
        names = ", ".join(q(c) for c in schema["order"])
        sets = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in schema["order"] if c not in pk)
        self.conn.execute(
            f"INSERT INTO {q(table)} ({names}) SELECT {', '.join(f'r.{q(c)}' for c in schema['order'])} "
            f"FROM multiall_stage s, jsonb_populate_record(NULL::{q(table)}, s.row) r "
            f"WHERE {where} AND s.op <> 'D' ORDER BY s.seq "
            f"ON CONFLICT ({', '.join(q(c) for c in pk)}) "
            f"{f'DO UPDATE SET {sets}' if sets else 'DO NOTHING'}",
            span,
        )

    def version_staged(self, table: str, schema: dict) -> None:
        """Every staged (final) version becomes the row's version here, tombstones too."""
        self.conn.execute(
            "INSERT INTO multiall_rowver (tbl, pk, hlc, prev, deleted) "
            "SELECT tbl, pk, hlc, prev, op = 'D' FROM multiall_stage WHERE tbl = %s "
            "ON CONFLICT (tbl, pk) DO UPDATE SET hlc = EXCLUDED.hlc, prev = EXCLUDED.prev, "
            "deleted = EXCLUDED.deleted",
            (table,),
        )

    def unstage_all(self, tables: list[str]) -> None:
        """Nothing to do: the stage empties itself at commit (ON COMMIT DELETE ROWS)."""

    def add_conflict(
        self, table: str, pk: dict, w_origin: str, w_hlc: str, l_origin: str, l_hlc: str,
        l_op: str, l_row: Any,
    ) -> None:  # fmt: skip
        """Keep the losing version visible (never silently dropped)."""
        self.conn.execute(
            "INSERT INTO multiall_conflicts (tbl, pk, winner_origin, winner_hlc, loser_origin, "
            "loser_hlc, loser_op, loser_row) VALUES (%s, %s::jsonb, %s, %s, %s, %s, %s, %s::jsonb)",
            (table, json.dumps(pk), w_origin, w_hlc, l_origin, l_hlc, l_op,
             None if l_row is None else json.dumps(l_row)),
        )  # fmt: skip
