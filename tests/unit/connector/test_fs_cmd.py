"""``multiall fs status|conflicts`` as a user runs them, against a socket speaking the protocol."""

from __future__ import annotations

import json
import socketserver
import threading

import pytest

from connector.cli import main

STATUS = {
    "ok": True,
    "node": "n1",
    "error": None,
    "watches": 3,
    "trees": {
        "/srv/share": {
            "pool": "web",
            "files": 12,
            "bytes": 3400,
            "tombstones": 1,
            "conflicts": 1,
            "skipped": ["pipe"],
            "skipped_count": 1,
            "peers": {
                "n2": {"pending": 0, "alive": True, "last_sync": 1.0, "error": None, "pushed": 9},
                "n3": {"pending": 7, "alive": False, "last_sync": None, "error": None, "pushed": 0},
            },
        }
    },
}
CONFLICTS = {
    "ok": True,
    "node": "n1",
    "trees": {
        "/srv/share": [
            {
                "path": "a.conf",
                "copy": "a.conf.multiall-conflict-n2-20261126T040937.000000000Z",
                "loser": "n2",
            }
        ]
    },
}


@pytest.fixture
def sock(tmp_path):
    path = str(tmp_path / "connector.sock")
    asked = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            req = json.loads(self.rfile.readline())
            asked.append(req)
            reply = CONFLICTS if req.get("what") == "conflicts" else STATUS
            self.wfile.write((json.dumps(reply) + "\n").encode())

    server = socketserver.UnixStreamServer(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path, asked
    server.shutdown()
    server.server_close()


def test_status_shows_pending_for_an_away_peer_and_skipped_fifos(sock, capsys):
    path, asked = sock
    # A peer that is away with a queue is expected (kept for it): not an error.
    assert main(["fs", "status", "--socket", path]) == 0
    out = capsys.readouterr().out
    assert "12 files, 3400 bytes" in out and "n3" in out and "pending 7" in out
    assert "not synced (devices, fifos, sockets): 1: pipe" in out
    assert asked == [{"op": "fs"}]


def test_conflicts_lists_each_copy(sock, capsys):
    path, _asked = sock
    assert main(["fs", "conflicts", "--socket", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trees"]["/srv/share"][0]["loser"] == "n2"


def test_unreachable_connector_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["fs", "status", "--socket", str(tmp_path / "none.sock")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("multiall fs:") and len(err.strip().splitlines()) == 1
