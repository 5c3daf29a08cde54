#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_sync
short_description: Install, check or remove DB-SA change capture on a node's pool databases
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - For each database the pool model declares for the node (C(databases) of its pools), makes
    sure every declared table carries the DB-SA capture triggers that write each insert, update
    and delete into the C(multiall_changelog) cache table, with a hybrid-logical-clock
    timestamp, so TakeConnector can ship the changes to the pool peers.
  - Also creates DB-SA's own tables (C(multiall_changelog), C(multiall_clock),
    C(multiall_rowver), C(multiall_watermarks), C(multiall_conflicts)). Applications keep using
    their tables unchanged.
  - Idempotent - the DDL that would run is computed from what the database holds now; nothing
    runs when the capture is installed and current (SQLite triggers are recreated when a
    table's columns changed; PostgreSQL's generic trigger reads every column itself).
  - A declared table that is missing or has no primary key fails the task before anything
    changes, naming the table. Tables no longer declared lose their triggers.
  - O(state=absent) drops the triggers; DB-SA's tables go too once no change is still queued
    for a peer (nothing queued is ever dropped).
  - PostgreSQL passwords come from the database's C(password_file) (mode 0600, checked here).
extends_documentation_fragment:
  - takelan.multiall.pools
  - takelan.multiall.pools.node
  - takelan.multiall._attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns the DDL that would run, and runs none of it.
  diff_mode:
    support: full
    details:
      - Before is the tables captured now; after is the wanted tables followed by the DDL.
requirements:
  - Python sqlite3 (standard library) for C(engine=sqlite).
  - psycopg 3 (Debian C(python3-psycopg)) for C(engine=postgresql).
options:
  database:
    description:
      - Only this database of the model. Default - every database declared for the node.
    type: str
  state:
    description:
      - V(present) installs or refreshes the capture, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - name: DB-SA guide
    description: docs/db.md in the collection.
    link: https://github.com/takelan/multiall/blob/main/docs/db.md
"""

EXAMPLES = r"""
- name: Capture every declared table of this node's pool databases
  takelan.multiall.db_sync:
    node: "{{ inventory_hostname }}"

- name: Show the DDL that would run on one database
  takelan.multiall.db_sync:
    database: shop
  check_mode: true
  diff: true

- name: Stop capturing (queued changes are kept until the peers have them)
  takelan.multiall.db_sync:
    database: shop
    state: absent
"""

RETURN = r"""
databases:
  description: Per database - engine, declared tables, tables captured before, the DDL run.
  returned: always
  type: dict
  sample:
    shop:
      engine: postgresql
      tables: [customers, orders]
      captured_before: [orders]
      ddl: ["CREATE TRIGGER multiall_capture AFTER INSERT OR UPDATE OR DELETE ON \"customers\" ..."]
ddl:
  description: Every statement run (or, in check mode, that would run), in order.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    node_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import node_view
from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    ChangelogError,
    open_db,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import plain


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(node_argspec())
        .merge(
            ArgumentSpec(
                {
                    "database": {"type": "str"},
                    "state": {
                        "type": "str",
                        "choices": ["present", "absent"],
                        "default": "present",
                    },
                }
            )
        )
    )


def converge(name: str, spec: dict, node: str, present: bool, check: bool) -> dict:
    """One database: what is captured now, the DDL to reach the wanted state, run unless check."""
    tables = list(spec.get("tables") or [])
    with open_db(name, spec, node) as db:
        before = db.installed_tables()
        if present:
            ddl = db.capture_plan(tables) if check else db.install_capture(tables)
        else:
            gone = tables or before
            ddl = db.removal_plan(gone) if check else db.remove_capture(gone)
    return {"engine": spec.get("engine"), "tables": sorted(tables), "captured_before": before,
            "ddl": ddl}  # fmt: skip


def main() -> None:
    """Read the node's databases from the model and converge each one."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    view = node_view(module)
    databases = plain(view.settings.get("databases") or {})
    conflicts = [c.message() for c in view.conflicts if c.key.startswith("databases")]
    if conflicts:
        module.fail_json(msg="; ".join(conflicts))
    wanted = module.params["database"]
    if wanted is not None:
        if wanted not in databases:
            module.fail_json(
                msg=f"database {wanted!r} is not declared for node {view.name} "
                f"(declared: {', '.join(sorted(databases)) or 'none'})"
            )
        databases = {wanted: databases[wanted]}
    present = module.params["state"] == "present"
    result: dict = {"changed": False, "databases": {}, "ddl": []}
    before_text, after_text = [], []
    for name in sorted(databases):
        try:
            out = converge(name, databases[name], view.name, present, module.check_mode)
        except ChangelogError as exc:
            module.fail_json(msg=str(exc), **result)
        result["databases"][name] = out
        result["ddl"].extend(out["ddl"])
        result["changed"] |= bool(out["ddl"])
        after_tables = out["tables"] if present else []
        before_text.append(f"{name}: captured {', '.join(out['captured_before']) or '(none)'}\n")
        after_text.append(f"{name}: captured {', '.join(after_tables) or '(none)'}\n")
        after_text.extend(f"  {stmt};\n" for stmt in out["ddl"])
    if module._diff:
        result["diff"] = {"before": "".join(before_text), "after": "".join(after_text)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
