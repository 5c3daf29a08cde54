"""DB-SA capture/apply on real SQLite files: what a pool of databases relies on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    Change,
    ChangelogError,
    SchemaMismatch,
    decode_batch,
    encode_batch,
    open_db,
)

TABLES = {"items", "tags"}
SCHEMA = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);"
    "CREATE TABLE tags (item INTEGER, tag TEXT, note TEXT, PRIMARY KEY (item, tag));"
    "CREATE TABLE private (id INTEGER PRIMARY KEY, secret TEXT);"
)


def make_db(tmp_path: Path, node: str, schema: str = SCHEMA) -> dict:
    path = tmp_path / f"{node}.db"
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.close()
    spec = {"engine": "sqlite", "path": str(path), "tables": sorted(TABLES)}
    with open_db("app", spec, node) as db:
        db.install_capture(TABLES)
    return spec


def sql(spec: dict, statements: str) -> None:
    """Write as an application would: its own connection, no DB-SA code."""
    conn = sqlite3.connect(spec["path"])
    conn.executescript(statements)
    conn.commit()
    conn.close()


def rows(spec: dict, table: str = "items") -> list[tuple]:
    conn = sqlite3.connect(spec["path"])
    out = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    conn.close()
    return out


def ship(src: dict, src_node: str, dst: dict, dst_node: str, after: int = 0) -> object:
    """What the live path does: read changes, encode, decode, apply."""
    with open_db("app", src, src_node) as a:
        data = encode_batch(a.changes_after(after, 10_000))
    with open_db("app", dst, dst_node) as b:
        return b.apply_batch(src_node, decode_batch(data, TABLES), TABLES)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[dict, dict]:
    return make_db(tmp_path, "n1"), make_db(tmp_path, "n2")


def test_install_is_idempotent_and_plan_shows_ddl(tmp_path: Path) -> None:
    spec = make_db(tmp_path, "n1")
    with open_db("app", spec, "n1") as db:
        assert db.capture_plan(TABLES) == []
        assert db.install_capture(TABLES) == []
        assert db.installed_tables() == ["items", "tags"]
        # A new column makes the triggers stale: the plan recreates them.
        sql(spec, "ALTER TABLE items ADD COLUMN price REAL")
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


def test_table_without_primary_key_is_refused(tmp_path: Path) -> None:
    spec = make_db(tmp_path, "n1", SCHEMA + "CREATE TABLE logs (line TEXT);")
    with open_db("app", spec, "n1") as db, pytest.raises(ChangelogError, match="no PRIMARY KEY"):
        db.capture_plan({"logs"})
    with open_db("app", spec, "n1") as db, pytest.raises(ChangelogError, match="does not exist"):
        db.capture_plan({"nosuch"})


def test_capture_records_every_write_in_order_with_monotonic_hlc(pair: tuple[dict, dict]) -> None:
    a, _ = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5); UPDATE items SET qty = 6 WHERE id = 1;"
           "INSERT INTO tags VALUES (1, 'x', NULL); DELETE FROM items WHERE id = 1;"
           "INSERT INTO private VALUES (1, 'not captured');")  # fmt: skip
    with open_db("app", a, "n1") as db:
        changes = db.changes_after(0, 100)
        assert db.max_seq() == 4
    assert [(c.seq, c.table, c.op) for c in changes] == [
        (1, "items", "I"), (2, "items", "U"), (3, "tags", "I"), (4, "items", "D"),
    ]  # fmt: skip
    assert changes[0].pk == {"id": 1} and changes[0].row == {"id": 1, "name": "bolt", "qty": 5}
    assert changes[2].pk == {"item": 1, "tag": "x"}
    assert changes[3].row is None and all(c.origin == "n1" for c in changes)
    hlcs = [c.hlc for c in changes]
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == 4
    assert changes[1].prev == changes[0].hlc  # an update names the version it replaced


def test_primary_key_change_is_a_delete_and_a_write(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5); UPDATE items SET id = 2 WHERE id = 1;")
    ship(a, "n1", b, "n2")
    assert rows(b) == [(2, "bolt", 5)]


def test_apply_same_batch_twice_applies_once_and_does_not_echo(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5); INSERT INTO items VALUES (2, 'nut', 9);")
    first = ship(a, "n1", b, "n2")
    again = ship(a, "n1", b, "n2")
    assert (first.applied, first.watermark) == (2, 2)
    assert (again.applied, again.skipped) == (0, 2)
    assert rows(b) == [(1, "bolt", 5), (2, "nut", 9)]
    with open_db("app", b, "n2") as db:
        assert db.changes_after(0, 100) == []  # applied rows are not captured again
        assert db.watermark("n1") == 2
    # The application's own writes on b are still captured after an apply.
    sql(b, "UPDATE items SET qty = 10 WHERE id = 2")
    with open_db("app", b, "n2") as db:
        (change,) = db.changes_after(0, 100)
    assert change.op == "U" and change.origin == "n2"


def test_later_write_wins_and_loser_is_kept_as_conflict(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    # Partition: both sides change row 1; b writes last.
    sql(a, "UPDATE items SET qty = 100 WHERE id = 1")
    sql(b, "UPDATE items SET qty = 200 WHERE id = 1")
    ship(a, "n1", b, "n2", after=1)
    ship(b, "n2", a, "n1")
    assert rows(a) == rows(b) == [(1, "bolt", 200)]
    for spec, node in ((a, "n1"), (b, "n2")):
        with open_db("app", spec, node) as db:
            (conflict,) = db.conflicts()
        assert conflict["loser_origin"] == "n1" and conflict["winner_origin"] == "n2"
        assert conflict["pk"] == {"id": 1}
    with open_db("app", a, "n1") as db:
        assert db.conflicts()[0]["loser_row"]["qty"] == 100


def test_sequential_update_from_a_peer_is_no_conflict(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    sql(b, "UPDATE items SET qty = 6 WHERE id = 1")
    ship(b, "n2", a, "n1")
    assert rows(a) == [(1, "bolt", 6)]
    with open_db("app", a, "n1") as db:
        assert db.conflicts() == []


def test_equal_hlc_tie_breaks_on_origin_name(pair: tuple[dict, dict]) -> None:
    a, _ = pair
    wall = "1700000000000-000000"
    with open_db("app", a, "n1") as db:
        for origin in ("n3", "n2"):  # same wall and counter, different origins
            change = Change(1, "items", {"id": 7}, "I", {"id": 7, "name": origin, "qty": 1},
                            origin, f"{wall}-{origin}")  # fmt: skip
            db.apply_batch(origin, [change], TABLES)
    assert rows(a) == [(7, "n3", 1)]  # "n3" sorts after "n2" whatever the arrival order


def test_tombstone_beats_late_older_update(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    sql(b, "UPDATE items SET qty = 6 WHERE id = 1")  # older
    sql(a, "DELETE FROM items WHERE id = 1")  # newer
    ship(a, "n1", b, "n2", after=1)
    assert rows(b) == []
    ship(b, "n2", a, "n1")  # the late update arrives after the delete
    assert rows(a) == rows(b) == []


def test_undeclared_table_is_refused_and_nothing_applied(pair: tuple[dict, dict]) -> None:
    _, b = pair
    good = Change(1, "items", {"id": 1}, "I", {"id": 1, "name": "x", "qty": 1}, "n1",
                  "1700000000000-000000-n1")  # fmt: skip
    bad = Change(2, "private", {"id": 1}, "I", {"id": 1, "secret": "y"}, "n1",
                 "1700000000001-000000-n1")  # fmt: skip
    with open_db("app", b, "n2") as db:
        with pytest.raises(ChangelogError, match="'private'"):
            db.apply_batch("n1", [good, bad], TABLES)
        assert db.watermark("n1") == 0
    with pytest.raises(ChangelogError, match=r"'private'.*not declared"):
        decode_batch(encode_batch([good, bad]), TABLES)
    assert rows(b) == [] and rows(b, "private") == []


def test_schema_mismatch_names_table_and_column(pair: tuple[dict, dict]) -> None:
    a, b = pair
    sql(a, "ALTER TABLE items ADD COLUMN price REAL")
    with open_db("app", a, "n1") as db:
        db.install_capture(TABLES)
    sql(a, "INSERT INTO items VALUES (1, 'bolt', 5, 1.5)")
    with pytest.raises(SchemaMismatch, match=r"'items'.*'price'") as err:
        ship(a, "n1", b, "n2")
    assert (err.value.table, err.value.column) == ("items", "price")
    other_pk = Change(1, "tags", {"item": 1}, "D", None, "n1", "1700000000000-000000-n1")
    with open_db("app", b, "n2") as db, pytest.raises(SchemaMismatch, match="primary key"):
        db.apply_batch("n1", [other_pk], TABLES)
    assert rows(b) == []


def test_bad_peer_data_is_a_clear_error() -> None:
    with pytest.raises(ChangelogError, match="magic"):
        decode_batch(b"garbage", TABLES)
    with pytest.raises(ChangelogError, match="undecodable"):
        decode_batch(b"MADB1\xc1", TABLES)
    bad_hlc = Change(1, "items", {"id": 1}, "D", None, "n1", "yesterday")
    with pytest.raises(ChangelogError, match="HLC"):
        decode_batch(encode_batch([bad_hlc]), TABLES)


def test_three_nodes_converge_and_checksums_match(tmp_path: Path) -> None:
    specs = {n: make_db(tmp_path, n) for n in ("n1", "n2", "n3")}
    sql(specs["n1"], "INSERT INTO items VALUES (1, 'a', 1); INSERT INTO tags VALUES (1, 't', 'x');")
    sql(specs["n2"], "INSERT INTO items VALUES (2, 'b', 2); INSERT INTO items VALUES (1, 'a2', 3);")
    sql(specs["n3"], "INSERT INTO items VALUES (3, 'c', 3); DELETE FROM items WHERE id = 3;")
    for src in specs:
        for dst in specs:
            if src != dst:
                ship(specs[src], src, specs[dst], dst)
    sums = []
    for node, spec in specs.items():
        with open_db("app", spec, node) as db:
            sums.append(db.table_checksums(TABLES))
    assert sums[0] == sums[1] == sums[2]
    assert sums[0]["items"]["rows"] == 2 and '{"id":1}' in sums[0]["items"]["rows_digest"]
    # A differing row shows up under its primary key.
    sql(specs["n3"], "UPDATE private SET secret = 'ignored'; DELETE FROM tags;")
    with open_db("app", specs["n3"], "n3") as db:
        assert db.table_checksums(TABLES)["tags"]["rows_digest"] == {}


def test_prune_keeps_seq_monotonic(pair: tuple[dict, dict]) -> None:
    a, _ = pair
    sql(a, "INSERT INTO items VALUES (1, 'a', 1); INSERT INTO items VALUES (2, 'b', 2);")
    with open_db("app", a, "n1") as db:
        assert db.prune(2) == 2
        assert db.changes_after(0, 10) == [] and db.max_seq() == 2
    sql(a, "INSERT INTO items VALUES (3, 'c', 3)")
    with open_db("app", a, "n1") as db:
        assert [c.seq for c in db.changes_after(2, 10)] == [3]


def test_remove_capture_keeps_queued_changes(pair: tuple[dict, dict]) -> None:
    a, _ = pair
    sql(a, "INSERT INTO items VALUES (1, 'a', 1)")
    with open_db("app", a, "n1") as db:
        db.remove_capture(TABLES)
        assert db.installed_tables() == [] and len(db.changes_after(0, 10)) == 1
        db.prune(db.max_seq())
        assert db.remove_capture(TABLES)[-1] == "DROP TABLE multiall_conflicts"
    sql(a, "INSERT INTO items VALUES (2, 'b', 1)")  # the app works on without DB-SA
