"""The connector's SQLite journal (events, playbook output) is private to root."""

from __future__ import annotations

import os
import stat

from connector.journal import Journal


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_journal_database_and_its_wal_files_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        db = tmp_path / "state" / "connector.db"
        journal = Journal(str(db))
        journal.add_event({"pool": "web", "type": "member_failed", "member": "n2"})
        assert journal.events()[0]["member"] == "n2"
        files = [db, db.with_name("connector.db-wal"), db.with_name("connector.db-shm")]
        assert all(p.exists() for p in files)
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        os.umask(old)


def test_an_existing_world_readable_journal_is_tightened_on_open(tmp_path):
    db = tmp_path / "connector.db"
    Journal(str(db)).add_event({"pool": "web", "type": "member_joined", "member": "n1"})
    for name in (db, db.with_name("connector.db-wal")):
        os.chmod(name, 0o644)
    reopened = Journal(str(db))
    assert reopened.events()[0]["member"] == "n1"
    assert _mode(db) == 0o600 and _mode(db.with_name("connector.db-wal")) == 0o600
