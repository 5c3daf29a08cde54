"""DB-SA live path on real SQLite files, with the real receiver as a local subprocess.

Only SSH is left out (the lab test covers it): the shipper starts
``python -m connector.db_receive`` per peer, exactly the program the peer's
forced command runs, so framing, apply, acks and pruning are the real ones.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    Change,
    encode_batch,
    open_db,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel

from connector.db_acks import AckStore
from connector.db_receive import session
from connector.db_shipper import DbSync
from connector.db_wire import header_line

SCHEMA = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);"
    "CREATE TABLE tags (item INTEGER, tag TEXT, PRIMARY KEY (item, tag));"
    "CREATE TABLE private (id INTEGER PRIMARY KEY, secret TEXT);"
)
MODEL = """
nodes:
  a: {{address: 198.18.0.11, pools: [p]}}
  b: {{address: 198.18.0.12, pools: [p]}}
  c: {{address: 198.18.0.13, pools: [p]}}
pools:
  p:
    databases:
      app: {{engine: sqlite, path: {path}, tables: [items, tags], policy: {{mode: realtime}}}}
"""


class Node:
    """One node's database file and pool model (the model's path points at its own file)."""

    def __init__(self, tmp: Path, name: str, schema: str = SCHEMA) -> None:
        self.name = name
        self.path = tmp / f"{name}.db"
        conn = sqlite3.connect(self.path)
        conn.executescript(schema)
        conn.close()
        self.model_file = tmp / f"{name}.yml"
        self.model_file.write_text(MODEL.format(path=self.path))
        self.model = PoolModel.from_text(self.model_file.read_text())
        self.spec = self.model.effective(name).settings["databases"]["app"]
        with open_db("app", self.spec, name) as db:
            db.install_capture(["items", "tags"])

    def sql(self, statements: str) -> None:
        conn = sqlite3.connect(self.path)
        conn.executescript(statements)
        conn.commit()
        conn.close()

    def rows(self, table: str = "items") -> list[tuple]:
        conn = sqlite3.connect(self.path)
        out = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        conn.close()
        return out

    def changelog(self) -> int:
        conn = sqlite3.connect(self.path)
        (count,) = conn.execute("SELECT count(*) FROM multiall_changelog").fetchone()
        conn.close()
        return count


@pytest.fixture
def nodes(tmp_path: Path) -> dict[str, Node]:
    return {n: Node(tmp_path, n) for n in "abc"}


def shipper(nodes: dict[str, Node], acks: AckStore, states: dict[str, str]) -> tuple[DbSync, list]:
    events: list[dict[str, Any]] = []

    def argv_for(pool: str, peer: str, db: str) -> list[str]:
        target = nodes[peer]
        return [
            sys.executable, "-m", "connector.db_receive", "--pool", pool, "--node", peer,
            "--pools-file", str(target.model_file), "session", db, "a",
        ]  # fmt: skip

    async def publish(event: dict[str, Any]) -> None:
        events.append(event)

    sync = DbSync(
        "a",
        "app",
        nodes["a"].spec,
        {"b": "p", "c": "p"},
        acks,
        argv_for,
        lambda peer: states[peer],
        publish,
        batch=3,
        poll=0.02,
    )
    return sync, events


async def until(predicate: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_a_down_peer_keeps_its_backlog_which_is_replayed_then_pruned(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    async def scenario() -> None:
        acks = AckStore(str(tmp_path / "acks.db"))
        states = {"b": "alive", "c": "failed"}
        sync, _events = shipper(nodes, acks, states)
        task = asyncio.create_task(sync.run())
        try:
            # 7 changes: three batches of 3 (the batch size here), two in flight at once.
            nodes["a"].sql(
                "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');"
                "INSERT INTO tags VALUES (1, 'x'), (2, 'y');"
                "UPDATE items SET name = 'uno' WHERE id = 1; DELETE FROM items WHERE id = 3;"
            )
            await until(lambda: sync.peer["b"]["acked"] == 7)
            assert nodes["b"].rows() == [(1, "uno"), (2, "two")]
            assert nodes["b"].rows("tags") == [(1, "x"), (2, "y")]
            # c is down: nothing is pruned, its backlog is visible.
            assert nodes["a"].changelog() == 7
            status = await sync.status()
            assert status["peers"]["c"]["backlog"] == 7
            assert status["tables"]["items"]["backlog"]["c"] == 5
            assert status["peers"]["c"]["oldest_unacked"]["seq"] == 1
            states["c"] = "alive"  # member_recovered: replayed without being asked
            await until(lambda: sync.peer["c"]["acked"] == 7)
            assert nodes["c"].rows() == nodes["a"].rows()
            await until(lambda: nodes["a"].changelog() == 0)
            assert acks.all("app") == {"b": 7, "c": 7}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            acks.close()
        # The acks outlive the daemon: a new store starts where this one ended.
        assert AckStore(str(tmp_path / "acks.db")).all("app") == {"b": 7, "c": 7}

    asyncio.run(scenario())


def test_manual_policy_ships_only_when_asked(nodes: dict[str, Node], tmp_path: Path) -> None:
    async def scenario() -> None:
        acks = AckStore(str(tmp_path / "acks.db"))
        nodes["a"].spec["policy"] = {"mode": "manual"}
        sync, _events = shipper(nodes, acks, {"b": "alive", "c": "alive"})
        task = asyncio.create_task(sync.run())
        try:
            nodes["a"].sql("INSERT INTO items VALUES (1, 'one');")
            await asyncio.sleep(0.3)
            assert nodes["b"].rows() == []
            result = await sync.sync_now(20)
            assert result["b"]["done"] and result["c"]["done"]
            assert nodes["b"].rows() == nodes["c"].rows() == [(1, "one")]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            acks.close()

    asyncio.run(scenario())


def test_a_schema_mismatch_blocks_that_table_and_keeps_its_changes(
    tmp_path: Path,
) -> None:
    nodes = {"a": Node(tmp_path, "a"), "c": Node(tmp_path, "c")}
    # b's items table lacks nothing but has an extra column: a's rows do not fit.
    nodes["b"] = Node(
        tmp_path,
        "b",
        SCHEMA.replace("name TEXT)", "name TEXT, price REAL)", 1),
    )

    async def scenario() -> None:
        acks = AckStore(str(tmp_path / "acks.db"))
        sync, events = shipper(nodes, acks, {"b": "alive", "c": "alive"})
        task = asyncio.create_task(sync.run())
        try:
            nodes["a"].sql("INSERT INTO tags VALUES (1, 'x'); INSERT INTO items VALUES (1, 'one');")
            await until(lambda: ("b", "items") in sync.blocked)
            await until(lambda: sync.peer["c"]["acked"] == 2)
            # The change before the blocked table's first change went through; nothing after.
            await until(lambda: sync.peer["b"]["acked"] == 1)
            assert nodes["b"].rows("tags") == [(1, "x")]
            assert nodes["b"].rows() == []
            assert nodes["a"].changelog() == 1  # kept for b
            status = await sync.status()
            assert "price" in status["tables"]["items"]["blocked"]["b"]
            assert [e["type"] for e in events] == ["db_schema_mismatch"]
            assert events[0]["table"] == "items" and events[0]["member"] == "b"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            acks.close()

    asyncio.run(scenario())


def test_the_receiver_refuses_rows_of_an_undeclared_table(nodes: dict[str, Node]) -> None:
    forged = [Change(1, "private", {"id": 1}, "I", {"id": 1, "secret": "x"}, "a",
                     "1764100000000-000001-a", None)]  # fmt: skip
    data = encode_batch(forged)
    stdin = io.BytesIO(header_line("apply", data) + data)
    stdout = io.BytesIO()
    assert session("p", "app", "a", "b", nodes["b"].model, stdin, stdout) == 0
    reply = stdout.getvalue().decode()
    assert '"ok": false' in reply and "private" in reply
    assert nodes["b"].rows("private") == []


@pytest.mark.parametrize(
    ("pool", "db", "origin", "error"),
    [
        ("q", "app", "a", "not a member of pool 'q'"),
        ("p", "other", "a", "declares no database 'other'"),
        ("p", "app", "b", "not another member"),
        ("p", "app", "zz", "not another member"),
    ],
)
def test_a_session_outside_what_the_pool_key_allows_is_refused(
    nodes: dict[str, Node], pool: str, db: str, origin: str, error: str
) -> None:
    stdout = io.BytesIO()
    assert session(pool, db, origin, "b", nodes["b"].model, io.BytesIO(), stdout) == 1
    assert error in stdout.getvalue().decode()


def test_a_stray_cancellation_in_a_round_is_an_error_and_shipping_goes_on(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    """A CancelledError not meant for the peer's task (a helper task it awaited was
    cancelled) once ended that peer's shipping for good, with no error shown."""

    async def scenario() -> list[str | None]:
        acks = AckStore(str(tmp_path / "acks.db"))
        sync, _events = shipper(nodes, acks, {"b": "alive", "c": "failed"})
        real_round, errors = sync._ship_round, []

        async def round_once_cancelled(peer: str) -> bool:
            if not errors:
                errors.append(None)
                raise asyncio.CancelledError
            errors.append(sync.peer[peer]["error"])
            return await real_round(peer)

        sync._ship_round = round_once_cancelled
        task = asyncio.create_task(sync.run())
        try:
            nodes["a"].sql("INSERT INTO items VALUES (1, 'one');")
            await until(lambda: sync.peer["b"]["acked"] == 1)
            assert sync.peer["b"]["error"] is None  # cleared by the round that worked
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            acks.close()
        return errors

    errors = asyncio.run(scenario())
    assert errors[1] == "internal: a step was cancelled"


def test_a_ship_task_that_ends_ends_the_run_loudly(nodes: dict[str, Node], tmp_path: Path) -> None:
    """A peer's ship task must never end quietly: the run ends with it, so the daemon
    logs a stopped core task and is restarted (before, the watch loop ran on alone)."""

    async def scenario() -> None:
        acks = AckStore(str(tmp_path / "acks.db"))
        sync, _events = shipper(nodes, acks, {"b": "alive", "c": "alive"})

        async def broken(peer: str) -> None:
            raise RuntimeError(f"a bug in the ship task of {peer}")

        sync._ship = broken
        try:
            with pytest.raises(RuntimeError, match="a bug in the ship task"):
                await asyncio.wait_for(sync.run(), 10)
        finally:
            acks.close()

    asyncio.run(scenario())
