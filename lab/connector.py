"""Install and start TakeConnector on lab nodes (tests, demo, benchmarks).

Each node gets ``/etc/multiall/pools.yml`` (the lab's model), a generated
``/etc/multiall/connector.yml`` and a supervised ``multiall daemon``; its
control socket is ``/run/lab/connector.sock`` so the host reaches it at
``lab.ctl_path(node) / "connector.sock"``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import load

from .core import Lab, LabError
from .db import prepare_databases

# Inside a node: /run/lab is the node's control directory, which the host sees
# as lab.ctl_path(node), so the host talks to every node's connector directly.
NODE_SOCKET = "/run/lab/connector.sock"


@functools.lru_cache(maxsize=4)
def _model(path: str, mtime_ns: int) -> Any:
    """The lab's pool model, loaded once per version of the file (128 nodes: not 256 loads)."""
    return load(path)


def lab_model(lab: Lab) -> Any:
    """The lab's pool model (cached while the file is unchanged)."""
    path = str(lab.inventory_path)
    return _model(path, Path(path).stat().st_mtime_ns)


def cluster_key(lab: Lab) -> str:
    """One Serf gossip key per lab, generated with ``serf keygen``."""
    path = lab.state_dir / "serf.key"
    if not path.exists():
        key = subprocess.run(
            ["serf", "keygen"], capture_output=True, text=True, check=True
        ).stdout.strip()
        path.write_text(key)
        path.chmod(0o600)
    return path.read_text().strip()


def pool_keys(lab: Lab) -> dict[str, str]:
    """One probe key per pool of the lab's model, generated once per lab (0600)."""
    path = lab.state_dir / "probe-keys.yml"
    keys: dict[str, str] = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    pools = lab_model(lab).pools
    if set(pools) - set(keys):
        keys.update({pool: secrets.token_hex(32) for pool in pools if pool not in keys})
        path.write_text(yaml.safe_dump(keys))
        path.chmod(0o600)
    return keys


# Labs up to this many nodes run Serf with ``-profile=local``; larger ones with ``lan``.
LOCAL_PROFILE_MAX = 12


def serf_profile(lab: Lab) -> str:
    """Serf's timing profile for this lab's agents.

    ``local`` (200 ms probe timeout, suspicion x3) keeps small labs quick. A large
    lab runs N agents and N connectors on a few shared cores, where an agent is
    often scheduled later than 200 ms: ``local`` then declared live members
    failed (3-8 of 64 at load ~90), and Serf's ``failed`` wins over TNS, so its
    false positives become ours. ``lan`` (500 ms, x4) is what Serf prescribes for
    a LAN and what a real pool that size would run; TNS's fast path, not Serf,
    sets the detection time either way.
    """
    chosen = os.environ.get("MULTIALL_LAB_SERF_PROFILE")  # an experiment's override
    if chosen in ("local", "lan", "wan"):
        return chosen
    return "local" if len(lab.nodes) <= LOCAL_PROFILE_MAX else "lan"


def install_connector(
    lab: Lab, node: str, rules: list[dict[str, Any]] | None = None, **overrides: Any
) -> None:
    """Write the node's MultiAll config into its root."""
    root = lab.node_root(node)
    etc = root / "etc" / "multiall"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "pools.yml").write_text(lab.inventory_path.read_text())
    key = cluster_key(lab)
    # Each node holds the keys of its own pools only, and its own Serf RPC token.
    pools = lab_model(lab).node_pools(node)
    probe_keys = {pool: secret for pool, secret in pool_keys(lab).items() if pool in pools}
    config: dict[str, Any] = {
        "node": node,
        "pools_file": "/etc/multiall/pools.yml",
        "state_dir": "/var/lib/multiall",
        "control_socket": NODE_SOCKET,
        "metrics": "127.0.0.1:9273",
        "serf": {
            "rpc_auth": secrets.token_hex(24),
            "encrypt_key": key,
            "profile": serf_profile(lab),
        },
        "probe": {"keys": probe_keys},
        "watcher": {"rules": rules or [], "debounce": 0.5, "inventory": "/etc/multiall/pools.yml"},
    }
    for section, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(section, {}).update(value)
        else:
            config[section] = value
    (etc / "connector.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (etc / "connector.yml").chmod(0o600)


def start_connector(lab: Lab, node: str) -> None:
    """Start ``multiall daemon`` under the node's supervisor (restarted if it dies)."""
    lab.service_start(
        node,
        "connector",
        [sys.executable, "-m", "connector", "daemon", "--config", "/etc/multiall/connector.yml"],
        # MULTIALL_PROFILE (a path inside the node) profiles the daemon (connector/daemon.py).
        env={"PYTHONUNBUFFERED": "1", **_passed_env("MULTIALL_PROFILE")},
        restart=True,
    )


def _passed_env(*names: str) -> dict[str, str]:
    """The host's values of NAMES that are set: handed on to the nodes' connectors."""
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def start_all(lab: Lab, rules: list[dict[str, Any]] | None = None, **overrides: Any) -> None:
    """Install and start the connector on every running node (several at once).

    A model with file trees or databases also gets the per-pool peer transport
    (keys, pinned host keys, forced command) that FS-SA and DB-SA push over.
    """
    prepare_databases(lab)  # peer keys and PostgreSQL servers, when the model has databases
    model = lab_model(lab)
    settings = [model.effective(node).settings for node in lab.nodes]
    if any(s.get("files") for s in settings) and not any(s.get("databases") for s in settings):
        from .peer_keys import install_peer_keys

        install_peer_keys(lab)
    cluster_key(lab), pool_keys(lab)  # written once, before the workers read them

    def one(node: str) -> None:
        install_connector(lab, node, rules, **overrides)
        start_connector(lab, node)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, lab.nodes))


@contextlib.contextmanager
def connected_lab(model: str, converge_timeout: float = 90, **overrides: Any) -> Iterator[Lab]:
    """A fresh lab from a pool model given as YAML text, every node's connector
    running (``overrides``: connector.yml sections, as for ``start_all``) and
    converged; torn down on leaving, also on error or Ctrl-C."""
    lab = Lab()
    with tempfile.TemporaryDirectory(prefix="multiall-lab-") as tmp:
        path = Path(tmp) / "pools.yml"
        path.write_text(model)
        try:
            lab.up(pools_file=str(path), force=True)
            start_all(lab, **overrides)
            wait_converged(lab, timeout=converge_timeout)
            yield lab
        finally:
            lab.down()


def control(lab: Lab, node: str, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """One request to a node's connector over its control socket."""
    return control_request(str(lab.ctl_path(node) / Path(NODE_SOCKET).name), req, timeout)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; that value is returned.

    A node that is restarting makes control requests fail for a moment: those
    errors are retried, and the last one is shown if time runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, KeyError, ControlError, LabError) as exc:
            last = exc
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def wait_converged(lab: Lab, nodes: list[str] | None = None, timeout: float = 30) -> None:
    """Wait until every connector sees every pool member alive, and so does its Serf agent.

    TNS counts a member alive by its probes before Serf's gossip has carried its
    join, so the pools converge first. A test must start from the settled state
    (a Serf query, a partition's ``failed``, a rejoin all act through Serf), not
    race Serf's join.
    """
    deadline = time.monotonic() + timeout
    nodes = nodes or list(lab.nodes)
    last: Any = None
    while time.monotonic() < deadline:
        try:
            ok = True
            for node in nodes:
                status = control(lab, node, {"op": "status"}, timeout=5)
                last = status
                for topo in status["pools"].values():
                    if any(m["state"] != "alive" for m in topo["members"].values()):
                        ok = False
                    # ... and every member has published a measured SBM status.
                    if any(m["sbm"] in ("", "3") for m in topo["members"].values()):
                        ok = False
                if not status["pools"]:
                    ok = False
                # Serf joins pool peers only (a node alone in its pools has no one).
                serf = status.get("serf", {})
                peers = {m for topo in status["pools"].values() for m in topo["members"]}
                if any(serf.get(n) != "alive" for n in peers & set(nodes)):
                    ok = False
            if ok:
                return
        except (OSError, ValueError, KeyError, ControlError):
            pass
        time.sleep(0.2)
    logs = {n: lab.service_log(n, "connector")[-1500:] for n in nodes}
    raise LabError(
        f"connectors did not converge within {timeout} s; last status {last}; logs {logs}"
    )


def log_path(lab: Lab, node: str) -> Path:
    return lab.ctl_path(node) / "logs" / "connector.log"
