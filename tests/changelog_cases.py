"""DB-SA capture/apply behaviour shared by both engines (not collected by itself).

tests/unit/test_changelog_sqlite.py runs these against SQLite files and
tests/integration/test_changelog_pg.py against a real PostgreSQL; each defines a
``backend`` fixture (make a node's database, write as an application, read rows).
"""

from __future__ import annotations

import time
from typing import Protocol

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
# Plain SQL both engines accept; ``private`` exists but is never declared.
SCHEMA = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);"
    "CREATE TABLE tags (item INTEGER, tag TEXT, note TEXT, PRIMARY KEY (item, tag));"
    "CREATE TABLE private (id INTEGER PRIMARY KEY, secret TEXT);"
)


class Backend(Protocol):
    """What a test needs from an engine."""

    def make(self, node: str, extra: str = "") -> dict:
        """A fresh database for ``node`` with SCHEMA (+ extra) and capture installed."""

    def sql(self, spec: dict, statements: str) -> None:
        """Write as an application would: its own connection, no DB-SA code."""

    def rows(self, spec: dict, table: str = "items") -> list[tuple]:
        """All rows, sorted."""


def ship(src: dict, src_node: str, dst: dict, dst_node: str, after: int = 0) -> object:
    """What the live path does: read changes, encode, decode, apply."""
    with open_db("app", src, src_node) as a:
        data = encode_batch(a.changes_after(after, 10_000))
    with open_db("app", dst, dst_node) as b:
        return b.apply_batch(src_node, decode_batch(data, TABLES), TABLES)


@pytest.fixture
def pair(backend: Backend) -> tuple[dict, dict]:
    return backend.make("n1"), backend.make("n2")


def test_table_without_primary_key_is_refused(backend: Backend) -> None:
    spec = backend.make("n1", "CREATE TABLE logs (line TEXT);")
    with open_db("app", spec, "n1") as db, pytest.raises(ChangelogError, match="no PRIMARY KEY"):
        db.capture_plan({"logs"})
    with open_db("app", spec, "n1") as db, pytest.raises(ChangelogError, match="does not exist"):
        db.capture_plan({"nosuch"})


def test_capture_records_every_write_in_order_with_monotonic_hlc(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a = pair[0]
    backend.sql(
        a,
        "INSERT INTO items VALUES (1, 'bolt', 5); UPDATE items SET qty = 6 WHERE id = 1;"
        "INSERT INTO tags VALUES (1, 'x', NULL); DELETE FROM items WHERE id = 1;"
        "INSERT INTO private VALUES (1, 'not captured');",
    )
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


def test_primary_key_change_is_a_delete_and_a_write(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(a, "INSERT INTO items VALUES (1, 'bolt', 5); UPDATE items SET id = 2 WHERE id = 1;")
    ship(a, "n1", b, "n2")
    assert backend.rows(b) == [(2, "bolt", 5)]


def test_apply_same_batch_twice_applies_once_and_does_not_echo(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(
        a, "INSERT INTO items VALUES (1, 'bolt', 5); INSERT INTO items VALUES (2, 'nut', 9);"
    )
    first = ship(a, "n1", b, "n2")
    again = ship(a, "n1", b, "n2")
    assert (first.applied, first.watermark) == (2, 2)
    assert (again.applied, again.skipped) == (0, 2)
    assert backend.rows(b) == [(1, "bolt", 5), (2, "nut", 9)]
    with open_db("app", b, "n2") as db:
        assert db.changes_after(0, 100) == []  # applied rows are not captured again
        assert db.watermark("n1") == 2
    # The application's own writes on b are still captured after an apply.
    backend.sql(b, "UPDATE items SET qty = 10 WHERE id = 2")
    with open_db("app", b, "n2") as db:
        (change,) = db.changes_after(0, 100)
    assert change.op == "U" and change.origin == "n2"


def test_later_write_wins_and_loser_is_kept_as_conflict(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    # Partition: both sides change row 1; b writes last.
    backend.sql(a, "UPDATE items SET qty = 100 WHERE id = 1")
    backend.sql(b, "UPDATE items SET qty = 200 WHERE id = 1")
    ship(a, "n1", b, "n2", after=1)
    ship(b, "n2", a, "n1")
    assert backend.rows(a) == backend.rows(b) == [(1, "bolt", 200)]
    for spec, node in ((a, "n1"), (b, "n2")):
        with open_db("app", spec, node) as db:
            (conflict,) = db.conflicts()
        assert conflict["loser_origin"] == "n1" and conflict["winner_origin"] == "n2"
        assert conflict["pk"] == {"id": 1}
    with open_db("app", a, "n1") as db:
        assert db.conflicts()[0]["loser_row"]["qty"] == 100


def test_sequential_update_from_a_peer_is_no_conflict(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    backend.sql(b, "UPDATE items SET qty = 6 WHERE id = 1")
    ship(b, "n2", a, "n1")
    assert backend.rows(a) == [(1, "bolt", 6)]
    with open_db("app", a, "n1") as db:
        assert db.conflicts() == []


def test_equal_hlc_tie_breaks_on_origin_name(backend: Backend, pair: tuple[dict, dict]) -> None:
    a = pair[0]
    wall = "1700000000000-000000"
    with open_db("app", a, "n1") as db:
        for origin in ("n3", "n2"):  # same wall and counter, different origins
            change = Change(1, "items", {"id": 7}, "I", {"id": 7, "name": origin, "qty": 1},
                            origin, f"{wall}-{origin}")  # fmt: skip
            db.apply_batch(origin, [change], TABLES)
    assert backend.rows(a) == [(7, "n3", 1)]  # "n3" sorts after "n2" whatever the arrival order


def test_tombstone_beats_late_older_update(backend: Backend, pair: tuple[dict, dict]) -> None:
    a, b = pair
    backend.sql(a, "INSERT INTO items VALUES (1, 'bolt', 5)")
    ship(a, "n1", b, "n2")
    backend.sql(b, "UPDATE items SET qty = 6 WHERE id = 1")  # older
    backend.sql(a, "DELETE FROM items WHERE id = 1")  # newer
    ship(a, "n1", b, "n2", after=1)
    assert backend.rows(b) == []
    ship(b, "n2", a, "n1")  # the late update arrives after the delete
    assert backend.rows(a) == backend.rows(b) == []


def test_same_row_several_times_in_one_batch_ends_at_its_last_version(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(
        a,
        "INSERT INTO items VALUES (1, 'bolt', 5); UPDATE items SET qty = 6 WHERE id = 1;"
        "INSERT INTO items VALUES (2, 'nut', 1); UPDATE items SET qty = 7 WHERE id = 1;"
        "DELETE FROM items WHERE id = 2; INSERT INTO items VALUES (2, 'nut', 3);",
    )
    result = ship(a, "n1", b, "n2")
    assert (result.applied, result.lost, result.conflicts) == (6, 0, 0)
    assert backend.rows(b) == backend.rows(a) == [(1, "bolt", 7), (2, "nut", 3)]
    with open_db("app", b, "n2") as db:
        assert db.conflicts() == [] and db.changes_after(0, 100) == []
    # The receiver's versions are the last ones: a sequential update is no conflict.
    backend.sql(b, "UPDATE items SET qty = 8 WHERE id = 1")
    ship(b, "n2", a, "n1")
    assert backend.rows(a) == [(1, "bolt", 8), (2, "nut", 3)]
    with open_db("app", a, "n1") as db:
        assert db.conflicts() == []


def test_older_versions_in_a_batch_lose_to_a_newer_local_one_as_conflicts(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(a, "INSERT INTO items VALUES (1, 'a', 1); UPDATE items SET qty = 2 WHERE id = 1;")
    backend.sql(a, "INSERT INTO items VALUES (3, 'a', 3)")
    time.sleep(0.01)  # a later millisecond: b's HLC is above a's whatever the counters
    backend.sql(b, "INSERT INTO items VALUES (1, 'b', 9)")  # later: wins over both of a's
    result = ship(a, "n1", b, "n2")
    assert (result.applied, result.lost, result.conflicts) == (1, 2, 2)
    assert backend.rows(b) == [(1, "b", 9), (3, "a", 3)]
    with open_db("app", b, "n2") as db:
        lost = sorted((c["loser_origin"], c["loser_row"]["qty"]) for c in db.conflicts())
    assert lost == [("n1", 1), ("n1", 2)]
    ship(b, "n2", a, "n1")  # the other way: b's version overwrites a's last one
    assert backend.rows(a) == backend.rows(b)
    with open_db("app", a, "n1") as db:
        (conflict,) = db.conflicts()
    assert conflict["loser_row"]["qty"] == 2 and conflict["winner_origin"] == "n2"


def test_update_then_delete_in_one_batch_beats_an_older_concurrent_update(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    a, b = pair
    backend.sql(
        a, "INSERT INTO items VALUES (1, 'bolt', 5); INSERT INTO tags VALUES (1, 't', 'x');"
    )
    ship(a, "n1", b, "n2")
    backend.sql(b, "UPDATE items SET qty = 6 WHERE id = 1; UPDATE tags SET note = 'y';")  # older
    time.sleep(0.01)
    backend.sql(
        a,
        "UPDATE items SET qty = 7 WHERE id = 1; DELETE FROM tags; DELETE FROM items WHERE id = 1;"
        "INSERT INTO items VALUES (4, 'new', 1);",
    )
    result = ship(a, "n1", b, "n2", after=2)
    assert result.conflicts == 2  # b's two updates were overwritten (kept as conflicts)
    assert backend.rows(b) == [(4, "new", 1)] and backend.rows(b, "tags") == []
    ship(b, "n2", a, "n1")  # the late, older updates do not resurrect the rows
    assert backend.rows(a) == [(4, "new", 1)] and backend.rows(a, "tags") == []


def test_undeclared_table_is_refused_and_nothing_applied(
    backend: Backend, pair: tuple[dict, dict]
) -> None:
    b = pair[1]
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
    assert backend.rows(b) == [] and backend.rows(b, "private") == []


def test_schema_mismatch_names_table_and_column(backend: Backend, pair: tuple[dict, dict]) -> None:
    a, b = pair
    backend.sql(a, "ALTER TABLE items ADD COLUMN price REAL")
    with open_db("app", a, "n1") as db:
        db.install_capture(TABLES)
    backend.sql(a, "INSERT INTO items VALUES (1, 'bolt', 5, 1.5)")
    with pytest.raises(SchemaMismatch, match=r"'items'.*'price'") as err:
        ship(a, "n1", b, "n2")
    assert (err.value.table, err.value.column) == ("items", "price")
    other_pk = Change(1, "tags", {"item": 1}, "D", None, "n1", "1700000000000-000000-n1")
    with open_db("app", b, "n2") as db, pytest.raises(SchemaMismatch, match="primary key"):
        db.apply_batch("n1", [other_pk], TABLES)
    assert backend.rows(b) == []


def test_bad_peer_data_is_a_clear_error() -> None:
    with pytest.raises(ChangelogError, match="magic"):
        decode_batch(b"garbage", TABLES)
    with pytest.raises(ChangelogError, match="undecodable"):
        decode_batch(b"MADB2\xc1", TABLES)
    bad_hlc = Change(1, "items", {"id": 1}, "D", None, "n1", "yesterday")
    with pytest.raises(ChangelogError, match="HLC"):
        decode_batch(encode_batch([bad_hlc]), TABLES)


def test_three_nodes_converge_and_checksums_match(backend: Backend) -> None:
    specs = {n: backend.make(n) for n in ("n1", "n2", "n3")}
    backend.sql(
        specs["n1"], "INSERT INTO items VALUES (1, 'a', 1); INSERT INTO tags VALUES (1, 't', 'x');"
    )
    backend.sql(
        specs["n2"], "INSERT INTO items VALUES (2, 'b', 2); INSERT INTO items VALUES (1, 'a2', 3);"
    )
    backend.sql(
        specs["n3"], "INSERT INTO items VALUES (3, 'c', 3); DELETE FROM items WHERE id = 3;"
    )
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
    backend.sql(specs["n3"], "UPDATE private SET secret = 'ignored'; DELETE FROM tags;")
    with open_db("app", specs["n3"], "n3") as db:
        assert db.table_checksums(TABLES)["tags"]["rows_digest"] == {}


def test_prune_keeps_seq_monotonic(backend: Backend, pair: tuple[dict, dict]) -> None:
    a = pair[0]
    backend.sql(a, "INSERT INTO items VALUES (1, 'a', 1); INSERT INTO items VALUES (2, 'b', 2);")
    with open_db("app", a, "n1") as db:
        assert db.prune(2) == 2
        assert db.changes_after(0, 10) == [] and db.max_seq() == 2
    backend.sql(a, "INSERT INTO items VALUES (3, 'c', 3)")
    with open_db("app", a, "n1") as db:
        assert [c.seq for c in db.changes_after(2, 10)] == [3]


def test_remove_capture_keeps_queued_changes(backend: Backend, pair: tuple[dict, dict]) -> None:
    a = pair[0]
    backend.sql(a, "INSERT INTO items VALUES (1, 'a', 1)")
    with open_db("app", a, "n1") as db:
        db.remove_capture(TABLES)
        assert db.installed_tables() == [] and len(db.changes_after(0, 10)) == 1
        db.prune(db.max_seq())
        assert db.remove_capture(TABLES)[-1] == "DROP TABLE multiall_conflicts"
    backend.sql(a, "INSERT INTO items VALUES (2, 'b', 1)")  # the app works on without DB-SA
