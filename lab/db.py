"""Pool databases on lab nodes (tests, demo, benchmark of DB-SA).

``prepare_databases`` gives every node what DB-SA needs once the lab's model
declares databases: the per-pool peer keys (lab/peer_keys.py, what the
``fs_sa``/``db_sa`` roles do on servers) and, for PostgreSQL, a server per node
(lab/postgres.py). The other helpers act like an application and an
operator would: SQL through the engine's own client inside the node
(``sqlite3``, ``psql``), dumps through ``sqlite3 .dump`` / ``pg_dump``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.pools import load

from .core import Lab
from .peer_keys import install_peer_keys

NODE_SOCKET = "/run/lab/connector.sock"
MULTIALL = str(Path(sys.executable).with_name("multiall"))
NODES = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
# Where each engine keeps database "app" on a lab node (lab/postgres.py's server for PG).
LOCATION = {
    "sqlite": "engine: sqlite, path: /var/lib/multiall/app.db",
    "postgresql": (
        "engine: postgresql, dsn: 'host=/run/lab/pg dbname=app user=app',"
        " password_file: /etc/multiall/db/app.pass"  # written by lab/postgres.py (0600)
    ),
}


def db_model(engine: str, tables: list[str], nodes: dict[str, str] | None = None) -> str:
    """A pool model: NODES (default n1..n3) in pool ``db``, which declares ``app`` on ENGINE."""
    members = "".join(
        f"  {n}: {{address: {a}, pools: [db]}}\n" for n, a in (nodes or NODES).items()
    )
    return (
        "plugin: takelan.multiall.pools\n"
        "defaults: {ssh_user: root, python: /usr/bin/python3}\n"
        f"nodes:\n{members}pools:\n  db:\n    databases:\n"
        f"      app: {{{LOCATION[engine]}, tables: [{', '.join(tables)}]}}\n"
    )


def start_db_lab(lab: Lab, engine: str, schema: str, **overrides: Any) -> None:
    """On a lab up with a db_model: connectors, and database ``app`` (SCHEMA) captured everywhere."""
    from .connector import start_all, wait_converged

    if engine == "sqlite":
        for node in lab.nodes:
            lab.exec(node, ["mkdir", "-p", "/var/lib/multiall"])
            sql(lab, node, "app", "PRAGMA journal_mode=WAL;")  # readers never wait for writers
    start_all(lab, **overrides)
    for node in lab.nodes:
        install_capture(lab, node, "app", schema)
    wait_converged(lab, timeout=120)


def databases(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    """NODE's databases in the lab's model: ``{name: spec}``."""
    return dict(load(str(lab.inventory_path)).effective(node).settings.get("databases") or {})


def prepare_databases(lab: Lab) -> None:
    """Peer keys (and PostgreSQL servers) when the lab's model declares databases."""
    specs = [s for n in lab.nodes for s in databases(lab, n).values()]
    if not specs:
        return
    install_peer_keys(lab)
    from .postgres import start_postgres

    for node in lab.nodes:
        for spec in databases(lab, node).values():
            if spec.get("engine") == "postgresql":
                dsn = dsn_fields(spec["dsn"])
                db, role = dsn.get("dbname", "app"), dsn.get("user", "app")
                start_postgres(lab, node, db=db, role=role)


def dsn_fields(dsn: str) -> dict[str, str]:
    """``key=value`` pairs of a libpq DSN (the simple form the lab's models use)."""
    return dict(item.split("=", 1) for item in dsn.split() if "=" in item)


def sql(lab: Lab, node: str, db: str, statements: str, check: bool = True) -> str:
    """Run SQL on NODE's copy of DB as an application would (no DB-SA code involved)."""
    spec = databases(lab, node)[db]
    if spec["engine"] == "sqlite":
        argv = ["sqlite3", "-bail", "-cmd", ".timeout 30000", spec["path"]]
    else:
        # The password comes from the model's password_file, as DB-SA reads it.
        pw = spec["password_file"]
        login = f'PGPASSWORD="$(cat {pw})" exec psql -X -q -A -t'
        argv = ["sh", "-c", f'{login} -v ON_ERROR_STOP=1 "$0"', spec["dsn"]]
    return lab.exec(node, argv, input=statements, check=check, timeout=120).stdout


def install_capture(lab: Lab, node: str, db: str, schema: str) -> None:
    """Create the application's tables (SCHEMA) and DB-SA's capture on NODE."""
    sql(lab, node, db, schema)
    code = (
        "import json, sys\n"
        "from ansible_collections.takelan.multiall.plugins.module_utils.changelog import open_db\n"
        "spec = json.loads(sys.argv[1])\n"
        "with open_db(sys.argv[2], spec, sys.argv[3]) as h:\n"
        "    h.install_capture(spec['tables'])\n"
    )
    spec = databases(lab, node)[db]
    lab.exec(node, [sys.executable, "-c", code, json.dumps(spec), db, node], timeout=120)


def dump(lab: Lab, node: str, db: str) -> list[str]:
    """The data of DB's declared tables on NODE from the engine's own dump tool, sorted."""
    spec = databases(lab, node)[db]
    tables = list(spec.get("tables") or [])
    if spec["engine"] == "sqlite":
        out = lab.exec(node, ["sqlite3", spec["path"], ".dump " + " ".join(tables)]).stdout
        lines = [ln for ln in out.splitlines() if ln.startswith("INSERT INTO")]
    else:
        from .postgres import pg_dump

        lines = pg_dump(
            lab, node, dsn_fields(spec["dsn"]).get("dbname", "app"), tables
        ).splitlines()
    return sorted(lines)


def cli(lab: Lab, node: str, *args: str, check: bool = False) -> Any:
    """``multiall ARGS`` inside NODE against its connector (the operator's view)."""
    return lab.exec(node, [MULTIALL, *args, "--socket", NODE_SOCKET], check=check, timeout=180)
