"""pkg_converge: the plan in check mode and diff, refusals with a report, idempotence."""

from __future__ import annotations

import pytest
from ansible.module_utils import basic
from ansible_collections.takelan.multiall.plugins.module_utils import slfacts
from ansible_collections.takelan.multiall.plugins.modules import pkg_converge
from module_harness import ModuleFail

MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web, api]}
pools:
  web:
    packages: {sl-base: "1.0", sl-app: {}}
  api:
    packages: {sl-app: {hold: true}}
"""
INSTALL = "Inst sl-base (1.0 localhost [all])\nConf sl-base (1.0 localhost [all])\n"


class Node:
    """A node's dpkg answering the module's run_command; records what ran."""

    def __init__(self, packages: str, sim: str = INSTALL) -> None:
        self.packages, self.sim, self.ran = packages, sim, []

    def run_command(self, argv, **_kw):
        self.ran.append(argv)
        if argv[0] == "dpkg-query":
            return 0, self.packages, ""
        if argv[0] == "ldconfig":
            return 0, "0 libs found\n", ""
        if "-s" in argv:
            return 0, self.sim, ""
        return 0, "", ""


@pytest.fixture
def node(monkeypatch, tmp_path):
    monkeypatch.setattr(slfacts, "service_states", lambda _run: {})
    (tmp_path / "pools.yml").write_text(MODEL)

    def make(packages: str, sim: str = INSTALL) -> Node:
        fake = Node(packages, sim)
        monkeypatch.setattr(basic.AnsibleModule, "run_command", fake.run_command)
        return fake

    return make


def args(tmp_path, **extra):
    return {"pools_file": str(tmp_path / "pools.yml"), "node": "n1", **extra}


def test_check_mode_returns_the_plan_and_diff_and_changes_nothing(run_module, node, tmp_path):
    fake = node("sl-app\t1.0\tinstalled\tinstall\n")
    result = run_module(pkg_converge, args(tmp_path), check_mode=True, diff=True)
    assert result["changed"] is True and result["commands"] == []
    assert result["plan"]["install"] == {"sl-base": "1.0"} and result["plan"]["hold"] == ["sl-app"]
    assert result["diff"]["before"] == "package sl-app: 1.0\npackage sl-base: absent\n"
    assert result["diff"]["after"] == "package sl-app: 1.0 (held)\npackage sl-base: 1.0\n"
    assert not [c for c in fake.ran if "-y" in c or c[0] == "apt-mark"]


def test_apply_runs_apt_then_holds_and_a_converged_node_is_unchanged(run_module, node, tmp_path):
    fake = node("sl-app\t1.0\tinstalled\tinstall\n")
    result = run_module(pkg_converge, args(tmp_path))
    assert result["changed"] and result["commands"][-1] == "apt-mark hold sl-app"
    assert any("install sl-base=1.0" in c for c in result["commands"])
    assert fake.ran
    node("sl-app\t1.0\tinstalled\thold\nsl-base\t1.0\tinstalled\tinstall\n")
    assert run_module(pkg_converge, args(tmp_path))["changed"] is False


def test_a_refused_plan_fails_with_the_report_and_runs_nothing(run_module, node, tmp_path):
    fake = node(
        "sl-app\t1.0\tinstalled\thold\nsl-base\t2.0\tinstalled\tinstall\n",
        sim="Inst sl-base [2.0] (1.0 localhost [all])\n",
    )
    with pytest.raises(ModuleFail) as failed:
        run_module(pkg_converge, args(tmp_path))
    result = failed.value.result
    assert result["refused"] == ["would downgrade sl-base 2.0 -> 1.0"]
    assert result["msg"].startswith("SL plan refused, nothing changed: would downgrade")
    assert not [c for c in fake.ran if "-y" in c]
    forced = run_module(pkg_converge, args(tmp_path, force=True))
    assert any("--allow-downgrades" in c for c in forced["commands"])


def test_pools_disagreeing_on_a_package_are_refused_naming_both(run_module, node, tmp_path):
    (tmp_path / "pools.yml").write_text(MODEL.replace("sl-app: {hold: true}", 'sl-base: "2.0"'))
    node("sl-app\t1.0\tinstalled\tinstall\nsl-base\t1.0\tinstalled\tinstall\n")
    with pytest.raises(ModuleFail) as failed:
        run_module(pkg_converge, args(tmp_path))
    said = failed.value.result["refused"][0]
    assert "packages.sl-base.version: pools disagree" in said
    assert "pool 'api'" in said and "pool 'web'" in said
