"""``multiall db ...`` as a user runs it, against a socket speaking the control protocol."""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

MULTIALL = str(Path(sys.executable).parent / "multiall")
PEER = {
    "acked": 7,
    "error": None,
    "last_ship": None,
    "shipped": 7,
    "conflicts": 0,
    "state": "alive",
    "backlog": 0,
    "lag_s": 0.0,
    "oldest_unacked": None,
}
REPLIES = {
    "db_status": {
        "ok": True,
        "node": "n1",
        "databases": {
            "app": {
                "engine": "sqlite",
                "policy": {"mode": "realtime", "interval": 5.0},
                "pools": ["db"],
                "error": None,
                "local_seq": 9,
                "pruned_upto": 7,
                "peers": {
                    "n2": dict(PEER),
                    "n3": {
                        **PEER,
                        "state": "failed",
                        "backlog": 2,
                        "lag_s": 12.5,
                        "oldest_unacked": {"seq": 8, "table": "items", "hlc": "x"},
                    },
                },
                "tables": {
                    "items": {
                        "backlog": {"n2": 0, "n3": 2},
                        "last_applied": None,
                        "blocked": {"n2": "column 'price' is missing here"},
                    }
                },
            }
        },
    },
    "db_verify": {
        "ok": True,
        "node": "n1",
        "identical": False,
        "databases": {
            "app": {
                "tables": {},
                "peers": {
                    "n2": {"same": True, "tables": {"items": {"same": True, "rows": 3}}},
                    "n3": {
                        "same": False,
                        "tables": {
                            "items": {
                                "same": False,
                                "count": 2,
                                "only_here": ['{"id":3}'],
                                "only_there": [],
                                "differ": ['{"id":1}'],
                            }
                        },
                    },
                },
            }
        },
    },
}


@pytest.fixture
def connector_socket(tmp_path):
    """A control socket answering the db_* requests as the daemon would."""
    path = str(tmp_path / "connector.sock")
    requests = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            req = json.loads(self.rfile.readline())
            requests.append(req)
            self.wfile.write((json.dumps(REPLIES[req["op"]]) + "\n").encode())

    server = socketserver.UnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, requests
    server.shutdown()
    server.server_close()


def multiall(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MULTIALL, *args], capture_output=True, text=True, check=False)


def test_status_shows_backlog_lag_and_a_blocked_table(connector_socket) -> None:
    path, requests = connector_socket
    out = multiall("db", "status", "app", "--socket", path)
    assert out.returncode == 0, out.stderr
    assert requests == [{"op": "db_status", "db": "app"}]
    assert "n3           failed" in out.stdout
    assert "oldest unacked: seq 8 (items" in out.stdout
    assert "table items: backlog n2 0, n3 2" in out.stdout
    assert "BLOCKED towards n2: column 'price' is missing here" in out.stdout


def test_verify_names_differing_rows_and_exits_1(connector_socket) -> None:
    path, _requests = connector_socket
    out = multiall("db", "verify", "--socket", path)
    assert out.returncode == 1
    assert "db app vs n2: items identical (3 rows)" in out.stdout
    assert "db app vs n3: items DIFFERS (2 rows)" in out.stdout
    assert 'only here: {"id":3}' in out.stdout and 'differs: {"id":1}' in out.stdout


def test_a_connector_that_is_down_is_one_line_not_a_traceback(tmp_path) -> None:
    out = multiall("db", "status", "--socket", str(tmp_path / "none.sock"))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
