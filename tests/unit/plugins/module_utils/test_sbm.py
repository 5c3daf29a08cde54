"""Baseline Rules against real conditions on this machine (loopback only)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.sbm import (
    CRITICAL,
    OK,
    SNAPSHOT_TTL,
    UNKNOWN,
    WARNING,
    RuleState,
    evaluate,
    evaluate_all,
    parse_perfdata,
    worst,
)


def status(kind: str, **rule) -> int:
    return evaluate("r", {"kind": kind, **rule}).status


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_rule_goes_critical_when_a_filesystem_fills(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        rule = {"mount": str(mnt), "warn": 50, "crit": 80}
        assert status("disk", **rule) == OK
        (mnt / "fill").write_bytes(b"x" * 900 * 1024)
        result = evaluate("data", {"kind": "disk", **rule})
        assert result.status == CRITICAL and result.value > 80 and str(mnt) in result.message
        assert status("disk", mount=str(mnt), inodes=True, warn=90, crit=99) == OK
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_process_rule_sees_a_process_die():
    marker = f"sbm-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen(["python3", "-c", "import time; time.sleep(30)", marker])
    try:
        deadline = time.monotonic() + 5
        while status("process", cmdline=marker) != OK and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status("process", cmdline=marker) == OK
    finally:
        proc.kill()
        proc.wait()
    time.sleep(SNAPSHOT_TTL)  # rules of one cycle share a process-table snapshot
    assert status("process", cmdline=marker) == CRITICAL
    assert status("process", cmdline=marker, min=0) == OK


def test_port_and_tcp_rules_follow_a_listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert status("port", port=port) == OK
    assert status("tcp", host="127.0.0.1", port=port, timeout=2) == OK
    server.close()
    time.sleep(SNAPSHOT_TTL)  # rules of one cycle share a socket-table snapshot
    assert status("port", port=port) == CRITICAL
    assert status("tcp", host="127.0.0.1", port=port, timeout=1) == CRITICAL


def test_http_rule_checks_status_and_body():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/ok" else 503
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"healthy" if code == 200 else b"down")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        assert status("http", url=f"{base}/ok", match="healthy", timeout=2) == OK
        assert status("http", url=f"{base}/ok", match="banana", timeout=2) == CRITICAL
        assert status("http", url=f"{base}/bad", timeout=2) == CRITICAL
        assert status("http", url=f"{base}/bad", status=503, timeout=2) == OK
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    ("code", "expected"), [(0, OK), (1, WARNING), (2, CRITICAL), (3, UNKNOWN), (7, UNKNOWN)]
)
def test_command_rule_honours_nagios_exit_codes(tmp_path, code, expected):
    script = tmp_path / "check_x"
    script.write_text(f"#!/bin/sh\necho 'X {code} | load=1.5;2;3 used=80%'\nexit {code}\n")
    script.chmod(0o755)
    result = evaluate("nagios", {"kind": "command", "command": [str(script)]})
    assert result.status == expected
    assert result.message == f"X {code}"
    assert result.perfdata == {"load": 1.5, "used": 80.0}


def test_hung_check_is_unknown_and_does_not_block():
    result = evaluate("slow", {"kind": "command", "command": "sleep 5", "timeout": 0.3})
    assert result.status == UNKNOWN and "timed out" in result.message and result.took_ms < 2000


def test_file_rule_checks_mode_owner_checksum_and_age(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    path.chmod(0o640)
    digest = hashlib.sha256(b"hello").hexdigest()
    good = {"path": str(path), "mode": "0640", "checksum": f"sha256:{digest}", "max_age": 60}
    assert status("file", **good) == OK
    assert status("file", **{**good, "mode": "0600"}) == CRITICAL
    assert status("file", **{**good, "checksum": "sha256:00"}) == CRITICAL
    assert status("file", path=str(tmp_path / "missing")) == CRITICAL
    os.utime(path, (0, 0))
    assert status("file", **good) == CRITICAL


def test_package_rule_uses_dpkg():
    assert status("package", name="bash") == OK
    assert status("package", name="bash", version="0.0*") == CRITICAL
    assert status("package", name="multiall-no-such-package") == CRITICAL


def test_dns_and_load_rules():
    assert status("dns", name="localhost", expect=["127.0.0.1"]) in (OK, CRITICAL)
    assert status("dns", name="no-such-host.invalid", timeout=2) == CRITICAL
    assert status("load", warn=1000, crit=2000) == OK
    assert status("load", warn=0, crit=0) == CRITICAL


def test_peer_rule_without_tns_is_unknown_and_lower_is_worse_with_it():
    assert status("peer", warn=2, crit=1) == UNKNOWN
    assert (
        evaluate("p", {"kind": "peer", "warn": 2, "crit": 1, "_reachable_peers": 1}).status
        == CRITICAL
    )
    assert evaluate("p", {"kind": "peer", "warn": 2, "crit": 1, "_reachable_peers": 3}).status == OK


def test_worst_rule_decides_and_disabled_rules_are_skipped():
    assert worst([OK, UNKNOWN, WARNING]) == WARNING and worst([OK, CRITICAL, WARNING]) == CRITICAL
    assert worst([OK, UNKNOWN]) == UNKNOWN and worst([]) == OK
    results = evaluate_all(
        {"a": {"kind": "load", "crit": 0}, "b": {"kind": "load", "crit": 0, "enabled": False}}
    )
    assert [r.rule for r in results] == ["a"]


def test_perfdata_parsing():
    assert parse_perfdata("'time'=0.05s;1;2 size=12KB x=U") == {
        "time": 0.05,
        "size": 12.0,
        "x": "U",
    }


def test_flapping_is_damped_by_for_and_recovery_needs_hold_down():
    state = RuleState(consecutive=3, hold_down=10)
    assert state.update(OK, now=0) is True  # the first measurement is reported at once
    assert [state.update(CRITICAL, now=t) for t in (3, 4)] == [False, False]
    assert state.update(OK, now=5) is False  # a blip resets the count
    assert [state.update(CRITICAL, now=t) for t in (6, 7, 8)] == [False, False, True]
    assert state.reported == CRITICAL
    assert [state.update(OK, now=t) for t in (9, 10, 11)] == [
        False,
        False,
        False,
    ]  # 3 OKs but < 10 s
    assert state.update(OK, now=19.5) is True and state.reported == OK
