"""The lab itself: real namespaces, real sshd, real nftables; and nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.core import PREFIX, pid_alive, ssh_banner

pytestmark = pytest.mark.lab
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def reaches(lab, src: str, dst: str) -> bool:
    """Can node ``src`` open a TCP connection to ``dst``'s sshd?"""
    probe = lab.exec(
        src,
        [
            "python3",
            "-c",
            f"import socket; socket.create_connection(('{lab.nodes[dst]}', 22), 1).close()",
        ],
        check=False,
        timeout=10,
    )
    return probe.returncode == 0


def ssh(lab, node: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lab.ssh_argv(node), *argv], capture_output=True, text=True, timeout=30, check=False
    )


def test_nodes_answer_over_ssh_with_pinned_host_keys_and_own_hostnames(lab3):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run(
        [str(BIN / "ansible"), "-i", str(lab3.static_inventory_path), "all", "-m", "ping"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 3
    assert "DEPRECATION" not in proc.stderr, proc.stderr
    for name in lab3.nodes:
        assert ssh(lab3, name, "hostname").stdout.strip() == name


def test_each_node_has_its_own_etc(lab3):
    lab3.exec("n1", ["sh", "-c", "echo mine > /etc/lab-test-marker"])
    assert lab3.exec("n1", ["cat", "/etc/lab-test-marker"]).stdout == "mine\n"
    assert lab3.exec("n2", ["test", "-e", "/etc/lab-test-marker"], check=False).returncode != 0
    assert not Path("/etc/lab-test-marker").exists()
    # Nodes do not carry the machine's own SSH host keys.
    keys = lab3.exec("n2", ["sh", "-c", "ls /etc/ssh/ssh_host_*"]).stdout.split()
    assert keys == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"]


def test_partition_splits_groups_and_heal_restores(lab3):
    lab3.partition(["n1"], ["n2", "n3"])
    try:
        assert not reaches(lab3, "n1", "n2")
        assert not reaches(lab3, "n3", "n1")
        assert reaches(lab3, "n2", "n3")
        # the controller reaches all (a loaded machine may need more than the default 0.5 s)
        assert all(ssh_banner(addr, timeout=5) for addr in lab3.nodes.values())
    finally:
        lab3.heal()
    assert reaches(lab3, "n1", "n2")


def test_kill_stops_every_process_and_revive_keeps_host_key_and_disk(lab3):
    lab3.exec("n2", ["sh", "-c", "echo kept > /var/tmp/disk-marker"])
    old_pid = lab3.state["nodes"]["n2"]["pid"]
    lab3.kill("n2")
    assert not ssh_banner(lab3.nodes["n2"])
    assert not pid_alive(old_pid)  # gone, or at most a zombie awaiting its reaper
    assert lab3.status()["nodes"]["n2"]["running"] is False
    lab3.revive("n2")
    # StrictHostKeyChecking=yes against the pinned key: same host key after the "reboot".
    proc = ssh(lab3, "n2", "cat", "/var/tmp/disk-marker")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "kept\n"


def test_loss_drops_packets_and_zero_clears(lab3):
    address = lab3.nodes["n3"]
    lab3.loss("n3", 100)
    try:
        with pytest.raises(OSError):
            socket.create_connection((address, 22), timeout=1).close()
    finally:
        lab3.loss("n3", 0)
    assert ssh_banner(address, timeout=5)  # sshd answers again


def test_supervisor_restarts_a_service_that_exits(lab3):
    lab3.service_start("n1", "flaky", ["sh", "-c", "echo run; sleep 0.2; exit 3"], restart=True)
    deadline = time.monotonic() + 10
    while lab3.service_status("n1", "flaky")["exits"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    status = lab3.service_status("n1", "flaky")
    assert status["exits"] >= 2 and status["last_status"] == 3
    assert lab3.service_log("n1", "flaky").count("run") >= 2
    lab3.service_stop("n1", "flaky")
    assert all(s["name"] != "flaky" for s in lab3.service_status("n1"))


def test_exec_on_a_killed_node_fails_clearly(lab_factory):
    lab = lab_factory(n=1)
    lab.kill("n1")
    with pytest.raises(Exception, match="not running"):
        lab.exec("n1", ["true"])


def test_up_rejects_addresses_outside_the_lab_range(lab_factory, tmp_path):
    from lab import LabError

    bad = tmp_path / "bad.pools.yml"
    bad.write_text("nodes:\n  x1: {address: 10.0.0.5}\n")
    with pytest.raises(LabError, match="outside the lab range"):
        lab_factory(pools_file=str(bad))


def test_down_leaves_nothing_behind(lab_factory):
    lab = lab_factory(n=2)
    lab.partition(["n1"], ["n2"])
    lab.down()
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert PREFIX not in netns
    assert f" {PREFIX}" not in links
    assert str(lab.state_dir) not in Path("/proc/mounts").read_text()
    # this lab's supervisors (other private labs may be running beside it)
    marker = f"{lab.state_dir}/nodes/".encode()
    ours = [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and b"lab/supervisor.py" in _cmd(p) and marker in _cmd(p)
    ]
    assert ours == []


def _cmd(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
