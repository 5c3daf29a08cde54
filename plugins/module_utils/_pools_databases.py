# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``databases`` section of a pool: DB-SA's part of the model, validated at load time.

What is checked here (with file:line through the Field machinery): table names
are plain identifiers (they are written into trigger DDL), engine-specific keys
match the engine, the sync policy is complete, and **no clear-text password**
sits in the model — neither a ``password`` key nor one inside the DSN. The
password lives in a ``password_file`` (its 0600 mode is checked when it is
used, on the node that reads it: ``changelog.read_password_file``). Whether a
table exists and has a primary key can only be known on the database itself,
so ``db_sync`` checks that at install.
"""

from __future__ import annotations

import re
from typing import Any

from ._schema import Field

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# key=value DSN with a password, or a URI with user:password@
_DSN_PASSWORD = re.compile(r"(^|\s)password\s*=|^[a-z]+://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
NO_CLEAR_PASSWORD = (
    "clear-text passwords are not accepted in the pool model; put the password in a file "
    "readable only by its owner (mode 0600) and name it with 'password_file', or use peer "
    "authentication"
)


def check_table_name(value: str) -> str | None:
    """Table names go into trigger DDL: plain identifiers, not DB-SA's own tables."""
    if not _TABLE.match(value):
        return f"table name {value!r} must be a plain identifier (letters, digits, '_')"
    if value.startswith("multiall_"):
        return f"table {value!r}: names starting with multiall_ are DB-SA's own tables"
    return None


def check_dsn(value: str) -> str | None:
    """A DSN may name host, database and user, never the password."""
    if _DSN_PASSWORD.search(value):
        return f"dsn holds a password: {NO_CLEAR_PASSWORD}"
    return None


def refuse_password(_value: Any) -> str:
    """Any ``password`` key is refused, whatever it holds."""
    return NO_CLEAR_PASSWORD


def check_abs_file(value: str) -> str | None:
    """Files named by the model are absolute paths."""
    if not value.startswith("/"):
        return f"path {value!r} must be absolute (start with '/')"
    return None


def check_policy(value: dict) -> tuple[str, str] | None:
    """``interval`` mode needs its interval; the other modes must not carry one."""
    mode = value.get("mode", "realtime")
    if mode == "interval" and "interval" not in value:
        return ("mode", "mode 'interval' needs 'interval' (seconds between syncs)")
    if mode != "interval" and "interval" in value:
        return ("interval", f"'interval' only applies to mode 'interval' (mode is {mode!r})")
    return None


def check_database(value: dict) -> tuple[str, str] | None:
    """Keys that belong to the other engine, and duplicate tables, are mistakes."""
    engine = value.get("engine")
    if engine == "sqlite":
        for key in ("dsn", "password_file"):
            if key in value:
                return (key, f"'{key}' is for engine postgresql; sqlite uses 'path'")
    if engine == "postgresql" and "path" in value:
        return ("path", "'path' is for engine sqlite; postgresql uses 'dsn'")
    tables = value.get("tables") or []
    dupes = sorted({t for t in tables if tables.count(t) > 1})
    if dupes:
        return ("tables", f"table {dupes[0]!r} is listed twice")
    return None


DATABASE = Field(
    "object",
    keys={
        "engine": Field("str", required=True, choices=("sqlite", "postgresql")),
        "path": Field("str", check=check_abs_file),
        "dsn": Field("str", check=check_dsn),
        "password_file": Field("str", check=check_abs_file),
        "password": Field("str", check=refuse_password, expect=f"no value: {NO_CLEAR_PASSWORD}"),
        "tables": Field("list", item=Field("str", check=check_table_name)),
        "policy": Field(
            "object",
            keys={
                "mode": Field("str", choices=("realtime", "interval", "manual")),
                "interval": Field("number", minimum=0.1),
            },
            check=check_policy,
        ),
    },
    check=check_database,
)
