"""baseline: the node's rules run once, with statuses a playbook can act on."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import _pools_module
from ansible_collections.takelan.multiall.plugins.modules import baseline
from module_harness import ModuleFail

OK_RULE = {"kind": "command", "command": "echo all good"}
WARN_RULE = {"kind": "command", "command": "echo getting full; exit 1"}
CRIT_RULE = {"kind": "command", "command": "echo marker present; exit 2"}

MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
pools:
  web:
    baseline:
      alive: {kind: command, command: "echo up"}
      marker: {kind: command, command: "echo marker present; exit 2"}
"""


def test_rules_from_the_model_are_run_for_the_node(run_module, tmp_path):
    path = tmp_path / "pools.yml"
    path.write_text(MODEL)
    result = run_module(
        baseline, {"pools_file": str(path), "node": "n1", "fail_on_critical": False}
    )
    assert result["changed"] is False
    assert [(r["rule"], r["status_name"]) for r in result["results"]] == [
        ("alive", "OK"),
        ("marker", "CRITICAL"),
    ]
    assert result["status"] == 2 and result["status_name"] == "CRITICAL"


def test_worst_rule_is_the_status_and_check_mode_runs_the_same(run_module):
    args = {"rules": {"a": OK_RULE, "b": WARN_RULE}}
    result = run_module(baseline, args)
    assert result["status"] == 1 and result["status_name"] == "WARNING"
    assert result["results"][1]["message"] == "getting full"
    checked = run_module(baseline, args, check_mode=True, diff=True)
    assert checked["changed"] is False and "diff" not in checked
    assert checked["status"] == result["status"]


def test_a_critical_rule_fails_the_task_and_names_it(run_module):
    with pytest.raises(ModuleFail) as failed:
        run_module(baseline, {"rules": {"a": OK_RULE, "m": CRIT_RULE}})
    result = failed.value.result
    assert result["msg"] == "CRITICAL: m: marker present"
    assert result["status"] == 2 and len(result["results"]) == 2


def test_only_limits_the_rules_and_unknown_names_are_refused(run_module):
    rules = {"a": OK_RULE, "m": CRIT_RULE}
    result = run_module(baseline, {"rules": rules, "only": ["a"]})
    assert [r["rule"] for r in result["results"]] == ["a"] and result["status"] == 0
    with pytest.raises(ModuleFail) as failed:
        run_module(baseline, {"rules": rules, "only": ["a", "nope"]})
    assert failed.value.result["msg"] == "no such rule(s): nope; rules: a, m"


def test_bad_ad_hoc_rules_are_refused_like_bad_model_rules(run_module):
    with pytest.raises(ModuleFail) as failed:
        run_module(
            baseline,
            {"rules": {"d": {"kind": "dsk"}, "e": {"kind": "disk", "warn": 95, "crit": 90}}},
        )
    msg = failed.value.result["msg"]
    assert "rules.d.kind: expected one of: command, cpu, disk" in msg
    assert "rules.e: warn (95) is above crit (90)" in msg


def test_a_rule_that_cannot_run_is_unknown_never_ok(run_module):
    result = run_module(
        baseline, {"rules": {"x": {"kind": "command", "command": ["/nonexistent/check"]}}}
    )
    assert result["status_name"] == "UNKNOWN"
    assert "command not found" in result["results"][0]["message"]


def test_without_pyyaml_ad_hoc_rules_still_run(run_module, monkeypatch):
    monkeypatch.setattr(_pools_module, "HAS_YAML", False)
    assert run_module(baseline, {"rules": {"a": OK_RULE}})["status"] == 0
    with pytest.raises(ModuleFail) as failed:
        run_module(baseline, {"node": "n1"})
    assert "(PyYAML)" in failed.value.result["msg"]
