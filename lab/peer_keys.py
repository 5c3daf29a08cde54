"""Install the per-pool peer transport on lab nodes (what the ``fs_sa`` role does on servers).

One key pair per pool of the lab's model, generated once and kept in the lab's
state dir; every node gets the keys of its own pools, the pinned host keys of
the members of its pools, the receive wrapper and one restricted
``authorized_keys`` line per pool. The lines and the wrapper come from
``module_utils/peer_transport.py``, the same functions the role's filters call.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    PEER_DIR,
    RECEIVE_WRAPPER,
    authorized_key_line,
    key_path,
    known_hosts_line,
    known_hosts_path,
    receive_wrapper,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import load

from .core import Lab
from .procs import ssh_keygen

REPO = Path(__file__).resolve().parents[1]
_MARK = " multiall-peer-"


def pool_key(lab: Lab, pool: str) -> Path:
    """The pool's private key in the lab state dir, generated on first use (0600)."""
    path = lab.state_dir / "peer" / f"{pool}.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        ssh_keygen(path, f"multiall-peer-{pool}")
    return path


def _host_keys(lab: Lab) -> dict[str, str]:
    """``node -> "<type> <key>"`` from the lab's pinned known_hosts (addr,name type key)."""
    keys = {}
    for line in lab.known_hosts_path.read_text().splitlines():
        names, *key = line.split()
        if len(key) >= 2:
            keys[names.split(",")[1]] = " ".join(key[:2])
    return keys


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def install_peer_keys(lab: Lab, pools_file: str | None = None) -> None:
    """Give every lab node the peer transport of its pools (idempotent)."""
    model_path = pools_file or str(lab.inventory_path)
    model = load(model_path)
    host_keys = _host_keys(lab)
    for node in lab.nodes:
        root = lab.node_root(node)
        pools = model.node_pools(node)
        _write(root / "etc/multiall/pools.yml", Path(model_path).read_text(), 0o644)
        peer_dir = root / PEER_DIR.lstrip("/")
        peer_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = []
        for pool in pools:
            key = pool_key(lab, pool)
            pub = key.with_name(key.name + ".pub")
            dest = root / key_path(pool).lstrip("/")
            _write(dest, key.read_text(), 0o600)
            _write(dest.with_name(dest.name + ".pub"), pub.read_text(), 0o644)
            lines.append(authorized_key_line(pool, pub.read_text()))
        members = sorted({m for pool in pools for m in model.members(pool)})
        known = [
            known_hosts_line(lab.nodes[m], host_keys[m], names=[m])
            for m in members
            if m in host_keys
        ]
        _write(root / known_hosts_path().lstrip("/"), "\n".join(known) + "\n", 0o644)
        _write(
            root / RECEIVE_WRAPPER.lstrip("/"), receive_wrapper(sys.executable, str(REPO)), 0o755
        )
        auth = root / "root/.ssh/authorized_keys"
        kept = (
            [line for line in auth.read_text().splitlines() if _MARK not in line]
            if auth.exists()
            else []
        )
        _write(auth, "\n".join(kept + lines) + "\n", 0o600)
