"""SL-SA rolling converge on a lab with BIND: each node is out of DNS while its packages change.

ns1 runs BIND 9 (the real ``dns_sa`` role); n1..n3 form pool ``web`` whose
zone the connectors keep (RFC 2136). ``playbooks/sl_converge.yml`` runs with
``serial: 1``; a thread asks ns1 for the pool record every 50 ms, so the test
sees, for each node, that its dpkg database changed while DNS did not hand it
out, and that never two nodes were out at once. Then a node whose Baseline
Rule is CRITICAL after its change stops the roll and stays in maintenance.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env
from lab.connector import control, start_all, wait_converged, wait_for
from lab.dns import install_dns, served
from lab.procs import LabError
from lab.sl_repo import APT_OPTIONS, build_repo, install_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS, WEB = "198.18.0.10", "web.pool.example.test"
ADDRESS = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
MODEL = """\
plugin: takelan.multiall.pools
defaults: {ssh_user: root, python: /usr/bin/python3}
nodes:
  ns1: {address: 198.18.0.10, pools: [dns]}
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  dns: {}
  web:
    dns: {zone: web.pool.example.test, server: 198.18.0.10, ttl: 5}
    packages: {sl-base: "1.0", sl-app: {}, libsldemo: "1.0"}
    baseline:
      marker: {kind: command, command: "test ! -e /run/sbm-fail || { echo marker; exit 2; }", interval: 0.5, timeout: 2}
"""


@pytest.fixture(scope="module")
def rolling_lab(lab_module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sl-rolling")
    (tmp / "pools.yml").write_text(MODEL)
    lab = lab_module(pools_file=str(tmp / "pools.yml"))
    install_dns(lab)
    repo = build_repo(tmp / "repo")
    for node in ADDRESS:
        install_repo(lab, node, repo)
    start_all(lab, dns={"hold_down": 1.0}, sl={"poll": 0.5})
    wait_converged(lab, [*ADDRESS], timeout=120)
    wait_for(lambda: served(NS, WEB) == sorted(ADDRESS.values()), 30, "the whole pool in DNS")
    return lab


class DnsWatch:
    """Samples the pool record every 50 ms in a thread: [(time, set of addresses)]."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, set[str]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            # One lost query is no sample: keep watching.
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), set(served(NS, WEB))))
            time.sleep(0.05)

    def __enter__(self) -> DnsWatch:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def out_window(self, address: str) -> tuple[float, float] | None:
        """First and last sample without ADDRESS."""
        times = [t for t, got in self.samples if address not in got]
        return (times[0], times[-1]) if times else None


def roll(lab, pools_file: str = "/etc/multiall/pools.yml") -> subprocess.CompletedProcess:
    extra = {
        "sl_hosts": "pool_web",
        "sl_serial": 1,
        "sl_sa_apt_options": APT_OPTIONS,
        "sl_sa_socket": "/run/lab/connector.sock",
        "sl_sa_pools_file": pools_file,
        "sl_sa_sbm_retries": 4,
        "sl_sa_sbm_delay": 1,
    }
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(lab.inventory_path),
            str(ROOT / "playbooks" / "sl_converge.yml"),
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=600,
    )


def dpkg_changed_at(lab, node: str) -> float:
    return (lab.node_root(node) / "var" / "lib" / "dpkg" / "status").stat().st_mtime


def installed(lab, node: str, package: str) -> bool:
    proc = lab.exec(node, ["dpkg-query", "-W", "-f=${db:Status-Status}", package], check=False)
    return proc.stdout == "installed"


def test_rolling_converge_drains_each_node_from_dns_while_it_changes(rolling_lab):
    with DnsWatch() as watch:
        proc = roll(rolling_lab)
        # The last node returns after its hold-down (1 s) and a DNS update: wait for
        # it (a fixed 1 s sleep raced that under CI load), bounded.
        with contextlib.suppress(LabError):
            wait_for(
                lambda: watch.samples and watch.samples[-1][1] == set(ADDRESS.values()),
                15,
                "every node back in DNS",
            )
    assert proc.returncode == 0, proc.stdout[-4000:]
    windows = {}
    for node, address in ADDRESS.items():
        window = watch.out_window(address)
        assert window, f"{node} never left DNS during the roll"
        assert window[0] <= dpkg_changed_at(rolling_lab, node) <= window[1], (node, window)
        windows[node] = window
        assert installed(rolling_lab, node, "sl-app")
    # One at a time, never an empty pool, and everybody back at the end.
    assert all(len(got) >= 2 for _t, got in watch.samples)
    assert watch.samples[-1][1] == set(ADDRESS.values())
    assert windows["n1"][1] < windows["n2"][0] and windows["n2"][1] < windows["n3"][0]


def test_a_node_failing_after_its_change_stops_the_roll_and_stays_drained(rolling_lab):
    model = yaml.safe_load(MODEL)
    model["pools"]["web"]["packages"]["sl-app"] = {"state": "absent"}
    for node in ADDRESS:
        path = rolling_lab.node_root(node) / "etc" / "multiall" / "sl-roll.yml"
        path.write_text(yaml.safe_dump(model))
    # n2's Baseline Rule is CRITICAL: after its change it never comes back OK.
    rolling_lab.exec("n2", ["sh", "-c", "touch /run/sbm-fail"])
    proc = roll(rolling_lab, "/etc/multiall/sl-roll.yml")
    assert proc.returncode != 0
    assert "SL-SA converge of n2 failed" in proc.stdout and "stays in maintenance" in proc.stdout
    assert not installed(rolling_lab, "n1", "sl-app")
    assert not installed(rolling_lab, "n2", "sl-app")
    assert installed(rolling_lab, "n3", "sl-app"), "the roll went on past the failed node"
    status = control(rolling_lab, "n2", {"op": "status"})
    assert status["maintenance"].startswith("1:")
    assert ADDRESS["n2"] not in served(NS, WEB)
    rolling_lab.exec("n2", ["rm", "-f", "/run/sbm-fail"])
    control(rolling_lab, "n2", {"op": "maintenance", "action": "exit", "reason": ""})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
