# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node-to-node transport every sync agent shares: SSH with one key per pool.

FS-SA (rsync) and DB-SA (change batches) talk to pool peers over plain OpenSSH,
so nothing new listens on the network. Each pool has its own key pair
(``/etc/multiall/peer/<pool>.key``); on the receiving node that key is allowed
exactly one thing, the forced command ``multiall-peer-receive <pool>``, which
only touches what pool ``<pool>`` declares for that node (``connector/peer_receive.py``).
Host keys are pinned in ``/etc/multiall/peer/known_hosts``; nothing is learnt
on first use.

One persistent connection per (pool, peer) -- ``ControlMaster`` -- keeps a small
push at one round trip (~0.15 s instead of ~0.33 s with a fresh connection).
The control path includes the pool because the forced command is bound to the
key: a master opened with pool A's key must never carry pool B's traffic.

This file is the one source of the argv, the ``authorized_keys`` line, the
``known_hosts`` line and the receive wrapper: the module, the daemon, the role
(through the ``peer_transport`` filters) and the lab all call these functions.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence

PEER_DIR = "/etc/multiall/peer"
CONTROL_DIR = "/run/multiall/ssh"
RECEIVE_WRAPPER = "/usr/local/sbin/multiall-peer-receive"
# rsync options a caller may not add: each breaks a promise of this transport
# (--inplace: readers would see half-written files; the others follow or make
# links and devices the receiver must not have).
FORBIDDEN_RSYNC = (
    "--inplace",
    "--append",
    "--append-verify",
    "--copy-links",
    "-L",
    "--copy-unsafe-links",
    "--devices",
    "--specials",
    "--copy-devices",
    "--write-devices",
)


class TransportError(ValueError):
    """A transport request that would break a promise (unsafe option, bad name)."""


def key_path(pool: str, key_dir: str = PEER_DIR) -> str:
    """The pool's private key on every node (0600, root; ``.pub`` beside it)."""
    return os.path.join(key_dir, f"{pool}.key")


def known_hosts_path(key_dir: str = PEER_DIR) -> str:
    """Pinned host keys of every member of the node's pools."""
    return os.path.join(key_dir, "known_hosts")


def ssh_options(
    pool: str,
    *,
    user: str = "root",
    control_dir: str = CONTROL_DIR,
    persist: int = 300,
    key_dir: str = PEER_DIR,
    known_hosts: str | None = None,
    port: int | None = None,
    connect_timeout: int = 5,
) -> list[str]:
    """``ssh`` and its options for pool ``pool``, without a destination (rsync's ``-e``).

    ``-F /dev/null``: the machine's ssh_config must not change which key,
    host-key policy or proxy a sync uses. ServerAlive makes a dead peer fail in
    seconds instead of hanging a push on a stale master.
    """
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        key_path(pool, key_dir),
        "-l",
        user,
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or known_hosts_path(key_dir)}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={os.path.join(control_dir, pool)}-%C",
        "-o",
        f"ControlPersist={persist}",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "ServerAliveInterval=2",
        "-o",
        "ServerAliveCountMax=3",
    ]
    if port:
        argv += ["-p", str(port)]
    return argv


def ssh_argv(
    pool: str,
    address: str,
    *,
    user: str = "root",
    control_dir: str = CONTROL_DIR,
    persist: int = 300,
    key_dir: str = PEER_DIR,
    known_hosts: str | None = None,
    port: int | None = None,
) -> list[str]:
    """argv prefix to reach ``address`` as pool ``pool``; append the remote command.

    The receiver runs its forced command whatever is asked; the remote command
    only travels as ``SSH_ORIGINAL_COMMAND`` for it to dispatch on.
    """
    opts = ssh_options(
        pool,
        user=user,
        control_dir=control_dir,
        persist=persist,
        key_dir=key_dir,
        known_hosts=known_hosts,
        port=port,
    )
    return [*opts, "--", address]


def _remote(address: str) -> str:
    """rsync's host part; an IPv6 address needs brackets before ``:path``."""
    return f"[{address}]" if ":" in address else address


def rsync_argv(
    pool: str,
    address: str,
    tree: str,
    *,
    source: str | None = None,
    files_from: str | None = None,
    delete: bool = False,
    dry_run: bool = False,
    itemize: bool = True,
    exclude: Iterable[str] = (),
    extra: Sequence[str] = (),
    rsync: str = "rsync",
    **ssh_kw: object,
) -> list[str]:
    """rsync argv that makes ``tree`` on ``address`` equal to ``source`` (default ``tree``) here.

    ``-a`` keeps modes, owners (by name), times and symlinks as links; files
    land by rsync's default temp file + rename, so a reader on the peer sees
    the old or the new file, never half of one (``--inplace`` is refused).
    Devices and fifos are not sent (``--no-devices --no-specials``; rsync
    prints "skipping non-regular file" for each, which the caller reports) and
    ``--safe-links`` leaves out symlinks that point outside the tree.
    ``files_from``: a file of paths relative to the tree (only those travel).
    """
    for opt in extra:
        name = opt.split("=", 1)[0]
        if name in FORBIDDEN_RSYNC:
            raise TransportError(f"rsync option {name} is not allowed over the peer transport")
    for path in (tree, source or tree):
        if not path.startswith("/") or ".." in path.split("/"):
            raise TransportError(f"tree {path!r} must be an absolute path without '..'")
    ssh = ssh_options(pool, **ssh_kw)  # type: ignore[arg-type]
    argv = [rsync, "-a", "--no-devices", "--no-specials", "--safe-links", "-e", shlex.join(ssh)]
    if delete:
        argv.append("--delete")
    if dry_run:
        argv.append("--dry-run")
    if itemize:
        argv.append("--itemize-changes")
    if files_from:
        argv.append(f"--files-from={files_from}")
    argv += [f"--exclude={pattern}" for pattern in exclude]
    argv += list(extra)
    src = (source or tree).rstrip("/") + "/"
    argv += ["--", src, f"{_remote(address)}:{tree.rstrip('/')}/"]
    return argv


def authorized_key_line(pool: str, pubkey: str, wrapper: str = RECEIVE_WRAPPER) -> str:
    """The one ``authorized_keys`` line that lets pool ``pool``'s key in, restricted.

    ``restrict`` turns off forwarding, pty and user rc; the forced command
    means the key can run nothing but the receive dispatcher for that pool.
    """
    parts = pubkey.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise TransportError(f"pool {pool}: {pubkey!r} is not an OpenSSH public key")
    return f'restrict,command="{wrapper} {pool}" {parts[0]} {parts[1]} multiall-peer-{pool}'


def known_hosts_line(address: str, hostkey: str, names: Sequence[str] = ()) -> str:
    """``<address>[,names] <type> <key>`` as ssh reads from the pinned file."""
    parts = hostkey.split()
    if len(parts) < 2:
        raise TransportError(f"{address}: {hostkey!r} is not a host key ('<type> <base64>')")
    return f"{','.join([address, *names])} {parts[0]} {parts[1]}"


def receive_wrapper(python: str, workdir: str) -> str:
    """The tiny sh script sshd runs as the forced command: the connector's peer-receive.

    ``workdir`` is the directory that holds the ``connector`` package.
    """
    return (
        "#!/bin/sh\n"
        "# MultiAll peer transport: forced command of the per-pool peer keys.\n"
        "# Managed by MultiAll (takelan.multiall.fs_sa / lab); do not edit.\n"
        f"cd {shlex.quote(workdir)} || exit 1\n"
        f'exec {shlex.quote(python)} -m connector peer-receive --pool "$1"\n'
    )
