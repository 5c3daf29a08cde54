"""``multiall pools check|show`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MULTIALL = str(Path(sys.executable).parent / "multiall")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MULTIALL, *args], capture_output=True, text=True, timeout=60, check=False
    )


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


SMALL_DNS_POOL = (
    "nodes:\n  a: {address: 198.18.0.1, pools: [web]}\n  b: {address: 198.18.0.2, pools: [web]}\n"
    "pools:\n  web:\n    dns: {zone: web.example.net}\n"
)


def test_check_warns_about_a_dns_pool_of_two_but_exits_0(tmp_path):
    pools = tmp_path / "pools.yml"
    pools.write_text(SMALL_DNS_POOL)
    proc = run("pools", "check", str(pools))
    assert proc.returncode == 0 and proc.stdout.startswith("OK: 2 nodes, 1 pools")
    assert f"warning: {pools}:6:5: pools.web.dns: pool 'web' has a dns section but only 2" in (
        proc.stderr
    )
    data = json.loads(run("pools", "check", str(pools), "--json").stdout)
    assert data["ok"] and data["errors"] == []
    (warning,) = data["warnings"]
    assert (warning["file"], warning["line"], warning["path"]) == (str(pools), 6, "pools.web.dns")
    assert "fewer than 3" in warning["message"]


# Hang guard only: before the limit this ran about a minute into a MemoryError traceback.
@pytest.mark.timeout(5)
def test_check_refuses_an_alias_bomb_quickly_without_traceback(tmp_path):
    levels = [f"      l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "pools.yml"
    bomb.write_text(
        "nodes: {a: {address: 198.18.0.1}}\npools:\n  p:\n    members: [a]\n    vars:\n"
        "      l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "\n".join(levels)
        + "\n"
    )
    proc = run("pools", "check", str(bomb))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{bomb}:10:" in proc.stderr and "YAML alias bomb" in proc.stderr


def test_show_names_the_ip_tns_uses_when_ssh_uses_a_host_name(tmp_path):
    pools = tmp_path / "pools.yml"
    pools.write_text(
        "nodes: {web1: {address: web1.example.net, ip: 198.18.0.11, pools: [web]}}\n"
        "pools: {web: {}}\n"
    )
    proc = run("pools", "show", "web1", str(pools))
    assert proc.returncode == 0, proc.stderr
    assert "address: web1.example.net\nip: 198.18.0.11  # what TNS uses\n" in proc.stdout
    assert json.loads(run("pools", "show", "web1", str(pools), "--json").stdout)["ip"] == (
        "198.18.0.11"
    )
