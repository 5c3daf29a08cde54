"""pool_facts: the node's merged settings as facts, and every way a model can be refused."""

from __future__ import annotations

import textwrap

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import _pools_module
from ansible_collections.takelan.multiall.plugins.modules import pool_facts
from module_harness import ModuleFail

MODEL = """\
defaults: {ssh_user: root, python: /usr/bin/python3}
nodes:
  web1: {address: 198.18.0.11, pools: [web, api]}
  web2: {address: 198.18.0.12, pools: [web]}
pools:
  web:
    packages: {nginx: "1.24*", curl: {}}
  api:
    packages: {python3: {}, nginx: %s}
"""


@pytest.fixture
def pools_file(tmp_path):
    """Write a model; ``pools_file(nginx_for_api)`` -> its path."""

    def write(api_nginx: str = "{}") -> str:
        path = tmp_path / "pools.yml"
        path.write_text(MODEL % api_nginx)
        return str(path)

    return write


def test_facts_hold_the_union_of_the_nodes_pools(run_module, pools_file):
    result = run_module(pool_facts, {"pools_file": pools_file(), "node": "web1"})
    assert result["changed"] is False
    facts = result["ansible_facts"]["multiall"]
    assert facts["node"] == "web1" and facts["address"] == "198.18.0.11"
    assert facts["pools"] == ["api", "web"]
    assert facts["settings"]["packages"] == {
        "curl": {},
        "nginx": {"version": "1.24*"},
        "python3": {},
    }
    assert facts["sources"]["packages.nginx.version"] == ["web"]
    assert facts["connection"]["ansible_user"] == "root"
    assert facts["conflicts"] == []


def test_check_mode_returns_the_same_facts_and_no_diff(run_module, pools_file):
    args = {"pools_file": pools_file(), "node": "web2"}
    normal = run_module(pool_facts, args)
    checked = run_module(pool_facts, args, check_mode=True, diff=True)
    assert checked == normal
    assert checked["changed"] is False and "diff" not in checked


def test_the_old_option_name_path_still_works(run_module, pools_file):
    result = run_module(pool_facts, {"path": pools_file(), "node": "web2"})
    assert result["ansible_facts"]["multiall"]["pools"] == ["web"]


def test_a_conflict_between_pools_fails_naming_both(run_module, pools_file):
    with pytest.raises(ModuleFail) as failed:
        run_module(pool_facts, {"pools_file": pools_file('"1.22*"'), "node": "web1"})
    result = failed.value.result
    assert "packages.nginx.version" in result["msg"]
    assert "web" in result["msg"] and "api" in result["msg"]
    assert result["conflicts"][0]["key"] == "packages.nginx.version"
    assert result["conflicts"][0]["values"] == {"api": "1.22*", "web": "1.24*"}


def test_a_conflict_can_be_tolerated_and_is_listed(run_module, pools_file):
    result = run_module(
        pool_facts,
        {"pools_file": pools_file('"1.22*"'), "node": "web1", "fail_on_conflict": False},
    )
    facts = result["ansible_facts"]["multiall"]
    assert facts["settings"]["packages"]["nginx"] == {}  # the conflicted version is left out
    assert [c["key"] for c in facts["conflicts"]] == ["packages.nginx.version"]


def test_an_invalid_model_fails_with_file_and_line(run_module, tmp_path):
    bad = tmp_path / "pools.yml"
    bad.write_text(
        textwrap.dedent(
            """\
            nodes:
              web1: {address: 198.18.0.11, pools: [web]}
            pools:
              web: {packages: {nginx: 42}}
            """
        )
    )
    with pytest.raises(ModuleFail) as failed:
        run_module(pool_facts, {"pools_file": str(bad), "node": "web1"})
    result = failed.value.result
    assert f"{bad}:4:" in result["msg"]
    assert result["errors"][0]["file"] == str(bad) and result["errors"][0]["line"] == 4


def test_an_unknown_node_names_the_declared_ones(run_module, pools_file):
    with pytest.raises(ModuleFail) as failed:
        run_module(pool_facts, {"pools_file": pools_file(), "node": "db9"})
    assert "no node 'db9'" in failed.value.result["msg"]
    assert "web1, web2" in failed.value.result["msg"]


def test_a_missing_model_says_where_it_looked(run_module, tmp_path):
    missing = str(tmp_path / "nowhere.yml")
    with pytest.raises(ModuleFail) as failed:
        run_module(pool_facts, {"pools_file": missing, "node": "web1"})
    assert missing in failed.value.result["msg"]
    assert "no such file or directory" in failed.value.result["msg"]


def test_without_pyyaml_the_module_asks_for_it(run_module, pools_file, monkeypatch):
    monkeypatch.setattr(_pools_module, "HAS_YAML", False)
    monkeypatch.setattr(_pools_module, "YAML_IMPORT_ERROR", "ModuleNotFoundError: yaml")
    with pytest.raises(ModuleFail) as failed:
        run_module(pool_facts, {"pools_file": pools_file(), "node": "web1"})
    assert "Failed to import the required Python library (PyYAML)" in failed.value.result["msg"]
    assert failed.value.result["exception"] == "ModuleNotFoundError: yaml"
