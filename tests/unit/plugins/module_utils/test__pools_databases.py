"""The ``databases`` section of the model: mistakes are refused with file:line."""

from __future__ import annotations

import textwrap

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
)

MODEL = """\
nodes:
  db1: {address: 198.18.0.11, pools: [db]}
pools:
  db:
    databases:
      app:
%s
"""


def load(body: str) -> PoolModel:
    text = MODEL % textwrap.indent(textwrap.dedent(body), " " * 8)
    return PoolModel.from_text(text, "pools.yml")


def errors(body: str) -> list[str]:
    with pytest.raises(PoolModelError) as info:
        load(body)
    return [str(e) for e in info.value.errors]


def test_valid_databases_load_with_policy_and_password_file() -> None:
    m = load(
        """\
        engine: postgresql
        dsn: "host=/run/postgresql dbname=shop user=shop"
        password_file: /etc/multiall/db/shop.pass
        tables: [orders, customers]
        policy: {mode: interval, interval: 30}
        """
    )
    db = m.effective("db1").settings["databases"]["app"]
    assert db["tables"] == ["orders", "customers"] and db["policy"]["interval"] == 30


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "engine: postgresql\npassword: s3cret\n",
            "pools.yml:8:19: pools.db.databases.app.password: ",
        ),
        ('engine: postgresql\ndsn: "dbname=x password=s3cret"\n', "dsn holds a password"),
        ('engine: postgresql\ndsn: "postgresql://u:s3cret@h/x"\n', "dsn holds a password"),
        ("engine: sqlite\npath: /d.db\ntables: [orders, 'drop table']\n", "plain identifier"),
        ("engine: sqlite\npath: /d.db\ntables: [multiall_changelog]\n", "DB-SA's own"),
        ("engine: sqlite\npath: /d.db\ntables: [a, a]\n", "listed twice"),
        ("engine: sqlite\npath: d.db\n", "must be absolute"),
        ("engine: sqlite\ndsn: dbname=x\n", "'dsn' is for engine postgresql"),
        ("engine: postgresql\npath: /d.db\n", "'path' is for engine sqlite"),
        ("engine: sqlite\npolicy: {mode: interval}\n", "needs 'interval'"),
        ("engine: sqlite\npolicy: {mode: manual, interval: 5}\n", "only applies to mode"),
        ("engine: sqlite\npolicy: {mode: hourly}\n", "expected one of: realtime, interval"),
    ],
)
def test_mistakes_are_refused_with_file_and_line(body: str, expected: str) -> None:
    found = errors(body)
    assert any(expected in e for e in found), found
    assert all(e.startswith("pools.yml:") for e in found)


def test_clear_text_password_message_says_what_to_do_instead() -> None:
    (message,) = errors("engine: postgresql\npassword: s3cret\n")
    assert "password_file" in message and "0600" in message and "s3cret" not in message
