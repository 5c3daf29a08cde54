"""Benchmark: DB-SA capture and apply cost in one process, without the lab.

Why: ``db_replay.py`` measures the whole path on a 3-node lab (SSH, two peers
applying at once, shipper, TNS), where the figures also carry the load of a
shared machine. This one isolates what the database side costs per row, so a
change to the capture triggers or to the apply can be judged in seconds:

* capture: ROWS inserts (transactions of 1000) into a captured table vs an
  identical uncaptured one, same database (the ratio is the trigger overhead);
* ship: the origin's read + encode of every change (batches of BATCH);
* apply: decode + ``apply_batch`` of every batch on a second database;
* reference: executemany of the same rows, BATCH per transaction, into an
  uncaptured table of the receiving database (same run, same engine).

    .venv/bin/python benchmarks/db_apply.py [--quick] [--engine sqlite|postgresql|both]
        [--rows N] [--batch N] [--profile]

PostgreSQL runs in a throwaway local cluster (lab.postgres.local_cluster; root).
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    decode_batch,
    encode_batch,
    open_db,
)
from db_replay import timed_insert  # benchmarks/ is the script's directory

SCHEMA = (
    "CREATE TABLE items (id TEXT PRIMARY KEY, node TEXT NOT NULL, val INTEGER NOT NULL);"
    "CREATE TABLE plain (id TEXT PRIMARY KEY, node TEXT NOT NULL, val INTEGER NOT NULL);"
)
TABLES = {"items"}


class Conn:
    """An application's own connection (no DB-SA code), for the inserts."""

    def __init__(self, spec: dict) -> None:
        if spec["engine"] == "sqlite":
            self.conn: Any = sqlite3.connect(spec["path"], isolation_level=None)
            self.ph = "?"
        else:
            import psycopg

            password = Path(spec["password_file"]).read_text().strip()
            self.conn = psycopg.connect(spec["dsn"], password=password, autocommit=True)
            self.ph = "%s"

    def script(self, sql: str) -> None:
        if isinstance(self.conn, sqlite3.Connection):
            self.conn.executescript(sql)
        else:
            self.conn.execute(sql)

    def insert(self, table: str, rows: list[tuple], per_txn: int) -> float:
        """Seconds to insert ROWS in transactions of PER_TXN (executemany)."""
        return timed_insert(self.conn, self.ph, table, rows, per_txn)

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def databases(engine: str) -> Iterator[tuple[dict, dict]]:
    """Two fresh databases (origin n1, receiver n2) with SCHEMA and capture installed."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="db-apply-") as tmp:
            specs = []
            for node in ("n1", "n2"):
                path = Path(tmp) / f"{node}.db"
                sqlite3.connect(path).close()
                specs.append({"engine": "sqlite", "path": str(path), "tables": sorted(TABLES)})
            yield _prepared(specs)
        return
    from lab.postgres import local_cluster

    with local_cluster() as pg:
        base = pg.spec(sorted(TABLES), host=True)
        admin = Conn(base)
        specs = []
        for node in ("n1", "n2"):
            admin.conn.execute(f"CREATE DATABASE bench_{node}")
            specs.append({**base, "dsn": base["dsn"].replace("dbname=app", f"dbname=bench_{node}")})
        admin.close()
        yield _prepared(specs)


def _prepared(specs: list[dict]) -> tuple[dict, dict]:
    for spec, node in zip(specs, ("n1", "n2"), strict=True):
        conn = Conn(spec)
        conn.script(SCHEMA)
        conn.close()
        with open_db("app", spec, node) as db:
            db.install_capture(TABLES)
    return specs[0], specs[1]


def run_engine(engine: str, rows: int, batch: int, profile: bool) -> dict[str, Any]:
    with databases(engine) as (origin, receiver):
        data = [(f"r-{i}", "n1", i) for i in range(rows)]
        app = Conn(origin)
        plain_s = app.insert("plain", [(f"p-{k}", n, v) for k, n, v in data], 1000)
        captured_s = app.insert("items", data, 1000)
        app.close()

        start = time.perf_counter()
        batches, after = [], 0
        with open_db("app", origin, "n1") as db:
            while changes := db.changes_after(after, batch):
                batches.append(encode_batch(changes))
                after = changes[-1].seq
        ship_s = time.perf_counter() - start

        prof = cProfile.Profile() if profile else None
        with open_db("app", receiver, "n2") as db:
            start = time.perf_counter()
            if prof:
                prof.enable()
            for payload in batches:
                db.apply_batch("n1", decode_batch(payload, TABLES), TABLES)
            if prof:
                prof.disable()
            apply_s = time.perf_counter() - start

        peer = Conn(receiver)
        ref_s = peer.insert("plain", [(f"ref-{k}", n, v) for k, n, v in data], batch)
        peer.close()
    if prof:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    return {
        "rows": rows,
        "batch": batch,
        "capture_overhead_x": round(captured_s / plain_s, 2),
        "capture_us_per_row": round(captured_s / rows * 1e6, 1),
        "plain_us_per_row": round(plain_s / rows * 1e6, 1),
        "ship_rows_per_s": round(rows / ship_s),
        "apply_rows_per_s": round(rows / apply_s),
        "reference_rows_per_s": round(rows / ref_s),
        "apply_ratio_to_reference": round(ref_s / apply_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 000 rows")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="cProfile of the apply, stderr")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    figures: dict[str, Any] = {"benchmark": "db_apply", "quick": args.quick}
    for engine in engines:
        figures[engine] = run_engine(engine, rows, args.batch, args.profile)
        print(f"{engine}: {json.dumps(figures[engine])}", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
