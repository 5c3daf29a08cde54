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
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from ansible_collections.takelan.multiall.plugins.module_utils._control import exchange

from .faults import LabFaults
from .procs import (
    SUPERVISOR,
    LabError,
    child_of,
    cmdline,
    host_key,
    is_lab_supervisor,
    mounts_under,
    pid_alive,
    sh,
    ssh_banner,
    supervisors_under,
    wait_gone,
)

LAB_NET = ipaddress.ip_network("198.18.0.0/24")
CONTROLLER = "198.18.0.1"


def _prefix() -> str:
    """Name prefix of everything the lab makes; ``MULTIALL_LAB_PREFIX`` gives a private lab.

    ``lab/instance.sh K`` runs a command against lab K: its own controller network
    namespace (so the same 198.18.0.0/24 addresses and bridge name do not clash),
    state dir and this prefix for the globally named network namespaces and mounts.
    """
    prefix = os.environ.get("MULTIALL_LAB_PREFIX", "ma-")
    if not re.fullmatch(r"ma[0-9]?-", prefix):
        raise SystemExit(f"MULTIALL_LAB_PREFIX={prefix!r}: expected 'ma-' or 'maK-' (K a digit)")
    return prefix


PREFIX = _prefix()
BRIDGE = f"{PREFIX}br0"
DEFAULT_STATE = "/run/multiall-lab"
BOOT_WORKERS = 24
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# The kernel's IPv4 neighbour (ARP) table is one for every network namespace, capped
# by these sysctls (Linux defaults 128 / 512 / 1024). A lab of N nodes where every node
# talks to every other (Serf gossips with random members) needs ~N^2 entries: 64 nodes
# are 4 032, more than the cap, and the kernel then drops packets to peers it cannot
# resolve ("neighbor table overflow" in dmesg). Serf then marked live members failed
# and joins timed out, which is what kept 64-node labs from converging.
NEIGH_LIMITS = {"gc_thresh1": 4096, "gc_thresh2": 32768, "gc_thresh3": 65536}


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


def nodes_from_pools(path: str) -> dict[str, str]:
    """Node name -> address from a pools file; addresses must be lab addresses."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"{path}: cannot read pools file: {exc}") from None
    nodes = (data or {}).get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        raise LabError(f"{path}: no 'nodes' mapping: the lab needs node names and addresses")
    out: dict[str, str] = {}
    for name, spec in nodes.items():
        address = (spec or {}).get("address") if isinstance(spec, dict) else None
        try:
            ip = ipaddress.ip_address(str(address))
        except ValueError:
            raise LabError(
                f"{path}: nodes.{name}.address {address!r} is not an IP address"
            ) from None
        if ip not in LAB_NET or str(ip) == CONTROLLER or ip == LAB_NET.network_address:
            raise LabError(
                f"{path}: nodes.{name}.address {ip} is outside the lab range "
                f"{LAB_NET} (198.18.0.2-254; .1 is the controller)"
            )
        out[str(name)] = str(ip)
    return out


class Lab(LabFaults):
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

    def _client_key(self) -> None:
        if not self.key_path.exists():
            sh(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "multiall-lab",
                    "-f",
                    str(self.key_path),
                ]
            )

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

    def _write_inventories(self, pools_file: str | None) -> None:
        known = [
            f"{addr},{name} {' '.join(self._node(name)['host_key'])}"
            for name, addr in sorted(self.nodes.items())
        ]
        self.known_hosts_path.write_text("\n".join(known) + "\n")
        common = (
            f"-o UserKnownHostsFile={self.known_hosts_path} -o StrictHostKeyChecking=yes "
            "-o ControlMaster=auto -o ControlPersist=60s -o ConnectTimeout=15 "
            # A killed node must fail within seconds, not hang on a dead multiplexed
            # connection; a live node starved on a loaded CI machine must not (12 s).
            "-o ServerAliveInterval=3 -o ServerAliveCountMax=4"
        )
        conn = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key_path),
            "ansible_ssh_common_args": common,
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        static = {
            "all": {
                "hosts": {n: {"ansible_host": a, **conn} for n, a in sorted(self.nodes.items())}
            }
        }
        self.static_inventory_path.write_text(yaml.safe_dump(static, sort_keys=False))
        if pools_file:
            model = yaml.safe_load(Path(pools_file).read_text()) or {}
        else:
            model = {
                "nodes": {
                    n: {"address": a, "pools": ["lab"]} for n, a in sorted(self.nodes.items())
                },
                "pools": {"lab": {}},
            }
        model["plugin"] = "takelan.multiall.pools"
        defaults = dict(model.get("defaults") or {})
        defaults.update(
            ssh_user="root",
            ssh_private_key_file=str(self.key_path),
            ssh_common_args=common,
            python="/usr/bin/python3",
        )
        model["defaults"] = defaults
        ordered = {"plugin": model.pop("plugin"), "defaults": model.pop("defaults"), **model}
        self.inventory_path.write_text(
            "# Generated by `lab up`: the lab's pool model with its SSH settings.\n"
            + yaml.safe_dump(ordered, sort_keys=False)
        )

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
