"""The multiall-sbm Serf answer: small enough for Serf, unpacked to the local shape."""

from __future__ import annotations

import json

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._sbm_perfdata import parse_perfdata
from ansible_collections.takelan.multiall.plugins.module_utils.sbm import NAMES, Result

from connector import sbm_answer

DISK_PERF = "/=23396876288B;216442024755;243497277849;0;270552530944"
LOAD_PERF = "load1=1.810;15.000;30.000;0; load5=1.370;10.000;25.000;0; load15=0.650;5.000;20.000;0;"


def report(rules: list[tuple[str, int, str]]) -> dict:
    """What SbmScheduler.report() gives: Result.as_dict() plus the reported status."""
    items = []
    for name, status, perf in rules:
        item = Result(
            name, "command", status, f"{name} says something rather long " * 3, status
        ).as_dict()
        item["perfdata"] = parse_perfdata(perf)
        item.update(reported=status, reported_name=NAMES[status], since=1700000000.4)
        items.append(item)
    return {"status": str(max(s for _n, s, _p in rules)), "maintenance": False, "rules": items}


def test_small_report_travels_whole_with_its_perfdata():
    local = report([("disk", 0, DISK_PERF), ("load", 1, LOAD_PERF)])
    data = sbm_answer.pack("n5", local)
    assert len(data) <= sbm_answer.LIMIT
    remote = sbm_answer.unpack("n5", data)
    assert remote["node"] == "n5" and remote["status"] == "1" and "truncated" not in remote
    by_name = {r["rule"]: r for r in remote["rules"]}
    assert by_name["disk"]["perfdata"] == local["rules"][0]["perfdata"]
    assert by_name["load"]["perfdata"]["load5"]["crit"] == 25.0
    assert by_name["load"]["reported_name"] == "WARNING" and by_name["disk"]["since"] == 1700000000


def test_big_report_shrinks_to_fit_and_keeps_the_rules_that_are_not_ok():
    rules = [(f"rule{i:02}", 0, DISK_PERF) for i in range(30)] + [("broken", 2, DISK_PERF)]
    data = sbm_answer.pack("n5", report(rules))
    assert len(data) <= sbm_answer.LIMIT
    remote = sbm_answer.unpack("n5", data)
    assert remote["truncated"] is True
    assert [r["rule"] for r in remote["rules"]] == ["broken"]


def test_many_failing_rules_are_halved_until_they_fit():
    rules = [(f"rule{i:02}", 2, LOAD_PERF) for i in range(40)]
    data = sbm_answer.pack("n5", report(rules))
    remote = sbm_answer.unpack("n5", data)
    assert len(data) <= sbm_answer.LIMIT and remote["truncated"] and remote["rules"]


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", json.dumps({"node": "x"}).encode()])
def test_malformed_answer_is_a_clear_error(payload):
    with pytest.raises(ValueError, match="n5"):
        sbm_answer.unpack("n5", payload)
