"""DB-SA capture/apply on real SQLite files: the shared cases plus SQLite's own DDL checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import changelog_cases
import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    ChangelogError,
    open_db,
)
from changelog_cases import SCHEMA, TABLES

# The shared behaviour tests (tests/changelog_cases.py) run here on SQLite.
# (their fixtures and tests put into this module's namespace, where pytest collects them)
globals().update(
    {name: obj for name, obj in vars(changelog_cases).items() if name.startswith(("test_", "pair"))}
)


class SqliteBackend:
    """Databases are files in the test's temp dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def make(self, node: str, extra: str = "") -> dict:
        path = self.tmp_path / f"{node}.db"
        conn = sqlite3.connect(path)
        conn.executescript(SCHEMA + extra)
        conn.close()
        spec = {"engine": "sqlite", "path": str(path), "tables": sorted(TABLES)}
        with open_db("app", spec, node) as db:
            db.install_capture(TABLES)
        return spec

    def sql(self, spec: dict, statements: str) -> None:
        conn = sqlite3.connect(spec["path"])
        conn.executescript(statements)
        conn.commit()
        conn.close()

    def rows(self, spec: dict, table: str = "items") -> list[tuple]:
        conn = sqlite3.connect(spec["path"])
        out = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        conn.close()
        return out


@pytest.fixture
def backend(tmp_path: Path) -> SqliteBackend:
    return SqliteBackend(tmp_path)


def test_install_is_idempotent_and_plan_shows_ddl(backend: SqliteBackend) -> None:
    spec = backend.make("n1")
    with open_db("app", spec, "n1") as db:
        assert db.capture_plan(TABLES) == []
        assert db.install_capture(TABLES) == []
        assert db.installed_tables() == ["items", "tags"]
        # A new column makes the triggers stale: the plan recreates them.
        backend.sql(spec, "ALTER TABLE items ADD COLUMN price REAL")
        plan = db.capture_plan(TABLES)
        assert any("CREATE TRIGGER multiall_items_ins" in s and '"price"' in s for s in plan)
        db.install_capture(TABLES)
        assert db.capture_plan(TABLES) == []
        # Undeclaring a table drops its triggers.
        assert db.capture_plan({"items"}) == [
            "DROP TRIGGER multiall_tags_del",
            "DROP TRIGGER multiall_tags_ins",
            "DROP TRIGGER multiall_tags_upd",
        ]


def test_blob_column_is_refused_at_install(backend: SqliteBackend) -> None:
    spec = backend.make("n1", "CREATE TABLE files (id INTEGER PRIMARY KEY, data BLOB);")
    with (
        open_db("app", spec, "n1") as db,
        pytest.raises(ChangelogError, match="BLOB column 'data'"),
    ):
        db.capture_plan({"files"})
