"""PID 1 of a lab node: mounts the node's root, reaps zombies, runs its services.

Started by ``lab.boot`` (``LabBoot._boot``) as::

    ip netns exec ma-NODE unshare --mount --uts --pid --fork --propagation private \
        /usr/bin/python3 lab/supervisor.py --root MERGED --hostname NODE --ctl CTLDIR

It mounts /proc, /sys, /dev, a fresh /run and /tmp inside the overlay root,
chroots into it, then serves JSON-line requests on ``/run/lab/supervisor.sock``
(``CTLDIR/supervisor.sock`` seen from the host): ``start``, ``stop``,
``enable`` (``enabled``: whether it is restarted when it exits, the lab's
``systemctl enable``), ``status``, ``list``. Services run in their own session with output in
``/run/lab/logs/NAME.log``; with ``restart`` they come back after exiting, with
backoff. There is no systemd in the lab: this file is its stand-in, so it uses
the standard library only (it runs under the node's /usr/bin/python3).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from typing import Any, NoReturn

_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC, MS_NOSUID, MS_NODEV, MS_NOEXEC = 4096, 16384, 2, 4, 8


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    """mount(2) without needing util-linux inside the node."""
    os.makedirs(target, exist_ok=True)
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


class Service:
    """One supervised process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], restart: bool) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.restart = restart
        self.pid: int | None = None
        self.started_at = 0.0
        self.exits = 0
        self.last_status: int | None = None
        self.stopping = False
        self.backoff = 0.2

    def spawn(self) -> None:
        os.makedirs("/run/lab/logs", exist_ok=True)
        log = open(f"/run/lab/logs/{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
        }
        env.update(self.env)
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        log.close()
        self.pid = proc.pid
        self.started_at = time.time()
        self.stopping = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": self.argv,
            "pid": self.pid,
            "running": self.pid is not None,
            "restart": self.restart,
            "exits": self.exits,
            "last_status": self.last_status,
            "since": self.started_at,
        }


class Supervisor:
    """Service table + reaper. All state changes hold ``self.lock``."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.lock = threading.Lock()

    def start(
        self, name: str, argv: list[str], env: dict[str, str], restart: bool
    ) -> dict[str, Any]:
        with self.lock:
            svc = self.services.get(name)
            if svc and svc.pid is not None:
                return {"ok": True, "already": True, "service": svc.as_dict()}
            svc = Service(name, argv, env, restart)
            self.services[name] = svc
            svc.spawn()
            return {"ok": True, "service": svc.as_dict()}

    def stop(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                return {"ok": False, "error": f"no service {name!r}"}
            svc.stopping = True
            svc.restart = False
            pid = svc.pid
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while time.time() < deadline and self.services[name].pid is not None:
                time.sleep(0.05)
            if self.services[name].pid is not None:
                _signal_group(pid, signal.SIGKILL)
        with self.lock:
            self.services.pop(name, None)
        return {"ok": True}

    def enable(self, name: str, enabled: bool) -> dict[str, Any]:
        """Restart a running service when it exits (enabled) or not: ``systemctl enable``."""
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                return {"ok": False, "error": f"no service {name!r}"}
            svc.restart = enabled
            return {"ok": True, "service": svc.as_dict()}

    def status(self, name: str | None) -> dict[str, Any]:
        with self.lock:
            if name is None:
                return {"ok": True, "services": [s.as_dict() for s in self.services.values()]}
            svc = self.services.get(name)
            if svc is None:
                return {"ok": False, "error": f"no service {name!r}"}
            return {"ok": True, "service": svc.as_dict()}

    def reap_forever(self) -> NoReturn:
        """Wait for every child (PID 1 inherits orphans) and restart services.

        Never returns: a node's PID 1 lives until SIGTERM, whose handler stops
        the services and exits the process (``os._exit``).
        """
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.2)
                continue
            except InterruptedError:
                continue
            with self.lock:
                for svc in self.services.values():
                    if svc.pid == pid:
                        svc.pid = None
                        svc.exits += 1
                        svc.last_status = os.waitstatus_to_exitcode(status)
                        if svc.restart and not svc.stopping:
                            threading.Thread(target=self._respawn, args=(svc,), daemon=True).start()

    def _respawn(self, svc: Service) -> None:
        time.sleep(svc.backoff)
        svc.backoff = min(svc.backoff * 2, 5.0)
        with self.lock:
            if svc.restart and not svc.stopping and self.services.get(svc.name) is svc:
                svc.spawn()

    def shutdown(self) -> None:
        for name in list(self.services):
            self.stop(name, timeout=2.0)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def serve(supervisor: Supervisor, path: str) -> None:
    """JSON-line control socket (mode 0600)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    req = json.loads(line)
                    op = req.get("op")
                    if op == "start":
                        resp = supervisor.start(
                            req["name"],
                            list(req["argv"]),
                            dict(req.get("env") or {}),
                            bool(req.get("restart", True)),
                        )
                    elif op == "stop":
                        resp = supervisor.stop(req["name"])
                    elif op == "enable":
                        resp = supervisor.enable(req["name"], bool(req["enabled"]))
                    elif op in ("status", "list"):
                        resp = supervisor.status(req.get("name"))
                    elif op == "ping":
                        resp = {"ok": True, "pid": os.getpid()}
                    else:
                        resp = {"ok": False, "error": f"unknown op {op!r}"}
                except (KeyError, TypeError, ValueError, OSError) as exc:
                    resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                self.wfile.write((json.dumps(resp) + "\n").encode())
                self.wfile.flush()

    if os.path.exists(path):
        os.unlink(path)
    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    os.chmod(path, 0o600)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


def prepare_root(root: str, hostname: str, ctl: str, shares: list[str]) -> None:
    """Mount what a booting server has, then chroot into the node's root.

    ``shares`` are host directories bound at the same path inside the node (the
    checkout with its venv): the node's own /tmp and /run hide them otherwise.
    """
    socket.sethostname(hostname)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", f"{root}/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("/dev", f"{root}/dev", None, MS_BIND | MS_REC)
    mount("tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount(ctl, f"{root}/run/lab", None, MS_BIND)
    for path in shares:
        mount(path, f"{root}{path}", None, MS_BIND | MS_REC)
    os.chroot(root)
    os.chdir("/")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/run/lab/logs", exist_ok=True)


def main() -> NoReturn:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--ctl", required=True)
    parser.add_argument(
        "--service", action="append", default=[], help="NAME=JSON-ARGV started at boot"
    )
    parser.add_argument(
        "--share", action="append", default=[], help="host directory visible at the same path"
    )
    args = parser.parse_args()

    prepare_root(args.root, args.hostname, args.ctl, args.share)
    supervisor = Supervisor()

    def stop(_signum: int, _frame: object) -> NoReturn:
        """On SIGTERM stop every service cleanly, then end PID 1 and so the node."""
        supervisor.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(supervisor, "/run/lab/supervisor.sock")
    for spec in args.service:
        name, argv = spec.split("=", 1)
        supervisor.start(name, json.loads(argv), {}, True)
    with open("/run/lab/ready", "w") as ready:
        ready.write(str(time.time()))
    supervisor.reap_forever()


if __name__ == "__main__":
    main()
