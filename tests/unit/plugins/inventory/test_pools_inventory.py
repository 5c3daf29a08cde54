"""The takelan.multiall.pools inventory plugin, through the real ansible-inventory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.inventory.pools import InventoryModule

from connector.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parents[4]
BASE = """\
plugin: takelan.multiall.pools
defaults: {ssh_user: deploy, ssh_port: 22, python: /usr/bin/python3}
nodes:
  web1: {address: 192.0.2.11, pools: [web]}
  web2: {address: 192.0.2.12, pools: [web, db], ssh_port: 2222}
  db1: {address: 192.0.2.21}
pools:
  web: {packages: {nginx: {}}, vars: {http_port: 8080}}
  db: {members: [db1], packages: {postgresql: "15*"}}
"""


def inventory(
    tmp_path, text: str, *args: str, name: str = "x.pools.yml"
) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path), *args],
        capture_output=True,
        text=True,
        env=ansible_env({"ANSIBLE_INVENTORY_ENABLED": "takelan.multiall.pools"}),
        timeout=120,
        check=False,
    )


def unwrap(value):
    """ansible-core 2.19 marks plugin values untrusted (never templated) in --list output."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def listing(tmp_path, text: str) -> dict:
    proc = inventory(tmp_path, text, "--list")
    assert proc.returncode == 0, proc.stderr
    return unwrap(json.loads(proc.stdout))


def test_pools_become_groups_with_exactly_their_members(tmp_path):
    data = listing(tmp_path, BASE)
    assert sorted(data["pool_web"]["hosts"]) == ["web1", "web2"]
    assert sorted(data["pool_db"]["hosts"]) == ["db1", "web2"]


def test_values_from_the_model_are_never_templated(tmp_path):
    proc = inventory(
        tmp_path, BASE.replace("deploy", '\'{{ lookup("env", "HOME") }}\''), "--host", "web1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "lookup" in proc.stdout  # kept as text, not evaluated


def test_hostvars_carry_connection_pools_settings_and_vars(tmp_path):
    hostvars = listing(tmp_path, BASE)["_meta"]["hostvars"]
    web2 = hostvars["web2"]
    assert web2["ansible_host"] == "192.0.2.12"
    assert web2["ansible_user"] == "deploy"
    assert web2["ansible_port"] == 2222  # node overrides defaults
    assert web2["ansible_python_interpreter"] == "/usr/bin/python3"
    assert web2["multiall_pools"] == ["db", "web"]
    assert sorted(web2["multiall_settings"]["packages"]) == ["nginx", "postgresql"]
    assert web2["http_port"] == 8080  # merged vars become host variables
    assert "http_port" not in hostvars["db1"]
    assert "multiall_sources" not in web2


def test_group_prefix_and_sources_options(tmp_path):
    data = listing(tmp_path, BASE + "group_prefix: farm_\nwith_sources: true\n")
    assert sorted(data["farm_web"]["hosts"]) == ["web1", "web2"]
    assert data["_meta"]["hostvars"]["web2"]["multiall_sources"]["packages.postgresql.version"] == [
        "db"
    ]


CONFLICTING = BASE.replace('packages: {postgresql: "15*"}', 'packages: {nginx: "1.24*"}').replace(
    "packages: {nginx: {}}", 'packages: {nginx: "1.22*"}'
)


def test_conflict_fails_the_inventory_by_default(tmp_path):
    proc = inventory(tmp_path, CONFLICTING, "--list")
    assert proc.returncode != 0 or '"pool_web"' not in proc.stdout
    assert "unresolved conflict" in proc.stderr and "packages.nginx.version" in proc.stderr
    assert "x.pools.yml:" in proc.stderr


def test_on_conflict_warn_continues_without_the_key(tmp_path):
    data = listing(tmp_path, CONFLICTING + "on_conflict: warn\n")
    web2 = data["_meta"]["hostvars"]["web2"]
    assert "version" not in web2["multiall_settings"]["packages"]["nginx"]
    assert web2["multiall_conflicts"][0]["key"] == "packages.nginx.version"


def test_bad_model_fails_with_file_and_line(tmp_path):
    proc = inventory(tmp_path, BASE.replace("pools: [web, db]", "pools: [web, dbb]"), "--list")
    assert "x.pools.yml:5:" in proc.stderr and "'dbb' is not a declared pool" in proc.stderr


def test_constructable_compose_groups_and_keyed_groups(tmp_path):
    extra = textwrap.dedent(
        """\
        compose:
          multi_pool: multiall_pools | length > 1
        groups:
          multi: multiall_pools | length > 1
        keyed_groups:
          - key: "'%d' % (multiall_pools | length)"
            prefix: serves
        """
    )
    data = listing(tmp_path, BASE + extra)
    assert data["_meta"]["hostvars"]["web2"]["multi_pool"] is True
    assert data["multi"]["hosts"] == ["web2"]
    assert sorted(data["serves_1"]["hosts"]) == ["db1", "web1"]


def test_cache_is_used_but_a_changed_file_is_reread(tmp_path):
    cache = tmp_path / "cache"
    opts = f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache}\n"
    first = listing(tmp_path, BASE + opts)
    assert list(cache.iterdir())
    changed = listing(tmp_path, BASE.replace("192.0.2.11", "192.0.2.99") + opts)
    assert first["_meta"]["hostvars"]["web1"]["ansible_host"] == "192.0.2.11"
    assert changed["_meta"]["hostvars"]["web1"]["ansible_host"] == "192.0.2.99"


@pytest.mark.parametrize(
    ("name", "ok"),
    [("pools.yml", True), ("lab.pools.yaml", True), ("hosts.yml", False), ("pools.yml.bak", False)],
)
def test_verify_file_accepts_only_pools_files(tmp_path, name, ok):
    path = tmp_path / name
    path.write_text("plugin: takelan.multiall.pools\n")
    assert InventoryModule().verify_file(str(path)) is ok


def test_example_inventories_parse(tmp_path):
    for example in ("example", "lab", "lab5"):
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-inventory"),
                "-i",
                str(ROOT / "inventory" / example / "pools.yml"),
                "--graph",
            ],
            capture_output=True,
            text=True,
            env=ansible_env(),
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0 and "@pool_" in proc.stdout, proc.stderr
