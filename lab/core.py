"""The lab: several real servers on one machine, from network + mount namespaces.

Each node is a network namespace ``<prefix><node>`` (a veth to the bridge ``<prefix>br0``
that holds the controller address 198.18.0.1) plus, per boot, new mount/UTS/PID
namespaces whose PID 1 is ``lab/supervisor.py``. Its root is an overlay of the
machine's ``/`` with a per-node tmpfs as upper layer, so every node has its own
/etc, dpkg database, hostname and /var, and keeps them across ``kill``/``revive``
like a server keeps its disk across a reboot. Each node runs its own ``sshd``
on its lab address with its own host key, pinned in ``known_hosts``.

Traffic never leaves the machine: no route, NAT or forwarding is set up, and
every address is in 198.18.0.0/24. Everything the lab makes is named ``ma-*`` (``maK-*`` in private lab K)
or lives under the state directory, so ``down()`` can clean up after a crash.

This module holds :class:`Lab` itself: its state file, ``up`` (the order of the
steps), node operations, services and ``down``. Its parts live beside it:
``constants.py`` (addresses, prefix, paths), ``boot.py`` (making a node exist
and answer SSH), ``inventories.py`` (pools file in, inventories out),
``faults.py`` (partitions, loss) and ``procs.py`` (host commands, processes,
mounts). The names other modules import from here are re-exported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import exchange

from .boot import LabBoot, raise_neighbour_limits
from .constants import BOOT_WORKERS, BRIDGE, CONTROLLER, DEFAULT_STATE, LAB_NET, NODE_PATH, PREFIX
from .faults import LabFaults
from .inventories import LabInventories, nodes_from_pools
from .procs import (
    LabError,
    cmdline,
    is_lab_supervisor,
    mounts_under,
    pid_alive,
    sh,
    ssh_banner,
    supervisors_under,
    wait_gone,
)

__all__ = [
    "CONTROLLER",
    "LAB_NET",
    "PREFIX",
    "Lab",
    "LabError",
    "nodes_from_pools",
    "pid_alive",
    "ssh_banner",
]


class Lab(LabBoot, LabInventories, LabFaults):
    """Python API of the lab (the ``lab`` CLI is a thin shell over it)."""

    def __init__(self, state_dir: str | None = None) -> None:
        self.state_dir = Path(state_dir or os.environ.get("MULTIALL_LAB_DIR") or DEFAULT_STATE)
        self.state_file = self.state_dir / "state.json"
        self.state: dict[str, Any] = self._read_state()

    # ---------------------------------------------------------------- state
    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)

    @property
    def nodes(self) -> dict[str, str]:
        """Node name -> lab address."""
        return {n: v["address"] for n, v in self.state.get("nodes", {}).items()}

    @property
    def inventory_path(self) -> Path:
        """The MultiAll pools model of the lab (use with ``-i``)."""
        return self.state_dir / "pools.yml"

    @property
    def static_inventory_path(self) -> Path:
        """A plain static Ansible inventory of the lab."""
        return self.state_dir / "hosts.yml"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    def _node(self, name: str) -> dict[str, Any]:
        try:
            return self.state["nodes"][name]
        except KeyError:
            known = ", ".join(sorted(self.state.get("nodes", {}))) or "(lab is down)"
            raise LabError(f"no lab node {name!r}; nodes: {known}") from None

    def _node_dir(self, name: str) -> Path:
        return self.state_dir / "nodes" / name

    def node_root(self, name: str) -> Path:
        """The node's root filesystem as seen from the host (write config into it)."""
        self._node(name)
        return self._node_dir(name) / "merged"

    def ctl_path(self, name: str) -> Path:
        """Host path of the node's /run/lab (sockets and logs the host can reach)."""
        self._node(name)
        return self._node_dir(name) / "ctl"

    @contextlib.contextmanager
    def _locked(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------- up
    def up(
        self, n: int | None = None, pools_file: str | None = None, force: bool = False
    ) -> dict[str, str]:
        """Build the lab: ``n`` nodes n1..nN, or the nodes of a pools file."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, mounts)")
        if pools_file:
            wanted = nodes_from_pools(pools_file)
        elif n and 1 <= n <= 200:
            wanted = {f"n{i}": str(LAB_NET.network_address + 10 + i) for i in range(1, n + 1)}
        else:
            raise LabError("lab up needs a node count (1-200) or --pools FILE")
        if self.state.get("nodes") or self._leftovers():
            if not force:
                raise LabError(
                    "a lab is already up (lab status); run `lab down` first or use --force"
                )
            self.down()
        with self._locked():
            self.state = {"nodes": {}, "pools_file": pools_file, "started": time.time()}
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._client_key()
            raise_neighbour_limits()
            sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
            sh(["ip", "addr", "add", f"{CONTROLLER}/{LAB_NET.prefixlen}", "dev", BRIDGE])
            sh(["ip", "link", "set", BRIDGE, "up"])
            for index, (name, address) in enumerate(sorted(wanted.items()), start=1):
                self.state["nodes"][name] = {"address": address, "index": index}
            self._write_state()
            try:
                self._create_links(sorted(wanted))
                # The work per node is mostly waiting (mounts, child processes): more
                # workers than cores pay off (128 nodes: 39 s -> see benchmarks/RESULTS.md).
                with ThreadPoolExecutor(max_workers=BOOT_WORKERS) as pool:
                    list(pool.map(self._create_node, sorted(wanted)))
                self._write_hosts_files()
                with ThreadPoolExecutor(max_workers=BOOT_WORKERS) as pool:
                    list(pool.map(self._boot, sorted(wanted)))
                self._write_state()
                self._write_inventories(pools_file)
                self._wait_ssh(sorted(wanted))
            except BaseException:
                self._write_state()
                self.down()
                raise
        return self.nodes

    # ---------------------------------------------------------- operations
    def exec(
        self,
        node: str,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command inside a node (all its namespaces and its root)."""
        info = self._node(node)
        if not info.get("alive") or not info.get("pid") or not pid_alive(info["pid"]):
            raise LabError(f"node {node} is not running (lab revive {node})")
        proc = subprocess.run(
            ["nsenter", "-t", str(info["pid"]), "-n", "-m", "-u", "-p", "-r", "-w", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"},
            check=False,
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"{node}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def ssh_argv(self, node: str) -> list[str]:
        """argv prefix to ssh into a node with the pinned host key."""
        return [
            "ssh",
            "-i",
            str(self.key_path),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"root@{self.nodes[node]}",
        ]

    def kill(self, node: str) -> None:
        """The server dies: every process of the node is killed and its link goes down."""
        info = self._node(node)
        sh(["ip", "link", "set", info["host_if"], "down"])
        self._stop_processes(info)
        info["alive"] = False
        self._write_state()

    def revive(self, node: str) -> None:
        """The server boots again: link up, same disk, same host key, sshd back."""
        info = self._node(node)
        if info.get("alive") and info.get("pid") and pid_alive(info["pid"]):
            sh(["ip", "link", "set", info["host_if"], "up"])
            return
        sh(["ip", "link", "set", info["host_if"], "up"])
        self._boot(node)
        self._write_state()
        self._wait_ssh([node])

    def _stop_processes(self, info: dict[str, Any]) -> None:
        pid = info.get("pid")
        if pid and is_lab_supervisor(pid):
            # SIGKILL to a PID namespace's init kills every process in it; its
            # parent (unshare) then reaps it and exits by itself.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        unshare_pid = info.get("unshare_pid")
        if unshare_pid and b"unshare" in cmdline(unshare_pid):
            wait_gone(unshare_pid, timeout=2)
            if pid_alive(unshare_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(unshare_pid, signal.SIGKILL)
                wait_gone(unshare_pid)
        if unshare_pid:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(unshare_pid, os.WNOHANG)  # our own child when up() ran in this process

    # ------------------------------------------------------------- services
    def _control(self, node: str, request: dict[str, Any]) -> dict[str, Any]:
        path = self._node_dir(node) / "ctl" / "supervisor.sock"
        try:
            reply = exchange(str(path), request, timeout=15)
        except OSError as exc:
            raise LabError(
                f"node {node}: supervisor not reachable ({exc}); is the node running?"
            ) from None
        except ValueError as exc:
            raise LabError(f"node {node}: bad answer from the supervisor ({exc})") from None
        if not reply.get("ok"):
            raise LabError(f"node {node}: {reply.get('error', 'supervisor error')}")
        return reply

    def service_start(
        self,
        node: str,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        restart: bool = True,
    ) -> dict[str, Any]:
        """Start (and supervise) a service inside a node."""
        return self._control(
            node,
            {"op": "start", "name": name, "argv": list(argv), "env": env or {}, "restart": restart},
        )["service"]

    def service_stop(self, node: str, name: str) -> None:
        """Stop a service (no restart)."""
        self._control(node, {"op": "stop", "name": name})

    def service_status(self, node: str, name: str | None = None) -> Any:
        """One service's status, or all of them."""
        reply = self._control(node, {"op": "status", "name": name})
        return reply.get("service") if name else reply.get("services")

    def service_log(self, node: str, name: str) -> str:
        """A service's output so far."""
        path = self._node_dir(node) / "ctl" / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Machine-readable state of every node."""
        out = {}
        for name, info in sorted(self.state.get("nodes", {}).items()):
            running = bool(info.get("alive") and info.get("pid") and pid_alive(info["pid"]))
            out[name] = {
                "address": info["address"],
                "running": running,
                "sshd": ssh_banner(info["address"]) if running else False,
                "loss": info.get("loss", 0),
            }
        return {
            "state_dir": str(self.state_dir),
            "nodes": out,
            "partition": self.state.get("partition"),
        }

    # ------------------------------------------------------------------ down
    def _leftovers(self) -> list[str]:
        netns = sh(["ip", "netns", "list"], check=False).stdout.split()
        return [n for n in netns if n.startswith(PREFIX)]

    def down(self) -> None:
        """Remove every namespace, mount, link and process the lab made (also after a crash).

        Everything is killed first and waited for together, then removed in a
        few batched commands: 128 nodes come down in seconds, not one by one.
        """
        nodes = list(self.state.get("nodes", {}).values())
        for info in nodes:
            pid = info.get("pid")
            if pid and is_lab_supervisor(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for info in nodes:
            self._stop_processes(info)
        left = supervisors_under(self.state_dir)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            wait_gone(pid)
        mounts = mounts_under(self.state_dir)
        for start in range(0, len(mounts), 200):
            sh(["umount", "-l", *mounts[start : start + 200]], check=False)
        batch = [f"netns del {netns}" for netns in self._leftovers()]
        links = sh(["ip", "-o", "link", "show"], check=False).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(PREFIX):
                batch.append(f"link del {name}")
        if batch:
            # -force: a veth already gone with its namespace must not stop the rest.
            sh(["ip", "-force", "-batch", "-"], input="\n".join(batch) + "\n", check=False)
        if self.state_dir.exists():
            keep = {"id_ed25519", "id_ed25519.pub", "lock"}
            for child in self.state_dir.iterdir():
                if child.name in keep:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        self.state = {}
