"""The pools inventory and the multiall_node role against real lab nodes over SSH.

A 4-node lab is built from ``inventory/lab/pools.yml`` (ns1: dns, n1: web+db, n2: web+db,
n3: db). Real ``ansible-playbook`` runs with the ``takelan.multiall.pools``
inventory plugin on the lab's generated copy of that model.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import ansible_runner
import pytest

from connector.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def run_playbook(inventory: Path, playbook: Path, *extra: str) -> dict:
    """Run a playbook through ansible-runner; return rc, per-host stats and task results."""
    with tempfile.TemporaryDirectory(prefix="multiall-runner-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            playbook=str(playbook),
            inventory=str(inventory),
            cmdline=" ".join(extra) or None,
            envvars=ansible_env(),
            quiet=True,
            timeout=600,
        )
        stats: dict[str, dict[str, int]] = {}
        raw = runner.stats or {}
        hosts = {h for table in raw.values() if isinstance(table, dict) for h in table}
        for host in hosts:
            stats[host] = {
                "ok": raw.get("ok", {}).get(host, 0),
                "changed": raw.get("changed", {}).get(host, 0),
                "failures": raw.get("failures", {}).get(host, 0),
                "unreachable": raw.get("dark", {}).get(host, 0),
            }
        results: dict[str, dict[str, dict]] = {}
        for event in runner.events:
            if event.get("event") in ("runner_on_ok", "runner_on_failed"):
                data = event["event_data"]
                results.setdefault(data["task"], {})[data["host"]] = data.get("res", {})
        output = runner.stdout.read()
    return {"rc": runner.rc, "stats": stats, "results": results, "output": output}


@pytest.fixture(scope="module")
def lab(lab_module):
    return lab_module(pools_file=str(ROOT / "inventory" / "lab" / "pools.yml"))


def test_check_mode_on_fresh_nodes_reports_changes_and_changes_nothing(lab):
    """Runs first in this module, while the lab's nodes are fresh."""
    assert lab.exec("n3", ["test", "-e", "/etc/multiall/node.yml"], check=False).returncode != 0
    report = run_playbook(Path(lab.inventory_path), ROOT / "playbooks" / "site.yml", "--check")
    assert report["rc"] == 0, report["output"]
    assert report["stats"]["n3"]["failures"] == 0
    assert report["stats"]["n3"]["changed"] > 0
    assert lab.exec("n3", ["test", "-e", "/etc/multiall/node.yml"], check=False).returncode != 0


def test_play_on_a_pool_reaches_exactly_its_members(lab, tmp_path):
    playbook = tmp_path / "who.yml"
    playbook.write_text(
        "- hosts: pool_web\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Ask the node itself for its host name\n"
        "      ansible.builtin.command: hostname\n"
        "      register: who\n"
        "      changed_when: false\n"
    )
    report = run_playbook(Path(lab.inventory_path), playbook)
    assert report["rc"] == 0, report["output"]
    stats = report["stats"]
    assert sorted(stats) == ["n1", "n2"]
    answers = report["results"]["Ask the node itself for its host name"]
    # Each node answered with its own host name, over real SSH with pinned keys.
    assert {host: res["stdout"] for host, res in answers.items()} == {
        "n1": "n1",
        "n2": "n2",
    }


def test_node_in_two_pools_gets_both_pools_settings_as_hostvars(lab, tmp_path):
    playbook = tmp_path / "vars.yml"
    playbook.write_text(
        "- hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Show merged settings\n"
        "      ansible.builtin.debug:\n"
        "        msg: '{{ multiall_pools }} {{ multiall_settings.packages | sort }}'\n"
    )
    report = run_playbook(Path(lab.inventory_path), playbook)
    assert report["rc"] == 0, report["output"]
    msgs = {h: r["msg"] for h, r in report["results"]["Show merged settings"].items()}
    assert msgs["n1"] == "['db', 'web'] ['rsync', 'sqlite3']"
    assert msgs["n2"] == "['db', 'web'] ['rsync', 'sqlite3']"
    assert msgs["n3"] == "['db'] ['rsync', 'sqlite3']"
    assert msgs["ns1"] == "['dns'] ['bind9']"


def test_multiall_node_role_converges_and_is_idempotent(lab):
    site = ROOT / "playbooks" / "site.yml"
    first = run_playbook(Path(lab.inventory_path), site)
    assert first["rc"] == 0, first["output"]
    assert all(s["failures"] == 0 and s["unreachable"] == 0 for s in first["stats"].values())
    assert all(s["changed"] > 0 for s in first["stats"].values())

    second = run_playbook(Path(lab.inventory_path), site)
    assert second["rc"] == 0, second["output"]
    assert {h: s["changed"] for h, s in second["stats"].items()} == {
        "ns1": 0,
        "n1": 0,
        "n2": 0,
        "n3": 0,
    }

    # The node's own copy of the model merges to what the controller computed.
    node_yml = lab.exec("n2", ["cat", "/etc/multiall/node.yml"]).stdout
    assert 'pools: ["db", "web"]' in node_yml
    # ... and it lives in n2's own /etc, not the host's.
    assert (
        not Path("/etc/multiall/node.yml").exists()
        or "node: n2" not in Path("/etc/multiall/node.yml").read_text()
    )
