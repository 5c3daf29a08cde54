"""The tns role's keys (roles/tns/tasks/keys.yml), run for real on local hosts.

Three "nodes" (local connections, each with its own config directory): n1 in
web and db, n2 in web, n3 in db. No lab is needed: the tasks only write files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
NODES = {"n1": ["web", "db"], "n2": ["web"], "n3": ["db"]}


def play(tmp_path: Path, nodes: dict[str, list[str]]) -> str:
    hosts = {n: {"tns_pools": p, "tns_config_dir": str(tmp_path / n)} for n, p in nodes.items()}
    for node in nodes:
        (tmp_path / node).mkdir(exist_ok=True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    },
                }
            }
        )
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "all",
                    "gather_facts": False,
                    "vars": {"tns_encrypt_key": "", "tns_probe_keys": {}},
                    "handlers": [
                        {"name": "Restart the connector", "ansible.builtin.debug": {"msg": "x"}}
                    ],
                    "tasks": [
                        {
                            "ansible.builtin.import_tasks": str(
                                ROOT / "roles" / "tns" / "tasks" / "keys.yml"
                            )
                        }
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            "--diff",
            "-vv",
        ],
        capture_output=True,
        text=True,
        env=ansible_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def keys_of(tmp_path: Path, node: str) -> dict[str, str]:
    return {f.name: f.read_text().strip() for f in sorted((tmp_path / node).iterdir())}


def test_role_makes_per_pool_keys_for_members_only_and_never_prints_them(tmp_path):
    output = play(tmp_path, NODES)
    n1, n2, n3 = (keys_of(tmp_path, n) for n in NODES)
    probe = {
        n: yaml.safe_load(k["probe-keys.yml"]) for n, k in (("n1", n1), ("n2", n2), ("n3", n3))
    }
    # Each node holds the keys of its own pools only; one key per pool, shared by its members.
    assert set(probe["n1"]) == {"web", "db"} and set(probe["n2"]) == {"web"}
    assert set(probe["n3"]) == {"db"} and probe["n1"]["web"] != probe["n1"]["db"]
    assert probe["n2"]["web"] == probe["n1"]["web"] and probe["n3"]["db"] == probe["n1"]["db"]
    # One gossip key for the cluster; each node's RPC token is its own, not derived from it.
    assert n1["serf.key"] == n2["serf.key"] == n3["serf.key"]
    tokens = {n1["serf-rpc.key"], n2["serf-rpc.key"], n3["serf-rpc.key"]}
    assert len(tokens) == 3 and n1["serf.key"] not in tokens
    for node in NODES:
        for path in (tmp_path / node).iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path
    secrets = {n1["serf.key"], *tokens, *probe["n1"].values()}
    assert not [s for s in secrets if s in output], "a key appears in the -vv --diff output"

    # Run again with a new web member: nothing changes, the newcomer gets the same keys.
    again = play(tmp_path, {**NODES, "n4": ["web"]})
    assert keys_of(tmp_path, "n1") == n1
    n4 = keys_of(tmp_path, "n4")
    assert yaml.safe_load(n4["probe-keys.yml"]) == {"web": probe["n1"]["web"]}
    assert n4["serf.key"] == n1["serf.key"]
    assert not [s for s in secrets if s in again]
