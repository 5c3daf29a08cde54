"""Making a lab node exist and answer SSH: namespaces, links, disk, host key, boot.

A part of :class:`lab.core.Lab` (a mixin over its state): it fills
``state["nodes"][name]`` (``netns``, ``host_if``, ``host_key``, ``pid``,
``unshare_pid``, ``alive``) and the node's directory (``upper``, ``merged``,
``ctl``, ``boot.log``), and uses ``_node``, ``_node_dir``, ``nodes`` and
``key_path``. ``Lab.up`` and ``Lab.revive`` drive it; everything it makes is
named with the lab's prefix or lives under the state directory, so
``Lab.down`` removes it even after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .constants import BRIDGE, CONTROLLER, LAB_NET, NEIGH_LIMITS, NODE_PATH, PREFIX
from .procs import SUPERVISOR, LabError, child_of, host_key, sh, ssh_banner, ssh_keygen


def raise_neighbour_limits() -> None:
    """Raise the host's ARP table limits to NEIGH_LIMITS (never lowers them).

    They exist in the host's network namespace only; a private lab runs in one of
    its own (lab/instance.sh, which names the host's in MULTIALL_HOST_NETNS).
    """
    host: list[str] = []
    if not Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").exists():
        netns = os.environ.get("MULTIALL_HOST_NETNS", "/proc/1/ns/net")
        host = ["nsenter", f"--net={netns}", "--"]
    for name, wanted in NEIGH_LIMITS.items():
        key = f"net.ipv4.neigh.default.{name}"
        try:
            now = subprocess.run(
                [*host, "sysctl", "-n", key], capture_output=True, text=True, check=True
            ).stdout
            if int(now) < wanted:
                subprocess.run([*host, "sysctl", "-q", "-w", f"{key}={wanted}"], check=True)
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            print(f"lab: cannot raise {key} to {wanted}: {exc}", file=sys.stderr)


class LabBoot:
    """Node creation (``_create_links``, ``_create_node``), boot and the wait for sshd."""

    def _client_key(self) -> None:
        if not self.key_path.exists():
            ssh_keygen(self.key_path, "multiall-lab")

    def _create_links(self, names: Sequence[str]) -> None:
        """Every node's namespace and veth in one ``ip -batch`` (one process, not 5 per node)."""
        lines = []
        for name in names:
            node = self._node(name)
            netns, host_if = f"{PREFIX}{name}", f"{PREFIX}v{node['index']}"
            lines += [
                f"netns add {netns}",
                f"link add {host_if} type veth peer name eth0 netns {netns}",
                f"link set {host_if} master {BRIDGE} up",
            ]
            node.update(netns=netns, host_if=host_if)
        sh(["ip", "-batch", "-"], input="\n".join(lines) + "\n", timeout=120)

    def _create_node(self, name: str) -> None:
        node = self._node(name)
        address, netns = node["address"], node["netns"]
        ndir = self._node_dir(name)
        upper, merged, ctl = ndir / "upper", ndir / "merged", ndir / "ctl"
        for d in (upper, merged, ctl):
            d.mkdir(parents=True, exist_ok=True)
        sh(
            ["ip", "-n", netns, "-batch", "-"],
            input=f"addr add {address}/{LAB_NET.prefixlen} dev eth0\nlink set eth0 up\n"
            "link set lo up\n",
        )
        # The node's "disk": a tmpfs upper layer over the machine's root.
        sh(["mount", "-t", "tmpfs", "-o", "mode=755", f"{PREFIX}{name}-disk", str(upper)])
        (upper / "u").mkdir()
        (upper / "w").mkdir()
        sh(
            [
                "mount",
                "-t",
                "overlay",
                f"{PREFIX}{name}-root",
                "-o",
                f"lowerdir=/,upperdir={upper}/u,workdir={upper}/w",
                str(merged),
            ]
        )
        self._personalise(name, merged)

    def _personalise(self, name: str, root: Path) -> None:
        """Own hostname, host key, authorised key and sshd config inside the node's root."""
        address = self._node(name)["address"]
        (root / "etc" / "hostname").write_text(name + "\n")
        ssh_dir = root / "etc" / "ssh"
        for old in ssh_dir.glob("ssh_host_*"):
            old.unlink()  # the machine's own host keys must not leak into nodes
        host_key(ssh_dir / "ssh_host_ed25519_key", f"root@{name}")
        lab_dir = root / "etc" / "multiall-lab"
        lab_dir.mkdir(parents=True, exist_ok=True)
        (lab_dir / "sshd_config").write_text(
            f"ListenAddress {address}\n"
            "Port 22\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PidFile /run/sshd.pid\n"
            "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            "MaxStartups 100:30:200\n"
            "UseDNS no\n"
        )
        dot_ssh = root / "root" / ".ssh"
        dot_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dot_ssh, 0o700)
        (dot_ssh / "authorized_keys").write_text(self.key_path.with_suffix(".pub").read_text())
        os.chmod(dot_ssh / "authorized_keys", 0o600)
        self._node(name)["host_key"] = (
            (ssh_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        )

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1 localhost", f"{CONTROLLER} controller"]
        lines += [f"{addr} {name}" for name, addr in sorted(self.nodes.items())]
        for name in self.nodes:
            (self._node_dir(name) / "merged" / "etc" / "hosts").write_text("\n".join(lines) + "\n")

    def _boot(self, name: str) -> None:
        """Start the node's namespaces with the supervisor as PID 1, then sshd."""
        node = self._node(name)
        ndir = self._node_dir(name)
        ready = ndir / "ctl" / "ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        sshd = json.dumps(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/multiall-lab/sshd_config"])
        log = open(ndir / "boot.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                node["netns"],
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "/usr/bin/python3",
                str(SUPERVISOR),
                "--root",
                str(ndir / "merged"),
                "--hostname",
                name,
                "--ctl",
                str(ndir / "ctl"),
                "--service",
                f"sshd={sshd}",
                # The checkout (with its venv) is visible in every node at the same path.
                "--share",
                str(Path(__file__).resolve().parents[1]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8"},
        )
        log.close()
        node["unshare_pid"] = proc.pid
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (ndir / "boot.log").read_text()[-1500:]
                raise LabError(f"node {name} did not boot:\n{tail}")
            time.sleep(0.02)
        node["pid"] = child_of(proc.pid)
        node["alive"] = True

    def _wait_ssh(self, names: Iterable[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in list(pending):
                if ssh_banner(self.nodes[name]):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise LabError(f"sshd did not answer on: {', '.join(sorted(pending))}")
            time.sleep(0.05)
