"""Host-side helpers of the lab: commands, processes, mounts, host keys, sshd banners.

Kept apart from ``core.py`` (the ``Lab`` itself): these work on pids, ``/proc``
and files only, and ``down()`` relies on them to clean up after a crash.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"


class LabError(Exception):
    """A lab operation failed; the message says what and how to fix it."""


def sh(
    argv: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run a host command; failures become LabError with the command's stderr."""
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def ssh_keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair at PATH and PATH.pub, as ``ssh-keygen`` names them (client keys)."""
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def host_key(path: Path, comment: str) -> None:
    """A new ed25519 host key at PATH (OpenSSH format), without a process per node."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    path.with_suffix(".pub").write_bytes(public + b" " + comment.encode() + b"\n")


def ssh_banner(address: str, timeout: float = 0.5) -> bool:
    """True when an sshd answers on address:22."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/stat")
    try:
        return status.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def is_lab_supervisor(pid: int) -> bool:
    return str(SUPERVISOR).encode() in cmdline(pid)


def child_of(parent: int, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise LabError(f"no child of unshare pid {parent}")


def wait_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def supervisors_under(state_dir: Path) -> list[int]:
    """Supervisor processes of this lab still running (found by their command line)."""
    marker = f"--ctl\x00{state_dir}/nodes/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = cmdline(int(entry.name))
            if str(SUPERVISOR).encode() in cmd and marker in cmd:
                found.append(int(entry.name))
    return found


def mounts_under(state_dir: Path) -> list[str]:
    """Mount points below the state dir, deepest first."""
    prefix = str(state_dir) + "/"
    points = []
    with open("/proc/mounts") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)
