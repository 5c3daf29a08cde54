"""``multiall sbm`` as a user runs it, against a unix socket speaking the control protocol."""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._sbm_perfdata import parse_perfdata

MULTIALL = str(Path(sys.executable).parent / "multiall")
REPORT = {
    "ok": True,
    "node": "n5",
    "status": "1",
    "maintenance": False,
    "rules": [
        {
            "rule": "root_disk",
            "kind": "command",
            "reported": 0,
            "reported_name": "OK",
            "value": 0,
            "warn": None,
            "crit": None,
            "since": 1700000000,
            "message": "DISK OK - free space: / 80698MiB (77% inode=97%);",
            "perfdata": parse_perfdata(
                "/=24325914624B;216442024755;243497277849;0;270552530944 'free inodes'=U"
            ),
        },
        {
            "rule": "load",
            "kind": "load",
            "reported": 1,
            "reported_name": "WARNING",
            "value": 2.5,
            "warn": 2,
            "crit": 4,
            "since": 1700000000,
            "message": "load 2.50",
            "perfdata": parse_perfdata("load1=2.5;2;4;0"),
        },
    ],
}


@pytest.fixture
def connector_socket(tmp_path):
    """A control socket that answers every request with REPORT, as the daemon would."""
    path = str(tmp_path / "connector.sock")
    requests = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            requests.append(json.loads(self.rfile.readline()))
            self.wfile.write((json.dumps(REPORT) + "\n").encode())

    server = socketserver.UnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, requests
    server.shutdown()
    server.server_close()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MULTIALL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_table_shows_every_perfdata_item_whole(connector_socket):
    path, requests = connector_socket
    proc = run("sbm", "n5", "--socket", path)
    assert proc.returncode == 0, proc.stderr
    assert requests == [{"op": "sbm", "node": "n5"}]
    lines = proc.stdout.splitlines()
    assert lines[0] == "node n5: SBM status 1"
    assert (
        "perf / = 24325914624 B  warn 216442024755  crit 243497277849  min 0  max 270552530944"
        in proc.stdout
    )
    assert "perf free inodes = U (not measured)" in proc.stdout
    assert "perf load1 = 2.5  warn 2  crit 4  min 0" in proc.stdout


def test_json_carries_the_perfdata_fields(connector_socket):
    path, _requests = connector_socket
    data = json.loads(run("sbm", "--json", "--socket", path).stdout)
    root = data["rules"][0]["perfdata"]["/"]
    assert root == {
        "value": 24325914624,
        "unit": "B",
        "warn": 216442024755,
        "crit": 243497277849,
        "min": 0,
        "max": 270552530944,
    }


def test_unreachable_connector_is_one_line_and_exit_1(tmp_path):
    proc = run("sbm", "--socket", str(tmp_path / "nothing.sock"))
    assert proc.returncode == 1 and proc.stderr.startswith("multiall sbm: cannot reach")
    assert "Traceback" not in proc.stderr
