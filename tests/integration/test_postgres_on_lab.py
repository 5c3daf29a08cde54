"""Debian's real PostgreSQL 15 inside lab nodes, and DB-SA capture/apply between two of them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psycopg
import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    decode_batch,
    encode_batch,
    open_db,
)

from lab.postgres import pg_dump, start_postgres

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
TABLES = {"orders"}


def sql(db, statement: str) -> None:
    password = Path(db.host_password_file).read_text().strip()
    with psycopg.connect(db.host_dsn, password=password, autocommit=True) as conn:
        conn.execute(statement)


def test_node_postgres_captures_and_a_peer_applies(lab_factory) -> None:
    lab = lab_factory(n=2)
    dbs = {node: start_postgres(lab, node) for node in ("n1", "n2")}
    # Idempotent: a second call keeps the running server and its database.
    assert start_postgres(lab, "n1") == dbs["n1"]
    ps = lab.exec("n1", ["ps", "-o", "user=", "-C", "postgres"]).stdout.split()
    assert ps and set(ps) == {"postgres"}
    pw_mode = (Path(dbs["n1"].host_password_file).stat().st_mode) & 0o777
    assert pw_mode == 0o600
    for node, db in dbs.items():
        sql(db, "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int)")
        with open_db("app", db.spec(["orders"], host=True), node) as handle:
            handle.install_capture(TABLES)
    # The node's own python3 (Debian's python3-psycopg) reaches its database the node's way:
    # unix socket in /run/lab/pg, password from the 0600 file.
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "collection")!r})
        from ansible_collections.takelan.multiall.plugins.module_utils.changelog import open_db
        with open_db("app", {dbs["n1"].spec(["orders"])!r}, "n1") as db:
            print(json.dumps(db.capture_plan({{"orders"}})))
        """
    )
    assert json.loads(lab.exec("n1", ["/usr/bin/python3", "-c", script]).stdout) == []
    sql(dbs["n1"], "INSERT INTO orders VALUES (1, 'bolt', 5), (2, 'nut', 7)")
    sql(dbs["n1"], "UPDATE orders SET qty = 6 WHERE id = 1")
    with open_db("app", dbs["n1"].spec(["orders"], host=True), "n1") as a:
        batch = encode_batch(a.changes_after(0, 100))
    with open_db("app", dbs["n2"].spec(["orders"], host=True), "n2") as b:
        result = b.apply_batch("n1", decode_batch(batch, TABLES), TABLES)
        assert result.applied == 3 and b.changes_after(0, 100) == []
    assert pg_dump(lab, "n1", tables=["orders"]) == pg_dump(lab, "n2", tables=["orders"])
    assert "INSERT INTO public.orders VALUES (1, 'bolt', 6);" in pg_dump(
        lab, "n2", tables=["orders"]
    )
