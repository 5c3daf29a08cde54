"""DB-SA capture/apply on a real PostgreSQL 15: the shared cases plus PostgreSQL's own checks.

One throwaway cluster per module (``pg_cluster``); each simulated node gets its
own database in it.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import changelog_cases
import psycopg
import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    ChangelogError,
    open_db,
)
from changelog_cases import SCHEMA, TABLES

from lab.postgres import PgDatabase

_COUNTER = itertools.count(1)


# The shared behaviour tests (tests/changelog_cases.py) run here on PostgreSQL.
# (their fixtures and tests put into this module's namespace, where pytest collects them)
globals().update(
    {name: obj for name, obj in vars(changelog_cases).items() if name.startswith(("test_", "pair"))}
)


class PgBackend:
    """One database per (test, node) in the module's cluster."""

    def __init__(self, pg: PgDatabase) -> None:
        self.pg = pg
        self.password = Path(pg.password_file).read_text().strip()
        self.prefix = f"t{next(_COUNTER)}"

    def connect(self, dsn: str) -> psycopg.Connection:
        return psycopg.connect(dsn, password=self.password, autocommit=True)

    def make(self, node: str, extra: str = "") -> dict:
        name = f"{self.prefix}_{node}"
        with self.connect(self.pg.dsn) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        spec = self.pg.spec(sorted(TABLES))
        spec["dsn"] = self.pg.dsn.replace("dbname=app", f"dbname={name}")
        self.sql(spec, SCHEMA + extra)
        with open_db("app", spec, node) as db:
            db.install_capture(TABLES)
        return spec

    def sql(self, spec: dict, statements: str) -> None:
        with self.connect(spec["dsn"]) as conn:
            conn.execute(statements)

    def rows(self, spec: dict, table: str = "items") -> list[tuple]:
        with self.connect(spec["dsn"]) as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


@pytest.fixture
def backend(pg_cluster: PgDatabase) -> PgBackend:
    return PgBackend(pg_cluster)


def test_install_is_idempotent_and_new_columns_need_no_ddl(backend: PgBackend) -> None:
    spec = backend.make("n1")
    with open_db("app", spec, "n1") as db:
        assert db.capture_plan(TABLES) == []
        assert db.installed_tables() == ["items", "tags"]
        # The generic trigger reads to_jsonb(NEW): a new column is captured as is.
        backend.sql(spec, "ALTER TABLE items ADD COLUMN price real")
        assert db.capture_plan(TABLES) == []
        assert db.capture_plan({"items"}) == ['DROP TRIGGER multiall_capture ON "tags"']
    backend.sql(spec, "INSERT INTO items VALUES (1, 'a', 1, 2.5)")
    with open_db("app", spec, "n1") as db:
        assert db.changes_after(0, 10)[0].row == {"id": 1, "name": "a", "qty": 1, "price": 2.5}


def test_typed_columns_round_trip(backend: PgBackend) -> None:
    extra = (
        "CREATE TABLE events (id uuid PRIMARY KEY, at timestamptz, amount numeric(10,2),"
        " tags text[], doc jsonb, flag boolean);"
    )
    a, b = backend.make("n1", extra), backend.make("n2", extra)
    tables = TABLES | {"events"}
    for spec, node in ((a, "n1"), (b, "n2")):
        with open_db("app", spec, node) as db:
            db.install_capture(tables)
    backend.sql(
        a,
        "INSERT INTO events VALUES ('7f0c6c1e-5f2a-4d7e-9a59-0c1c3b1d2e3f', "
        "'2026-01-02 03:04:05.678+00', 12.50, ARRAY['x','y'], '{\"k\": [1, 2]}', true)",
    )
    with open_db("app", a, "n1") as db:
        changes = db.changes_after(0, 10)
        want = db.table_checksums({"events"})
    with open_db("app", b, "n2") as db:
        assert db.apply_batch("n1", changes, tables).applied == 1
        assert db.table_checksums({"events"}) == want
    assert backend.rows(a, "events") == backend.rows(b, "events")


def test_concurrent_writers_get_seqs_in_commit_order(backend: PgBackend) -> None:
    # A reader must never see seq N+1 committed while N is still in flight.
    spec = backend.make("n1")
    first = backend.connect(spec["dsn"])
    first.autocommit = False
    first.execute("INSERT INTO items VALUES (1, 'slow', 1)")  # holds the clock row
    done = threading.Event()

    def second() -> None:
        backend.sql(spec, "INSERT INTO items VALUES (2, 'fast', 1)")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.5)  # waits for the first writer
    with open_db("app", spec, "n1") as db:
        assert db.changes_after(0, 10) == []
    first.commit()
    thread.join(10)
    with open_db("app", spec, "n1") as db:
        assert [(c.seq, c.pk["id"]) for c in db.changes_after(0, 10)] == [(1, 1), (2, 2)]
    first.close()


def test_a_version_from_a_later_transaction_sorts_after_the_one_it_replaces(
    backend: PgBackend,
) -> None:
    # The clock row keeps only each transaction's first HLC; the transaction's later
    # captures count on in a local setting. So the next transaction may start below a
    # row's version: its new version must still sort after it (LWW compares per row).
    spec = backend.make("n1")
    # an hour ahead: every capture of the test falls in the same (future) millisecond
    backend.sql(
        spec,
        "UPDATE multiall_clock SET wall = (extract(epoch FROM now()) * 1000)::bigint + 3600000",
    )
    backend.sql(spec, "BEGIN; INSERT INTO items VALUES (1, 'a', 1); INSERT INTO items "
                      "VALUES (2, 'b', 1); UPDATE items SET qty = 2 WHERE id = 2; COMMIT;")  # fmt: skip
    backend.sql(spec, "UPDATE items SET qty = 3 WHERE id = 2")
    with open_db("app", spec, "n1") as db:
        changes = db.changes_after(0, 10)
    assert [c.prev for c in changes] == [None, None, changes[1].hlc, changes[2].hlc]
    assert all(c.hlc > c.prev for c in changes if c.prev)
    with backend.connect(spec["dsn"]) as conn:
        versions = dict(conn.execute("SELECT pk->>'id', hlc FROM multiall_rowver").fetchall())
    assert versions == {"1": changes[0].hlc, "2": changes[3].hlc}


def test_password_file_must_be_private(backend: PgBackend, tmp_path: Path) -> None:
    spec = backend.make("n1")
    loose = tmp_path / "loose.pass"
    loose.write_text(backend.password)
    os.chmod(loose, 0o644)
    with pytest.raises(ChangelogError, match=r"mode 0644.*chmod 0600"):
        open_db("app", {**spec, "password_file": str(loose)}, "n1")
    with pytest.raises(ChangelogError, match="cannot connect"):
        open_db("app", {**spec, "password_file": None}, "n1")


def test_a_local_write_committed_during_an_apply_is_not_overwritten(
    backend: PgBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # READ COMMITTED: the apply decides from the versions it read, then writes. A local
    # write that commits in between is newer than the peer's change; writing the peer's
    # row over it anyway left this node with the older value while every peer took the
    # newer one (seen once under random kills and partitions).
    a, b = backend.make("n1"), backend.make("n2")
    backend.sql(a, "INSERT INTO items VALUES (1, 'from-n1', 1)")
    with open_db("app", a, "n1") as db:
        remote = db.changes_after(0, 10)
    read, go = threading.Event(), threading.Event()
    with open_db("app", b, "n2") as db:
        staged_hot = db.engine.staged_hot
        calls = []

        def paused(*args):
            hot = staged_hot(*args)
            calls.append(hot)
            if len(calls) == 1:  # only the first attempt waits for the local write
                read.set()
                go.wait(10)
            return hot

        monkeypatch.setattr(db.engine, "staged_hot", paused)
        errors: list[BaseException] = []

        def apply() -> None:
            try:
                db.apply_batch("n1", remote, TABLES)
            except BaseException as exc:  # reported below, in the test thread
                errors.append(exc)

        thread = threading.Thread(target=apply)
        thread.start()
        assert read.wait(10)
        backend.sql(b, "INSERT INTO items VALUES (1, 'from-n2-later', 2)")
        go.set()
        thread.join(20)
        assert not errors, errors
        local = db.changes_after(0, 10)
    assert backend.rows(b) == [(1, "from-n2-later", 2)]
    assert len(calls) == 2, "the apply noticed the race and decided again"
    # n2's write reaches n1 and wins there too: both nodes end equal.
    with open_db("app", a, "n1") as db:
        db.apply_batch("n2", local, TABLES)
    assert backend.rows(a) == backend.rows(b)
