"""Benchmark: DB-SA replay after a partition, realtime lag, capture overhead.

A 3-node lab (one pool ``db``) runs real connectors shipping over the per-pool
SSH peer key, for SQLite and for a real PostgreSQL 15 server per node.

* Replay: n1 is cut off; ROWS rows are written there (transactions of 1000);
  the partition heals; clock from the moment n1's TNS sees a peer alive again
  to the moment BOTH peers acknowledged every row (n1's ``db_status``);
  throughput = rows per second per peer (each peer receives every row). Reference, same run, same engine: a plain batched insert of
  the same rows (executemany, 5000 per transaction) into an uncaptured table
  on a peer. Goals: SQLite >= 20 000 rows/s, PostgreSQL >= 10 000 rows/s.
* Lag (realtime policy): one row written on n1 (from the host, through the
  node's own database file / socket) -> visible on n2 AND n3, polled every
  2 ms. Goal p50 <= 0.5 s.
* Capture overhead: the same ROWS inserts (transactions of 1000) into a
  captured table and into an identical uncaptured one, on one node.

    .venv/bin/python benchmarks/db_replay.py [--quick] [--engine sqlite|postgresql|both]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import Lab
from lab.connector import control, wait_converged, wait_for
from lab.db import db_model, dsn_fields, start_db_lab
from lab.failover import percentile

SCHEMA = """
CREATE TABLE items (id TEXT PRIMARY KEY, node TEXT NOT NULL, val INTEGER NOT NULL);
CREATE TABLE plain (id TEXT PRIMARY KEY, node TEXT NOT NULL, val INTEGER NOT NULL);
"""


def timed_insert(conn: Any, ph: str, table: str, rows: list[tuple], per_txn: int) -> float:
    """Seconds to insert ROWS (3 columns) in transactions of PER_TXN, as an application
    would (executemany): the reference, and the writes that go through the triggers."""
    start = time.perf_counter()
    cur = conn.cursor()
    for i in range(0, len(rows), per_txn):
        cur.execute("BEGIN")
        cur.executemany(f"INSERT INTO {table} VALUES ({ph}, {ph}, {ph})", rows[i : i + per_txn])
        cur.execute("COMMIT")
    return time.perf_counter() - start


class HostDb:
    """A node's database opened from the host (its file, or its PostgreSQL socket)."""

    def __init__(self, lab: Lab, node: str, engine: str) -> None:
        self.engine = engine
        if engine == "sqlite":
            path = lab.node_root(node) / "var/lib/multiall/app.db"
            self.conn: Any = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.ph = "?"
        else:
            import psycopg

            password = (lab.node_root(node) / "etc/multiall/db/app.pass").read_text().strip()
            spec = dsn_fields("host=/run/lab/pg dbname=app user=app")
            self.conn = psycopg.connect(
                host=str(lab.ctl_path(node) / "pg"),
                dbname=spec["dbname"],
                user=spec["user"],
                password=password,
                autocommit=True,
            )
            self.ph = "%s"

    def insert(self, table: str, rows: list[tuple], per_txn: int) -> float:
        """Seconds to insert ROWS in transactions of PER_TXN (executemany)."""
        return timed_insert(self.conn, self.ph, table, rows, per_txn)

    def has(self, key: str) -> bool:
        cur = self.conn.cursor()
        cur.execute(f"SELECT 1 FROM items WHERE id = {self.ph}", (key,))
        return cur.fetchone() is not None

    def close(self) -> None:
        self.conn.close()


def acked(lab: Lab) -> dict[str, int]:
    peers = control(lab, "n1", {"op": "db_status"})["databases"]["app"]["peers"]
    return {p: info["acked"] for p, info in peers.items()}


def replay(lab: Lab, engine: str, rows: int) -> dict[str, Any]:
    """Rows written on a cut-off n1, then the heal: replay rows/s, and the reference."""
    lab.partition(["n1"])
    wait_for(
        lambda: all(
            p["state"] != "alive"
            for p in control(lab, "n1", {"op": "db_status"})["databases"]["app"]["peers"].values()
        ),
        30,
        "n1 to see its peers gone",
    )
    start_seq = max(acked(lab).values())
    n1 = HostDb(lab, "n1", engine)
    data = [(f"r{engine[0]}-{i}", "n1", i) for i in range(rows)]
    write_s = n1.insert("items", data, 1000)
    n1.close()
    target = start_seq + rows
    lab.heal()
    healed = time.monotonic()
    first = None  # when n1's TNS sees a peer alive again: the replay may start
    first_ack = None  # when the first batch was acknowledged (the session is up)
    progress: list[tuple[float, dict[str, int]]] = []
    while True:
        status = control(lab, "n1", {"op": "db_status"})["databases"]["app"]["peers"]
        now = {p: info["acked"] for p, info in status.items()}
        if not progress or progress[-1][1] != now:
            progress.append((round(time.monotonic() - healed, 2), now))
        if first is None and any(info["state"] == "alive" for info in status.values()):
            first = time.monotonic()
        if first_ack is None and any(v > start_seq for v in now.values()):
            first_ack = time.monotonic()
        if all(v >= target for v in now.values()):
            done = time.monotonic()
            break
        if time.monotonic() - healed > 600:
            raise SystemExit(f"replay not done after 600 s: {now} of {target}")
        time.sleep(0.05)
    assert first is not None and first_ack is not None
    seconds = max(done - first, 1e-3)
    print(f"replay progress (s after heal, acks): {progress}", file=sys.stderr)
    # Reference: the same rows, a plain batched insert into the same engine on a peer.
    peer = HostDb(lab, "n2", engine)
    ref_s = peer.insert("plain", [(f"ref-{k}", n, v) for k, n, v in data], 5000)
    peer.close()
    return {
        "rows": rows,
        "write_on_n1_s": round(write_s, 2),
        "heal_to_done_s": round(done - healed, 2),
        "replay_s": round(seconds, 2),
        "replay_rows_per_s": round(rows / seconds),
        "first_ack_s": round(first_ack - first, 2),
        "rows_per_s_from_first_ack": round(rows / max(done - first_ack, 1e-3)),
        "reference_rows_per_s": round(rows / ref_s),
        "ratio_to_reference": round((rows / seconds) / (rows / ref_s), 3),
    }


def lag(lab: Lab, engine: str, samples: int) -> dict[str, Any]:
    """Realtime: one row on n1 -> visible on n2 and n3."""
    n1 = HostDb(lab, "n1", engine)
    peers = [HostDb(lab, n, engine) for n in ("n2", "n3")]
    values = []
    for i in range(samples):
        key = f"lag-{engine}-{i}-{time.time_ns()}"
        start = time.monotonic()
        n1.insert("items", [(key, "n1", i)], 1)
        waiting = list(peers)
        while waiting:
            waiting = [p for p in waiting if not p.has(key)]
            if time.monotonic() - start > 30:
                raise SystemExit(f"row {key} not visible on both peers within 30 s")
            time.sleep(0.002)
        values.append(time.monotonic() - start)
        time.sleep(0.2)
    for db in (n1, *peers):
        db.close()
    return {
        "samples": samples,
        "p50_s": round(statistics.median(values), 3),
        "p99_s": round(percentile(values, 99), 3),
        "max_s": round(max(values), 3),
    }


def overhead(lab: Lab, engine: str, rows: int) -> dict[str, Any]:
    """The same inserts into a captured and an uncaptured table (transactions of 1000)."""
    db = HostDb(lab, "n3", engine)
    plain = db.insert("plain", [(f"ov-{i}", "n3", i) for i in range(rows)], 1000)
    captured = db.insert("items", [(f"ov-{i}", "n3", i) for i in range(rows)], 1000)
    db.close()
    return {
        "rows": rows,
        "plain_s": round(plain, 2),
        "captured_s": round(captured, 2),
        "overhead_x": round(captured / plain, 2),
    }


def run_engine(engine: str, rows: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="db-replay-") as tmp:
        path = Path(tmp) / "pools.yml"
        path.write_text(db_model(engine, ["items"]))
        lab = Lab()
        try:
            lab.up(pools_file=str(path), force=True)
            start_db_lab(lab, engine, SCHEMA)
            out = {"lag": lag(lab, engine, samples)}
            out["replay"] = replay(lab, engine, rows)
            wait_converged(lab, timeout=120)
            out["capture_overhead"] = overhead(lab, engine, rows)
            return out
        finally:
            lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 000 rows, 20 lag samples")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rows", type=int, help="rows written during the partition")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    samples = 20 if args.quick else 100
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    figures: dict[str, Any] = {"benchmark": "db_replay", "quick": args.quick}
    for engine in engines:
        figures[engine] = run_engine(engine, rows, samples)
        print(f"{engine}: {json.dumps(figures[engine])}", file=sys.stderr)
    goals = {"sqlite": 20_000, "postgresql": 10_000}
    figures["goals_met"] = all(
        figures[e]["replay"]["replay_rows_per_s"] >= goals[e] and figures[e]["lag"]["p50_s"] <= 0.5
        for e in engines
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
