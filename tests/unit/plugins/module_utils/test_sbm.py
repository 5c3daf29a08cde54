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
from ansible_collections.takelan.multiall.plugins.module_utils._sbm_perfdata import (
    format_perfdata,
    parse_perfdata,
    split_plugin_output,
)
from ansible_collections.takelan.multiall.plugins.module_utils.sbm import (
    CHECKS,
    CRITICAL,
    KINDS,
    OK,
    SNAPSHOT_TTL,
    UNKNOWN,
    WARNING,
    RuleState,
    evaluate,
    evaluate_all,
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
    assert result.perfdata == {
        "load": {"value": 1.5, "unit": "", "warn": 2, "crit": 3, "min": None, "max": None},
        "used": {"value": 80, "unit": "%", "warn": None, "crit": None, "min": None, "max": None},
    }


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


def perf(value, unit="", warn=None, crit=None, minimum=None, maximum=None):
    return {
        "value": value,
        "unit": unit,
        "warn": warn,
        "crit": crit,
        "min": minimum,
        "max": maximum,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # check_disk -w 20% -c 10% -p /
            "/=23396876288B;216442024755;243497277849;0;270552530944",
            {"/": perf(23396876288, "B", 216442024755, 243497277849, 0, 270552530944)},
        ),
        (  # check_load: warn/crit written with decimals, max left empty, trailing ';'
            "load1=1.810;15.000;30.000;0; load5=1.370;10.000;25.000;0; load15=0.650;5.000;20.000;0; ",
            {
                "load1": perf(1.81, "", 15.0, 30.0, 0),
                "load5": perf(1.37, "", 10.0, 25.0, 0),
                "load15": perf(0.65, "", 5.0, 20.0, 0),
            },
        ),
        ("users=0;5;10;0", {"users": perf(0, "", 5, 10, 0)}),  # check_users
        (  # check_http: time in seconds, empty fields, size with min only
            "time=0.002116s;;;0.000000;10.000000 size=1234B;;;0",
            {
                "time": perf(0.002116, "s", None, None, 0.0, 10.0),
                "size": perf(1234, "B", None, None, 0),
            },
        ),
        (  # quoted labels (spaces, a doubled quote), ranges kept as written, U = not measured
            "'free space'=12.5%;@10:20;~:5 'it''s'=3c;10:;; rtt=U",
            {
                "free space": perf(12.5, "%", "@10:20", "~:5"),
                "it's": perf(3, "c", "10:"),
                "rtt": perf(None),
            },
        ),
        ("garbage =5 ok=1 bad=abc", {"ok": perf(1)}),  # what is not label=value is skipped
    ],
)
def test_perfdata_keeps_label_value_unit_warn_crit_min_max(text, expected):
    assert parse_perfdata(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "/=23396876288B;216442024755;243497277849;0;270552530944",
        "load1=0.18;15.0;30.0;0 'a b'=1;@1:2 'x''y'=U;;;0;1",
    ],
)
def test_perfdata_survives_the_compact_form_used_in_serf_answers(text):
    parsed = parse_perfdata(text)
    assert parse_perfdata(format_perfdata(parsed)) == parsed
    assert len(format_perfdata(parsed)) <= len(text)


def test_long_output_perfdata_after_a_second_bar_is_kept():
    message, perfdata = split_plugin_output(
        "DISK OK - free space: / 80 GB | /=24B;216;243;0;270\n/var: 3 GB free | /var=3B;;;0;9\n/x=1B"
    )
    assert message == "DISK OK - free space: / 80 GB"
    assert set(parse_perfdata(perfdata)) == {"/", "/var", "/x"}


CHECK_DISK = "/usr/lib/nagios/plugins/check_disk"


@pytest.mark.skipif(not os.access(CHECK_DISK, os.X_OK), reason="monitoring-plugins-basic missing")
def test_real_check_disk_perfdata_reaches_the_result_whole():
    result = evaluate(
        "root", {"kind": "command", "command": [CHECK_DISK, "-w", "1%", "-c", "1%", "-p", "/"]}
    )
    assert result.status == OK and result.message.startswith("DISK OK")
    root = result.perfdata["/"]
    assert root["unit"] == "B" and root["min"] == 0
    assert 0 < root["value"] < root["max"] and root["warn"] >= root["crit"] > 0


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


def test_rule_kinds_come_from_the_checks_alone():
    from ansible_collections.takelan.multiall.plugins.module_utils import _pools_spec

    kind_field = _pools_spec.BASELINE_RULE.keys["kind"]
    assert tuple(kind_field.choices) == KINDS == tuple(sorted(CHECKS))
    # Parameters are declared only for kinds that exist.
    assert set(_pools_spec.BASELINE_PARAMS) <= set(KINDS)
