"""The set-based apply (_changelog_bulk.py) against the plain meaning of LWW, on SQLite files.

A batch is staged and only its *hot* changes (a key with a version here, or seen
twice in the batch) are walked in Python; the rest is written by SQL. Whatever
the mix, applying a batch at once must leave exactly what applying its changes
one by one leaves: the same rows, the same row versions, the same conflicts.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

from ansible_collections.takelan.multiall.plugins.module_utils._changelog_bulk import final_runs
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import Change, open_db
from changelog_cases import SCHEMA, TABLES


def make(tmp_path: Path, name: str, node: str) -> dict:
    path = tmp_path / f"{name}.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    spec = {"engine": "sqlite", "path": str(path), "tables": sorted(TABLES)}
    with open_db("app", spec, node) as db:
        db.install_capture(TABLES)
    return spec


def scribble(spec: dict, rng: random.Random, writes: int) -> None:
    """Random inserts, updates, key changes and deletes on a few keys, as an application."""
    conn = sqlite3.connect(spec["path"], isolation_level=None)
    for _write in range(writes):
        key, qty = rng.randint(1, 6), rng.randint(0, 99)
        exists = conn.execute("SELECT 1 FROM items WHERE id = ?", (key,)).fetchone()
        roll = rng.random()
        if not exists:
            conn.execute("INSERT INTO items VALUES (?, ?, ?)", (key, f"k{key}", qty))
        elif roll < 0.5:
            conn.execute("UPDATE items SET qty = ? WHERE id = ?", (qty, key))
        elif roll < 0.6:
            other = rng.randint(7, 9)
            if not conn.execute("SELECT 1 FROM items WHERE id = ?", (other,)).fetchone():
                conn.execute("UPDATE items SET id = ? WHERE id = ?", (other, key))
        elif roll < 0.8:
            conn.execute("DELETE FROM items WHERE id = ?", (key,))
        else:
            tag = rng.choice("xyz")
            conn.execute(
                "INSERT INTO tags VALUES (?, ?, ?) ON CONFLICT (item, tag) DO UPDATE "
                "SET note = excluded.note",
                (key, tag, str(qty)),
            )
    conn.close()


def state(spec: dict) -> tuple:
    conn = sqlite3.connect(spec["path"])
    out = tuple(
        conn.execute(sql).fetchall()
        for sql in (
            "SELECT * FROM items ORDER BY id",
            "SELECT * FROM tags ORDER BY item, tag",
            "SELECT tbl, pk, hlc, prev, deleted FROM multiall_rowver ORDER BY tbl, pk",
            "SELECT tbl, pk, winner_hlc, loser_hlc, loser_op, loser_row FROM multiall_conflicts "
            "ORDER BY loser_hlc, winner_hlc",
        )
    )
    conn.close()
    return out


def test_a_batch_applies_like_its_changes_one_by_one(tmp_path: Path) -> None:
    rng = random.Random(13)
    for round_ in range(6):
        a = make(tmp_path, f"a{round_}", "n1")
        b = make(tmp_path, f"b{round_}", "n2")
        # Both sides write the same few keys, in turns, so versions interleave.
        for _turn in range(3):
            scribble(b, rng, 8)
            scribble(a, rng, 12)
        copy = dict(b, path=str(tmp_path / f"b{round_}-copy.db"))
        shutil.copy(b["path"], copy["path"])
        with open_db("app", a, "n1") as db:
            changes = db.changes_after(0, 10_000)
        assert len({(c.table, str(c.pk)) for c in changes}) < len(changes)  # repeated keys
        with open_db("app", b, "n2") as db:
            at_once = db.apply_batch("n1", changes, TABLES)
        with open_db("app", copy, "n2") as db:
            single = [db.apply_batch("n1", [c], TABLES) for c in changes]
        assert state(b) == state(copy)
        assert at_once.conflicts == sum(r.conflicts for r in single) and at_once.conflicts
        assert at_once.lost == sum(r.lost for r in single)


def test_an_older_version_later_in_the_same_batch_loses(tmp_path: Path) -> None:
    # No well-behaved origin sends this (its HLCs grow per row), but a batch is
    # peer data: LWW, not the batch order, decides - also between two changes of it.
    def item(seq: int, qty: int, hlc: str, op: str = "U") -> Change:
        row = None if op == "D" else {"id": 1, "name": "x", "qty": qty}
        return Change(seq, "items", {"id": 1}, op, row, "n1", f"17000000000{hlc}-000000-n1")

    batch = [item(1, 1, "10", "I"), item(2, 2, "30"), item(3, 3, "20"), item(4, 0, "15", "D")]
    results = []
    for name in ("at-once", "one-by-one"):
        spec = make(tmp_path, name, "n2")
        with open_db("app", spec, "n2") as db:
            if name == "at-once":
                results.append(db.apply_batch("n1", batch, TABLES))
            else:
                results += [db.apply_batch("n1", [c], TABLES) for c in batch]
        conn = sqlite3.connect(spec["path"])
        assert conn.execute("SELECT * FROM items").fetchall() == [(1, "x", 2)]
        conn.close()
    assert results[0].conflicts == sum(r.conflicts for r in results[1:]) == 3


def test_runs_keep_the_origin_order_across_tables_and_kinds() -> None:
    def ch(seq: int, table: str, op: str) -> Change:
        return Change(seq, table, {"id": seq}, op, None if op == "D" else {"id": seq}, "n1", "")

    todo = [ch(3, "a", "I"), ch(4, "a", "U"), ch(7, "b", "I"), ch(8, "a", "D"), ch(9, "a", "D")]
    todo.append(ch(12, "a", "I"))
    assert final_runs(todo) == [
        ("a", False, 3, 4), ("b", False, 5, 7), ("a", True, 8, 9), ("a", False, 10, 12),
    ]  # fmt: skip
