"""DB-SA on a 3-node lab, for SQLite and a real PostgreSQL server per node.

Real connectors ship each node's captured changes over the per-pool SSH peer
key to the forced-command receiver of every peer. What a user relies on:
writes on every node converge; a node cut off keeps accepting writes and,
after the heal, all three are identical (``multiall db verify`` and the
engines' own dumps); a connector killed in the middle of a replay loses and
duplicates nothing; a seeded run of random writes, connector kills and
partitions ends identical with every acknowledged write present; a peer
sending rows for an undeclared table is refused. Nothing here asserts how
fast anything happens (benchmarks/db_replay.py does).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    Change,
    encode_batch,
)
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import ssh_argv

from lab.connector import control, wait_converged, wait_for
from lab.db import NODES, cli, db_model, dump, sql, start_db_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]
# Seconds of random faults; the benchmark flag / env runs it longer.
CHAOS_SECONDS = float(os.environ.get("MULTIALL_DB_CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("MULTIALL_DB_CHAOS_SEED", "1313"))
SCHEMA = """
CREATE TABLE items (id TEXT PRIMARY KEY, node TEXT NOT NULL, val INTEGER NOT NULL);
CREATE TABLE hot (id INTEGER PRIMARY KEY, val TEXT NOT NULL);
CREATE TABLE private (id INTEGER PRIMARY KEY, secret TEXT NOT NULL);
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_lab(request, lab_module, tmp_path_factory):
    engine = request.param
    path = Path(tmp_path_factory.mktemp(f"db-{engine}")) / "pools.yml"
    path.write_text(db_model(engine, ["items", "hot"]))
    lab = lab_module(pools_file=str(path))
    # Small batches: a 10 000-row replay is 20 batches, so a kill lands mid-replay.
    start_db_lab(lab, engine, SCHEMA, db={"batch": 500})
    lab.engine = engine
    return lab


def rows(lab, node: str, table: str = "items") -> int:
    return int(sql(lab, node, "app", f"SELECT count(*) FROM {table};").strip())


def caught_up(lab) -> bool:
    """Every node's connector: every peer acknowledged all its changes, no error."""
    for node in NODES:
        info = control(lab, node, {"op": "db_status"})["databases"]["app"]
        if any(p["acked"] < info["local_seq"] or p["error"] for p in info["peers"].values()):
            return False
    return True


def identical(lab, timeout: float = 120) -> list[str]:
    """Wait until every change is acknowledged everywhere; then the three nodes' dumps
    must be equal and ``db verify`` must agree. (Dumps are only taken once the
    connectors say they are done: dumping every half second would slow the replay.)"""
    dumps: dict[str, list[str]] = {}

    def same() -> bool:
        if not caught_up(lab):
            return False
        dumps.update({n: dump(lab, n, "app") for n in NODES})
        return dumps["n1"] == dumps["n2"] == dumps["n3"]

    try:
        wait_for(same, timeout, "identical dumps on n1, n2, n3", interval=0.5)
    except Exception:
        status = {n: control(lab, n, {"op": "db_status"}) for n in NODES}
        diff = {n: len(d) for n, d in dumps.items()}
        raise AssertionError(
            f"not identical: rows {diff}; status {json.dumps(status)[:4000]}"
        ) from None
    for node in NODES:
        verify = cli(lab, node, "db", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "DIFFERS" not in verify.stdout
    return dumps["n1"]


def test_writes_on_every_node_converge(db_lab) -> None:
    for i, node in enumerate(NODES):
        sql(db_lab, node, "app", f"INSERT INTO items VALUES ('conv-{node}', '{node}', {i});")
    # n1's row reaches n2 by itself; n2 then changes it, and that travels back.
    wait_for(
        lambda: "conv-n1" in sql(db_lab, "n2", "app", "SELECT id FROM items;"), 30, "conv-n1 on n2"
    )
    sql(db_lab, "n2", "app", "UPDATE items SET val = 42 WHERE id = 'conv-n1';")
    lines = identical(db_lab)
    assert sum("conv-" in line for line in lines) == 3
    assert any("conv-n1" in line and "42" in line for line in lines)
    status = cli(db_lab, "n1", "db", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "n2" in status.stdout and "table items" in status.stdout


def test_a_partitioned_node_keeps_writing_and_all_three_match_after_heal(db_lab) -> None:
    lab = db_lab
    sql(lab, "n1", "app", "INSERT INTO hot VALUES (1, 'before');")
    identical(lab)
    lab.partition(["n3"])
    try:
        wait_for(
            lambda: (
                control(lab, "n1", {"op": "db_status"})["databases"]["app"]["peers"]["n3"]["state"]
                != "alive"
            ),
            30,
            "n1 to see n3 gone",
        )
        sql(lab, "n3", "app", "INSERT INTO items VALUES ('part-n3', 'n3', 3);")
        sql(lab, "n1", "app", "INSERT INTO items VALUES ('part-n1', 'n1', 1);")
        # The same row on both sides: last writer wins everywhere, the loser is kept.
        sql(lab, "n1", "app", "UPDATE hot SET val = 'majority' WHERE id = 1;")
        time.sleep(0.05)
        sql(lab, "n3", "app", "UPDATE hot SET val = 'minority-later' WHERE id = 1;")
        status = control(lab, "n3", {"op": "db_status"})["databases"]["app"]
        assert status["peers"]["n1"]["backlog"] >= 2  # kept for the peers it cannot reach
    finally:
        lab.heal()
    wait_converged(lab, timeout=90)
    lines = identical(lab)
    assert any("part-n3" in line for line in lines) and any("part-n1" in line for line in lines)
    assert any("minority-later" in line for line in lines)
    conflicts = [
        row
        for node in NODES
        for row in control(lab, node, {"op": "db_conflicts"})["databases"]["app"]
        if row["table"] == "hot"
    ]
    assert conflicts, "the overwritten version must be kept in multiall_conflicts"
    out = cli(lab, "n1", "db", "conflicts")
    assert out.returncode == 0
    events = [
        e
        for node in NODES
        for e in control(lab, node, {"op": "events", "limit": 500})["events"]
        if e["type"] == "db_conflict"
    ]
    assert events and events[0]["db"] == "app"


def _kill_connector(lab, node: str) -> None:
    pid = lab.service_status(node, "connector")["pid"]
    lab.exec(node, ["kill", "-9", str(pid)], check=False)


def test_a_connector_killed_mid_replay_loses_and_duplicates_nothing(db_lab) -> None:
    lab = db_lab
    identical(lab)
    before = rows(lab, "n1")
    lab.service_stop("n1", "connector")
    total = 10000
    sql(
        lab,
        "n1",
        "app",
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < "
        f"{total}) INSERT INTO items SELECT 'bulk-' || i, 'n1', i FROM s;",
    )
    from lab.connector import start_connector

    start_connector(lab, "n1")

    def midway() -> bool:
        acked = control(lab, "n1", {"op": "db_status"})["databases"]["app"]["peers"]
        return any(0 < p["backlog"] < total for p in acked.values())

    wait_for(midway, 60, "n1 to be part-way through the replay", interval=0.02)
    _kill_connector(lab, "n1")  # SIGKILL: no clean shutdown; the supervisor restarts it
    lines = identical(lab, timeout=180)
    assert sum("bulk-" in line for line in lines) == total
    assert rows(lab, "n2") == rows(lab, "n3") == before + total
    # Everything acked by both peers is pruned from the cache table.
    wait_for(lambda: rows(lab, "n1", "multiall_changelog") == 0, 60, "n1's changelog pruned")


def test_seeded_random_writes_kills_and_partitions_end_identical(db_lab) -> None:
    lab = db_lab
    rng = random.Random(SEED)
    expected: dict[str, int | None] = {}
    counters = dict.fromkeys(NODES, 0)
    deadline = time.monotonic() + CHAOS_SECONDS
    cut: list[str] | None = None
    faults = []
    while time.monotonic() < deadline:
        roll = rng.random()
        node = rng.choice(list(NODES))
        if roll < 0.05:
            if cut:
                lab.heal()
                faults.append("heal")
                cut = None
            else:
                cut = [rng.choice(list(NODES))]
                lab.partition(cut)
                faults.append(f"partition {cut[0]}")
            continue
        if roll < 0.08:
            _kill_connector(lab, node)
            faults.append(f"kill {node}")
            continue
        own = [k for k, v in expected.items() if v is not None and k.startswith(f"r-{node}-")]
        if roll < 0.6 or not own:
            counters[node] += 1
            key = f"r-{node}-{counters[node]}"
            statement = f"INSERT INTO items VALUES ('{key}', '{node}', {counters[node]});"
            value: int | None = counters[node]
        elif roll < 0.85:
            key = rng.choice(own)
            value = rng.randrange(1_000_000)
            statement = f"UPDATE items SET val = {value} WHERE id = '{key}';"
        elif roll < 0.93:
            key = rng.choice(own)
            value = None
            statement = f"DELETE FROM items WHERE id = '{key}';"
        else:
            key, value = "", None  # everyone fights over the same rows: only equality counts
            statement = (
                f"INSERT INTO hot VALUES ({rng.randrange(5)}, '{node}') "
                f"ON CONFLICT (id) DO UPDATE SET val = '{node}-{rng.randrange(100)}';"
            )
        sql(lab, node, "app", statement)  # a local write never fails, whatever the faults
        if key:
            expected[key] = value  # the statement returned: an acknowledged write
    lab.heal()
    wait_converged(lab, timeout=90)
    lines = identical(lab, timeout=240)
    present = {line.split("'")[1]: line for line in lines if "'r-" in line}
    for key, value in expected.items():
        if value is None:
            assert key not in present, f"{key} was deleted (faults: {faults})"
        else:
            assert key in present, f"acknowledged write {key} is missing (faults: {faults})"
            assert f",{value})" in present[key].replace(" ", ""), present[key]


def test_a_peer_sending_rows_of_an_undeclared_table_is_refused(db_lab) -> None:
    lab = db_lab
    forged = [
        Change(1, "private", {"id": 1}, "I", {"id": 1, "secret": "x"}, "n1",
               "1764100000000-000001-n1", None)
    ]  # fmt: skip
    data = encode_batch(forged)
    header = json.dumps({"op": "apply", "bytes": len(data)}).encode() + b"\n"
    argv = [*ssh_argv("db", NODES["n2"]), "multiall-db", "session", "app", "n1"]
    # Sent from n1 with the pool's real peer key, as a compromised peer could.
    send = (
        "import json, os, subprocess, sys\n"
        "os.makedirs('/run/multiall/ssh', exist_ok=True)\n"
        "p = subprocess.run(json.loads(sys.argv[1]), input=bytes.fromhex(sys.argv[2]),"
        " capture_output=True)\n"
        "print(p.stdout.decode(), p.stderr.decode())\n"
    )
    out = lab.exec("n1", [sys.executable, "-c", send, json.dumps(argv), (header + data).hex()])
    assert '"ok": false' in out.stdout and "private" in out.stdout, out.stdout
    assert rows(lab, "n2", "private") == 0
