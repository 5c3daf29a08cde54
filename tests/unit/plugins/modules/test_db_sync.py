"""db_sync on real SQLite files: install, check mode, diff, idempotence, removal, refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.modules import db_sync
from module_harness import ModuleFail

MODEL = """\
nodes:
  db1: {address: 198.18.0.11, pools: [db]}
pools:
  db:
    databases:
      app:
        engine: sqlite
        path: %s
        tables: [%s]
"""


@pytest.fixture
def app_db(tmp_path: Path):
    """An application database and a model declaring ``tables`` of it -> (args, db path)."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT);"
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE logs (line TEXT);"
    )
    conn.close()

    def make(tables: str = "orders, customers") -> dict:
        model = tmp_path / "pools.yml"
        model.write_text(MODEL % (path, tables))
        return {"pools_file": str(model), "node": "db1"}

    make.path = path  # type: ignore[attr-defined]
    return make


def triggers(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    conn.close()
    return sorted(names)


def test_check_mode_shows_the_ddl_and_changes_nothing(run_module, app_db) -> None:
    result = run_module(db_sync, app_db(), check_mode=True, diff=True)
    assert result["changed"] is True
    assert any(s.startswith("CREATE TABLE multiall_changelog") for s in result["ddl"])
    assert any("CREATE TRIGGER multiall_orders_ins" in s for s in result["ddl"])
    assert result["diff"]["before"] == "app: captured (none)\n"
    assert result["diff"]["after"].startswith("app: captured customers, orders\n  CREATE TABLE")
    assert triggers(app_db.path) == []


def test_install_then_idempotent_and_captures_app_writes(run_module, app_db) -> None:
    first = run_module(db_sync, app_db())
    assert first["changed"] is True and first["databases"]["app"]["captured_before"] == []
    assert len(triggers(app_db.path)) == 6
    again = run_module(db_sync, app_db(), diff=True)
    assert again["changed"] is False and again["ddl"] == []
    assert again["diff"]["before"] == again["diff"]["after"]
    conn = sqlite3.connect(app_db.path)
    conn.execute("INSERT INTO orders VALUES (1, 'bolt')")
    conn.commit()
    assert conn.execute("SELECT tbl, op FROM multiall_changelog").fetchall() == [("orders", "I")]
    conn.close()


def test_undeclared_table_loses_its_triggers(run_module, app_db) -> None:
    run_module(db_sync, app_db())
    result = run_module(db_sync, app_db("orders"))
    assert result["changed"] is True
    assert [s for s in result["ddl"] if "customers" in s] == [
        "DROP TRIGGER multiall_customers_del",
        "DROP TRIGGER multiall_customers_ins",
        "DROP TRIGGER multiall_customers_upd",
    ]
    assert triggers(app_db.path) == [
        "multiall_orders_del", "multiall_orders_ins", "multiall_orders_upd",
    ]  # fmt: skip


def test_state_absent_removes_capture(run_module, app_db) -> None:
    run_module(db_sync, app_db())
    args = dict(app_db(), state="absent")
    checked = run_module(db_sync, args, check_mode=True)
    assert checked["changed"] is True and len(triggers(app_db.path)) == 6
    result = run_module(db_sync, args)
    assert result["changed"] is True and triggers(app_db.path) == []
    assert run_module(db_sync, args)["changed"] is False


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ("orders, logs", "table 'logs' has no PRIMARY KEY"),
        ("orders, invoices", "table 'invoices' does not exist"),
    ],
)
def test_bad_table_fails_before_anything_changes(run_module, app_db, tables, message) -> None:
    with pytest.raises(ModuleFail) as failed:
        run_module(db_sync, app_db(tables))
    assert message in failed.value.result["msg"] and "database app" in failed.value.result["msg"]
    assert triggers(app_db.path) == []


def test_unknown_database_is_refused(run_module, app_db) -> None:
    with pytest.raises(ModuleFail) as failed:
        run_module(db_sync, dict(app_db(), database="shop"))
    assert "'shop' is not declared for node db1 (declared: app)" in failed.value.result["msg"]
