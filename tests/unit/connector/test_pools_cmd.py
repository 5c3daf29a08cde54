"""``multiall pools check|show`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MULTIALL = str(Path(sys.executable).parent / "multiall")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MULTIALL, *args], capture_output=True, text=True, timeout=60)


def test_check_ok_and_summary():
    proc = run("pools", "check", str(ROOT / "inventory/example/pools.yml"))
    assert proc.returncode == 0 and proc.stdout.startswith("OK: 8 nodes, 4 pools")


def test_check_json_lists_pools_and_no_errors():
    data = json.loads(
        run("pools", "check", str(ROOT / "inventory/example/pools.yml"), "--json").stdout
    )
    assert (
        data["ok"]
        and data["nodes"] == 8
        and sorted(data["pools"]["web"]) == ["web1", "web2", "web3"]
    )


def test_check_reports_conflicts_and_errors_without_traceback(tmp_path):
    bad = tmp_path / "p.yml"
    bad.write_text(
        "nodes:\n  a: {address: 1.2.3.4, pools: [x, y]}\npools:\n  x: {packages: {n: '1'}}\n  y: {packages: {n: '2'}}\n"
    )
    proc = run("pools", "check", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{bad}:4:" in proc.stderr and "packages.n.version" in proc.stderr
    bad.write_text("nodes: {a: {address: 1.2.3.4, pools: [nope]}}\n")
    proc = run("pools", "check", str(bad), "--json")
    data = json.loads(proc.stdout)
    assert (
        proc.returncode == 1
        and data["errors"][0]["line"] == 1
        and "nope" in data["errors"][0]["message"]
    )


def test_show_annotates_each_value_with_its_pools():
    proc = run("pools", "show", "web3", str(ROOT / "inventory/example/pools.yml"))
    assert proc.returncode == 0
    assert "port: 8000  # from api" in proc.stdout
    assert 'kind: "disk"  # from api, web' in proc.stdout


def test_show_json_and_unknown_node():
    data = json.loads(
        run("pools", "show", "api2", str(ROOT / "inventory/example/pools.yml"), "--json").stdout
    )
    assert data["pools"] == ["api", "db"] and data["connection"]["ansible_port"] == 2222
    proc = run("pools", "show", "nobody", str(ROOT / "inventory/example/pools.yml"))
    assert proc.returncode == 1 and "no node 'nobody'" in proc.stderr
